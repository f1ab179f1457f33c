"""Reading back what meshcli wrote: ``meshcli.read("out/clip.npz")``.

``Results`` gives the per-input facts (``meta``), every row array (``rows``),
each frame's result as the predictor returned it (``results[i]``, iteration,
typed per task: ``PoseResult``, ``BodyResult`` or ``HandResult``), and, when the
NPZ has a ``track_id`` row (people tracked across frames), each track's rows
(``results.track(k)``).
"""
from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MeshcliError, first_line
from .methods import METHODS
from .schema import SCHEMA_VERSION, group_of, keys_for
from .types import BodyResult, FrameResult, HandResult, PoseResult

RESULT_TYPES: dict[str, type[FrameResult]] = {"pose": PoseResult, "body": BodyResult, "hand": HandResult}


class Results:
    """The contents of one meshcli NPZ; see the module docstring."""

    def __init__(self, path: Path, arrays: dict[str, np.ndarray]):
        self.path = path
        spec = METHODS[str(arrays["method"])]
        self.task = spec.task
        known = keys_for(group_of(spec.name, spec.task))
        row_keys = [k for k in arrays if k == "track_id" or (k in known and known[k].kind == "row")]
        self.rows: dict[str, np.ndarray] = {k: arrays[k] for k in row_keys}
        self.frame_info: dict[str, np.ndarray] = {k[len("frame_"):]: v for k, v in arrays.items()
                                                  if k.startswith("frame_") and k != "frame_index"}
        self.meta: dict[str, Any] = {k: (v.item() if v.ndim == 0 else v) for k, v in arrays.items()
                                     if k not in self.rows and not k.startswith("frame_")}
        self.num_frames = int(arrays["num_frames"])

    @property
    def method(self) -> str:
        return str(self.meta["method"])

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, index: int) -> FrameResult:
        """Frame ``index``'s result (its rows; no image, so ``plot()`` is not available)."""
        if not -self.num_frames <= index < self.num_frames:
            raise IndexError(f"frame {index} of {self.num_frames}")
        index %= self.num_frames
        mine = self.rows["frame_index"] == index
        rows = {k: v[mine] for k, v in self.rows.items() if k != "frame_index"}
        info = {k: v[index].item() for k, v in self.frame_info.items()}
        result_type = RESULT_TYPES[self.task]
        if result_type is BodyResult:
            shown = rows.get("vertices", rows.get("mesh_cam"))
            return BodyResult(index, rows, info, vertices=shown if shown is not None else
                              np.zeros((int(mine.sum()), 0, 3), np.float32))
        return result_type(index, rows, info)

    def __iter__(self) -> Iterator[FrameResult]:
        return (self[i] for i in range(self.num_frames))

    @property
    def track_ids(self) -> np.ndarray:
        if "track_id" not in self.rows:
            raise MeshcliError(self.path, "has no track_id rows (people were not tracked)",
                               "run the command with tracking on")
        return np.unique(self.rows["track_id"])

    def track(self, track_id: int) -> dict[str, np.ndarray]:
        """One tracked person's rows, in frame order (``frame_index`` says which frames)."""
        mine = self.rows["track_id"] == track_id if track_id in self.track_ids else None
        if mine is None:
            raise MeshcliError(self.path, f"has no track {track_id}", f"tracks: {self.track_ids.tolist()}")
        return {k: v[mine] for k, v in self.rows.items()}


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an NPZ file (no pickles); a missing or unreadable file is a one-line MeshcliError."""
    if not path.is_file():
        raise MeshcliError(path, "no such file", "give an NPZ that meshcli wrote")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise MeshcliError(path, f"is not a readable NPZ ({first_line(err)})",
                           "give an NPZ that meshcli wrote") from None


def read(path: str | Path) -> Results:
    """Load an NPZ that meshcli wrote; anything else is a one-line MeshcliError."""
    path = Path(path)
    arrays = load_arrays(path)
    if "schema_version" not in arrays or "method" not in arrays or str(arrays["method"]) not in METHODS:
        raise MeshcliError(path, "is not a meshcli NPZ (no schema_version or known method)",
                           "give an NPZ written by meshcli pose, body or hand")
    version = int(arrays["schema_version"])
    if version > SCHEMA_VERSION:
        raise MeshcliError(path, f"has NPZ schema version {version}; this meshcli reads up to {SCHEMA_VERSION}",
                           "upgrade meshcli")
    return Results(path, arrays)
