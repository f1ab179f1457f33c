"""A results NPZ read for export: its rows, the frames' times, and the people split into tracks."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MeshcliError
from ..results import load_arrays

STILL_IMAGE_FPS = 30.0  # keyframe spacing for image sets, which have no time of their own


@dataclass
class Track:
    """One person: the NPZ rows that are theirs, one per frame, frames in order."""

    id: int
    rows: np.ndarray  # row indices into the NPZ
    frames: np.ndarray  # (F,) frame_index of each row
    times: np.ndarray  # (F,) seconds from the input's first frame


@dataclass
class Results:
    path: Path
    data: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)  # what the export had to assume, said to the user

    @classmethod
    def load(cls, path: str | Path) -> "Results":
        path = Path(path)
        data = load_arrays(path)
        if "frame_index" not in data:
            raise MeshcliError(path, "not a meshcli results NPZ: it has no 'frame_index'",
                               "give the .npz a meshcli pose, body or hand command wrote")
        return cls(path, data)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def __getitem__(self, key: str) -> np.ndarray:
        return self.data[key]

    def text(self, key: str, default: str = "") -> str:
        return str(self.data[key]) if key in self.data else default

    @property
    def joint_names(self) -> list[str]:
        return [str(n) for n in self.data.get("joint_names", ())]

    def require(self, keys: tuple[str, ...], why: str, fix: str) -> None:
        missing = [k for k in keys if k not in self.data]
        if missing:
            raise MeshcliError(self.path, f"{why}: the NPZ has no {', '.join(repr(k) for k in missing)}", fix)

    def frame_times(self) -> np.ndarray:
        """Seconds of each frame from the input's first: the video's timestamps when recorded, else from fps."""
        if "frame_time" in self.data:
            return np.asarray(self.data["frame_time"], np.float64)
        frames = int(self.data.get("num_frames", self.data["frame_index"].max(initial=-1) + 1))
        fps = float(self.data.get("fps", 0.0))
        if fps > 0:
            self.notes.append(f"the NPZ has no per-frame 'frame_time': times are frame index / {fps:g} fps")
        else:
            fps = STILL_IMAGE_FPS
            self.notes.append(f"still images have no time: keyframes are 1/{fps:g} s apart")
        return np.arange(frames) / fps

    def tracks(self, which: str) -> list[Track]:
        """The people to export: ``which`` is a track id or ``all``.

        Rows carry ``track_id`` when the command tracked people; without it, rows are
        one person only when no frame holds more than one row.
        """
        frame_index = np.asarray(self.data["frame_index"], np.int64)
        if which != "all" and not which.lstrip("-").isdigit():
            raise MeshcliError(None, f"--track {which} is neither a track id nor 'all'",
                               "e.g. --track 0 or --track all")
        if "track_id" in self.data:
            ids = np.asarray(self.data["track_id"], np.int64)
        else:
            if len(frame_index) and np.bincount(frame_index).max() > 1:
                raise MeshcliError(self.path, "frames hold several people and the NPZ has no 'track_id' to tell "
                                              "who is who across frames",
                                   "re-run the command with tracking on (it writes 'track_id'), or give it one "
                                   "person per frame")
            ids = np.zeros(len(frame_index), np.int64)
        available = np.unique(ids)
        if which == "all":
            chosen = available
        elif int(which) in available:
            chosen = np.array([int(which)])
        else:
            raise MeshcliError(self.path, f"no track {which} (tracks: {', '.join(map(str, available)) or 'none'})",
                               "give one of them to --track, or --track all")
        if not len(chosen):
            raise MeshcliError(self.path, "the NPZ holds nobody (no rows)", "export results in which people were found")
        times = self.frame_times()
        tracks = []
        for track_id in chosen:
            rows = np.flatnonzero(ids == track_id)
            rows = rows[np.argsort(frame_index[rows], kind="stable")]
            frames = frame_index[rows]
            if np.any(np.diff(frames) == 0):
                twice = frames[1:][np.diff(frames) == 0][0]
                raise MeshcliError(self.path, f"track {track_id} has two rows in frame {twice}",
                                   "a track holds one person: re-run tracking")
            if frames.max() >= len(times):
                raise MeshcliError(self.path, f"row frame_index {frames.max()} is past the input's {len(times)} frames",
                                   "the NPZ is inconsistent; re-run the command")
            tracks.append(Track(int(track_id), rows, frames, times[frames]))
        return tracks
