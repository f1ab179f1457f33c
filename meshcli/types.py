"""The values every layer passes around: frames, people, results, weights facts.

This module sits below everything else in meshcli (it imports only numpy and
the error type), so sources, person sources, methods, the pipeline and sinks
can all share these types without importing each other.
"""
from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MeshcliError


@dataclass
class Frame:
    """One image of an input, as decoded.

    ``image`` is HxWx3 uint8 RGB for colour inputs, or HxW float32 depth in
    millimetres for depth inputs. ``index`` counts the frames delivered for the input
    (the NPZ's ``frame_index``); a bad file in a folder is skipped and not counted.
    """

    image: np.ndarray
    index: int
    name: str  # file name of this frame (images) or "<video>#<index>"
    time: float | None = None  # seconds from the start, videos only
    position: int | None = None  # place in the input's own list of files; differs from index after a bad file

    @property
    def source_position(self) -> int:
        """Where per-frame side inputs (centres files, boxes by index) look this frame up."""
        return self.index if self.position is None else self.position


@dataclass
class Person:
    """One person to reconstruct, in original-image pixels."""

    box: np.ndarray  # (4,) x0, y0, x1, y1
    kind: str  # "frame" (the whole frame), "keypoints" (box of the keypoints) or "box"
    keypoints: np.ndarray | None = None  # (K, 3) x, y, confidence, when the source has keypoints
    score: float = 1.0  # mean confidence of the counted keypoints, or the box score


@dataclass
class FrameResult:
    """What a method found in one frame.

    ``rows`` holds per-person arrays with a common leading dimension P (P may
    be 0). Sinks stack rows of all frames of an input into the NPZ and add a
    ``frame_index`` column. ``info`` holds frame-level values that are not
    per person (e.g. a status string).
    """

    frame_index: int
    rows: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)
    # Set by ``Predictor.predict``: the frame's image and the method's drawing, for ``plot()``.
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    annotator: Callable[[np.ndarray, "FrameResult"], np.ndarray] | None = field(default=None, repr=False,
                                                                                 compare=False)

    @property
    def num_people(self) -> int:
        return len(next(iter(self.rows.values()))) if self.rows else 0

    def to_rows(self) -> dict[str, np.ndarray]:
        """This frame's NPZ rows: every row key plus the ``frame_index`` column."""
        return {"frame_index": np.full(self.num_people, self.frame_index, np.int64), **self.rows}

    def plot(self) -> np.ndarray:
        """The frame with the result drawn on it (HxWx3 uint8 RGB), as the CLI's annotated output."""
        if self.image is None or self.annotator is None:
            raise MeshcliError(None, "this result is not tied to its image",
                               "plot results returned by predictor.predict(...)")
        return self.annotator(self.image, self)


@dataclass
class PoseResult(FrameResult):
    """2D keypoints of every person in a frame (``meshcli pose``)."""

    @property
    def keypoints(self) -> np.ndarray:
        """(P, J, 3): x, y in original-image pixels and the joint's score."""
        return self.rows["keypoints"]

    @property
    def scores(self) -> np.ndarray:
        return self.rows["scores"]

    @property
    def boxes(self) -> np.ndarray:
        """(P, 4) x0, y0, x1, y1."""
        return self.rows["bbox"]


@dataclass
class BodyResult(FrameResult):
    """SMPL bodies of every person in a frame (``meshcli body``); ``vertices`` feed the overlay."""

    vertices: np.ndarray = field(default_factory=lambda: np.zeros((0, 6890, 3), np.float32))

    @property
    def boxes(self) -> np.ndarray:
        """(P, 4) x0, y0, x1, y1: the person boxes the crops came from."""
        return self.rows["bbox"]

    @property
    def global_orient(self) -> np.ndarray:
        return self.rows["global_orient"]

    @property
    def body_pose(self) -> np.ndarray:
        return self.rows["body_pose"]

    @property
    def betas(self) -> np.ndarray:
        return self.rows["betas"]

    @property
    def joints2d(self) -> np.ndarray | None:
        """(P, J, 2) original-image pixels (HMR, SPIN); I2L's are ``rows["joints_img"]``."""
        return self.rows.get("joints2d")


@dataclass
class HandResult(FrameResult):
    """3D hand joints in one depth frame (``meshcli hand``); NaN when no hand was found."""

    @property
    def joints_xyz(self) -> np.ndarray:
        """(1, J, 3) camera space, mm (x right, y down, z forward)."""
        return self.rows["joints_xyz"]

    @property
    def joints_uvd(self) -> np.ndarray:
        """(1, J, 3) column, row, depth (mm) in the input image."""
        return self.rows["joints_uvd"]

    @property
    def status(self) -> str:
        return str(self.info.get("status", ""))


@dataclass(frozen=True)
class WeightsInfo:
    """Where a predictor's weights came from: stamped into every output."""

    path: str | None  # None for --random-weights
    sha256: str | None

    @property
    def untrained(self) -> bool:
        return self.path is None

    @classmethod
    def of(cls, path: str | Path | None) -> "WeightsInfo":
        if path is None:
            return cls(None, None)
        return cls(str(path), file_sha256(path))

    def npz_fields(self, prefix: str = "weights") -> dict[str, Any]:
        return {
            prefix: "untrained (random weights)" if self.untrained else Path(self.path).name,
            f"{prefix}_sha256": self.sha256 or "",
        }


def file_sha256(path: str | Path) -> str:
    """The file's sha256, computed once per version of the file (checking the store and stamping the
    outputs both ask for it)."""
    info = Path(path).stat()
    return _sha256_of(str(Path(path).resolve()), info.st_size, info.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
