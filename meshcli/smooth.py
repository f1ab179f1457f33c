"""Smoothing one person's values over time: causal One-Euro and zero-phase offline.

Values are arrays of any shape, one per frame of a track, with the frame's time
in seconds (so variable frame rates and frames where the person was not seen
are handled by the actual time steps).

``OneEuro``  the One-Euro filter (Casiez et al., CHI 2012): a first-order
             low-pass whose cutoff rises with the value's speed, so slow motion
             is smoothed hard and fast motion follows with little lag.
``offline_weights``  a local quadratic least-squares fit over the samples
             within a half-window on both sides of a frame (Savitzky-Golay's
             filter, extended to uneven times, gaps and the ends of a track):
             symmetric, hence no lag, and exact for constant acceleration.

Rotations are never smoothed as axis-angle components (they wrap at pi):
they are smoothed as rotation matrices and projected back onto the nearest
rotation (``nearest_rotation``).
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

OFFLINE_HALF_WINDOW_S = 0.2  # seconds each side: removes per-frame jitter, follows a 2 Hz limb swing
OFFLINE_DEGREE = 2


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3k) axis-angle -> (..., k, 3, 3)."""
    a = np.asarray(axis_angle, np.float64)
    return Rotation.from_rotvec(a.reshape(-1, 3)).as_matrix().reshape(*a.shape[:-1], -1, 3, 3)


def nearest_rotation(m: np.ndarray) -> np.ndarray:
    """The rotation closest (Frobenius) to each 3x3 matrix (..., 3, 3): U diag(1, 1, det) V^T of its SVD."""
    u, _, vt = np.linalg.svd(m)
    flip = np.ones(np.shape(m)[:-1])
    flip[..., -1] = np.where(np.linalg.det(u @ vt) < 0, -1.0, 1.0)  # a reflection is not a rotation
    return (u * flip[..., None, :]) @ vt


def matrix_to_axis_angle(m: np.ndarray) -> np.ndarray:
    """(..., k, 3, 3) (projected onto rotations first) -> (..., 3k) axis-angle."""
    r = nearest_rotation(np.asarray(m, np.float64))
    return Rotation.from_matrix(r.reshape(-1, 3, 3)).as_rotvec().reshape(*r.shape[:-3], -1)


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    """Smoothing factor of a first-order low-pass with ``cutoff`` Hz over a step of ``dt`` seconds."""
    return 1.0 / (1.0 + 1.0 / (2 * np.pi * cutoff * dt))


class OneEuro:
    """One-Euro filter of one track's values (any shape), fed in time order.

    ``min_cutoff`` (Hz) sets the smoothing at rest, ``beta`` how fast the cutoff
    rises with speed; speeds are divided by ``scale`` (e.g. the person's size in
    pixels) so one ``beta`` fits values of any unit.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.time: float | None = None
        self.value: np.ndarray | None = None
        self.speed: np.ndarray | None = None

    def __call__(self, time: float, value: np.ndarray, scale: float = 1.0) -> np.ndarray:
        value = np.asarray(value, np.float64)
        if self.time is None:
            self.time, self.value, self.speed = time, value, np.zeros_like(value)
            return value
        dt = max(time - self.time, 1e-6)
        speed = _alpha(self.d_cutoff, dt) * (value - self.value) / dt + (1 - _alpha(self.d_cutoff, dt)) * self.speed
        cutoff = self.min_cutoff + self.beta * np.abs(speed) / scale
        a = _alpha(cutoff, dt)
        self.time, self.value, self.speed = time, a * value + (1 - a) * self.value, speed
        return self.value


def offline_weights(times: np.ndarray, at: float, half_window: float, degree: int = OFFLINE_DEGREE) -> np.ndarray:
    """Weights (n,) that give the local polynomial fit at time ``at`` from samples at ``times`` (n,).

    Samples farther than ``half_window`` get weight 0. The degree drops to what
    the samples present can fit (one sample: itself).
    """
    offsets = (np.asarray(times, np.float64) - at) / half_window
    inside = np.abs(offsets) <= 1 + 1e-9
    weights = np.zeros(len(offsets))
    x = offsets[inside]
    degree = min(degree, len(x) - 1)
    vander = x[:, None] ** np.arange(degree + 1)
    weights[inside] = np.linalg.pinv(vander)[0]  # the fitted polynomial's value at offset 0
    return weights


def offline_smooth(times: np.ndarray, values: np.ndarray, half_window: float,
                   degree: int = OFFLINE_DEGREE) -> np.ndarray:
    """Zero-phase smoothing of a whole sequence (n, ...) at each of its own times (reference, benchmarks)."""
    values = np.asarray(values, np.float64)
    flat = values.reshape(len(values), -1)
    out = np.stack([offline_weights(times, t, half_window, degree) @ flat for t in times])
    return out.reshape(values.shape)
