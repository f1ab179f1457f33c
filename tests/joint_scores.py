"""DEKR joint scores compared the way the fixtures' case.json says is honest about ``floor()`` sampling.

A joint score is the person's centre score times the scale-averaged heatmap read at floor(x), floor(y) in
input pixels. Where the official joint lies within ``BOUNDARY_PX`` of a pixel boundary, an implementation that
is within the coordinate tolerance (another CPU's float rounding) may read the neighbouring pixel. For those
joints only, the official score and ours must each be the person's centre score times the heat of one of the
pixels such a coordinate can fall in; every other joint is compared directly, with the same limit.
"""
from __future__ import annotations

import numpy as np

from meshcli.methods import dekr

BOUNDARY_PX = 0.05
LIMIT = 0.002  # of the image's largest official joint score


def record_heatmaps(monkeypatch) -> list[np.ndarray]:
    """Keep every heatmap DEKR samples joint scores from: one (J+1, H, W) array per frame, in frame order."""
    seen: list[np.ndarray] = []
    sample = dekr.heat_values

    def recording(coords, heatmap):
        seen.append(heatmap.detach().cpu().numpy().copy())
        return sample(coords, heatmap)

    monkeypatch.setattr(dekr, "heat_values", recording)
    return seen


def _cells(v: np.ndarray, size: int) -> np.ndarray:
    """Pixel indices a coordinate within BOUNDARY_PX of ``v`` can floor to: (..., 2), equal where no boundary is near."""
    return np.clip(np.floor(np.stack([v - BOUNDARY_PX, v + BOUNDARY_PX], -1)), 0, size - 1).astype(int)


def joint_score_error(got: np.ndarray, want: np.ndarray, want_inputres: np.ndarray, heatmap: np.ndarray) -> tuple[float, int]:
    """(largest joint-score error relative to the largest official score, number of boundary joints)."""
    people, joints = want.shape[:2]
    h, w = heatmap.shape[1:]
    xs, ys = _cells(want_inputres[..., 0], w), _cells(want_inputres[..., 1], h)  # (P, J, 2)
    j = np.broadcast_to(np.arange(joints)[None, :, None, None], (people, joints, 2, 2))
    samples = heatmap[j, ys[..., :, None], xs[..., None, :]].reshape(people, joints, 4)  # (P, J, 4)
    boundary = (xs[..., 0] != xs[..., 1]) | (ys[..., 0] != ys[..., 1])

    err = np.abs(got[..., 2] - want[..., 2])
    for p in np.nonzero(boundary.any(1))[0]:
        clear = np.nonzero(~boundary[p])[0]
        anchor = clear[np.argmax(samples[p, clear, 0])]  # the clearest joint fixes the person's centre score
        centre = got[p, anchor, 2] / samples[p, anchor, 0]
        for k in np.nonzero(boundary[p])[0]:
            candidates = centre * samples[p, k]
            err[p, k] = min(err[p, k], max(np.abs(candidates - want[p, k, 2]).min(),
                                           np.abs(candidates - got[p, k, 2]).min()))
    return float(err.max() / np.abs(want[..., 2]).max()), int(boundary.sum())
