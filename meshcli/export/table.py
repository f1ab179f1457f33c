"""Joints as CSV: one row per person per frame, columns named after the NPZ's ``joint_names``.

Columns: ``frame``, ``time`` (s), ``track_id`` (empty when the NPZ has none), ``score``
(empty for hands), then each joint's components for every joint array the NPZ holds,
``<joint>_<component>``: pose ``keypoints`` x, y, score (pixels); body ``joints3d``
x, y, z (metres, model space) and ``joints2d`` u, v (pixels); I2L-MeshNet ``joints_img``
u, v, depth; hand ``joints_xyz`` x, y, z (camera mm) and ``joints_uvd`` u, v, d.
"""
from __future__ import annotations

import csv
import io

import numpy as np

from ..errors import MeshcliError
from .results import Results

COMPONENTS = {
    "keypoints": ("x", "y", "score"),
    "joints3d": ("x", "y", "z"),
    "joints2d": ("u", "v"),
    "joints_img": ("u", "v", "depth"),
    "joints_xyz": ("x", "y", "z"),
    "joints_uvd": ("u", "v", "d"),
}


def encode(results: Results, rows: np.ndarray) -> bytes:
    """The CSV of NPZ rows ``rows`` (indices, in the order to write)."""
    names = results.joint_names
    keys = [k for k in COMPONENTS if k in results]
    if not keys:
        raise MeshcliError(results.path, f"no joints to write: the NPZ has none of {', '.join(COMPONENTS)}",
                           "give a pose, body or hand NPZ")
    for key in keys:
        if results[key].shape[1:] != (len(names), len(COMPONENTS[key])):
            raise MeshcliError(results.path, f"'{key}' has shape {results[key].shape[1:]} but 'joint_names' "
                                             f"names {len(names)} joints",
                               "the NPZ is inconsistent; re-run the command")
    header = ["frame", "time", "track_id", "score"]
    header += [f"{name}_{c}" for key in keys for name in names for c in COMPONENTS[key]]
    frames = np.asarray(results["frame_index"])[rows]
    times = results.frame_times()[frames]
    track = (np.asarray(results["track_id"])[rows].astype(str) if "track_id" in results
             else np.full(len(rows), "", object))
    score_key = next((k for k in ("scores", "score") if k in results), None)
    scores = (np.char.mod("%.6g", np.asarray(results[score_key], np.float64)[rows]) if score_key
              else np.full(len(rows), "", object))
    values = np.concatenate([np.asarray(results[k], np.float64)[rows].reshape(len(rows), -1) for k in keys], 1)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    for i in range(len(rows)):
        writer.writerow([frames[i], f"{times[i]:.6f}", track[i], scores[i], *(f"{v:.7g}" for v in values[i])])
    return text.getvalue().encode()
