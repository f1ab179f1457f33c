"""A body track as an OBJ sequence: one mesh per frame in camera space, as ``meshcli body --save-mesh`` writes.

Vertices come from the NPZ when it holds them (``vertices`` + ``cam_t``, or I2L-MeshNet's
``mesh_cam_param``), else from each row's own SMPL parameters and ``cam_t``.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .body_model import BodyModel, pose_rotations
from .results import Results, Track

STORED_MESHES = ("vertices", "mesh_cam_param")  # the NPZ keys of meshes, in preference order


def meshes(results: Results, track: Track, model: BodyModel) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, camera-space vertices (V, 3)) per row of the track."""
    translation = results["cam_t"] if "cam_t" in results else np.zeros((len(results["frame_index"]), 3))
    stored = next((k for k in STORED_MESHES if k in results), None)
    for row, frame in zip(track.rows, track.frames):
        if stored == "vertices":
            vertices = results["vertices"][row] + translation[row]
        elif stored is not None:  # already in camera space
            vertices = results[stored][row]
        else:
            rest = model.rest(results["betas"][row])
            rotations = pose_rotations(results["global_orient"][row:row + 1], results["body_pose"][row:row + 1])
            vertices = model.pose(rest, rotations).vertices[0] + translation[row]
        yield int(frame), vertices
