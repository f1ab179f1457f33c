"""A body track as motion: the SMPL file it was made with, one shape, per-frame rotations and translation.

Coordinates: the body NPZ's vertices and joints are SMPL model space placed in the
camera by ``cam_t`` (OpenCV camera: x right, y down, z forward, metres). Exports use
y-up: the camera space turned half a turn about x (x right, y up, z towards the viewer),
the frame glTF, BVH tools and Blender's importers expect.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MeshcliError
from ..types import file_sha256
from ..methods.body import resolve_smpl
from ..io.smplfile import load_smpl
from .body_model import BodyModel, RestBody, joint_offsets, pose_rotations
from .results import Results, Track

PARAMETERS = ("global_orient", "body_pose", "betas")
CAMERA_TO_Y_UP = np.diag([1.0, -1.0, -1.0])  # a half turn about x: a proper rotation


@dataclass
class BodyMotion:
    """One track's body: shaped once (the mean of its rows' betas), posed per frame."""

    track: Track
    betas: np.ndarray  # (K,)
    rest: RestBody
    parents: np.ndarray  # (24,) parent of each joint, -1 for the root
    rotations: np.ndarray  # (F, 24, 3, 3) local joint rotations; joint 0 already in y-up
    root_position: np.ndarray  # (F, 3) the pelvis in y-up space

    @property
    def offsets(self) -> np.ndarray:
        """(24, 3) each joint's rest position relative to its parent's."""
        return joint_offsets(self.rest.joints, self.parents)


def load_body_model(results: Results, smpl: Path | None) -> BodyModel:
    """The SMPL model the NPZ was made with: ``--smpl`` or the store's, checked against the NPZ's record."""
    path = resolve_smpl(smpl)
    recorded, recorded_sha = results.text("smpl", "(unknown)"), results.text("smpl_sha256")
    if not recorded_sha:
        results.notes.append(f"the NPZ does not record its SMPL file's sha256: {path.name} is used unchecked")
    elif file_sha256(path) != recorded_sha:
        if smpl is None:
            raise MeshcliError(path, f"not the SMPL file {results.path.name} was made with ({recorded}, sha256 "
                                     f"{recorded_sha[:16]}...)",
                               "pass that file with --smpl; to pose with another SMPL file on purpose, pass it "
                               "with --smpl")
        results.notes.append(f"{path.name} is not the SMPL file the NPZ was made with ({recorded}); "
                             "used because --smpl names it")
    model = BodyModel(load_smpl(path))
    if "betas" in results and results["betas"].shape[1] > model.num_betas:
        raise MeshcliError(path, f"has {model.num_betas} shape components, the NPZ's betas have "
                                 f"{results['betas'].shape[1]}", "pass the SMPL file the NPZ was made with (--smpl)")
    return model


def require_parameters(results: Results) -> None:
    results.require(PARAMETERS, "exporting a body needs SMPL parameters",
                    "give a `meshcli body` NPZ (for I2L-MeshNet, one with its parameter stage)")


def body_motion(results: Results, model: BodyModel, track: Track) -> BodyMotion:
    rows = track.rows
    betas = np.asarray(results["betas"][rows], np.float64).mean(0)
    rest = model.rest(betas)
    rotations = pose_rotations(results["global_orient"][rows], results["body_pose"][rows])
    rotations[:, 0] = CAMERA_TO_Y_UP @ rotations[:, 0]
    # the pelvis does not move when the body turns about it: it sits at its rest place + cam_t
    if "cam_t" in results:
        translation = np.asarray(results["cam_t"][rows], np.float64)
    else:
        translation = np.zeros((len(rows), 3))
        results.notes.append("the NPZ has no 'cam_t' (an I2L-MeshNet NPZ of meshcli before it stored one): the "
                             "body stays at the origin")
    root = (rest.joints[0] + translation) @ CAMERA_TO_Y_UP.T
    return BodyMotion(track, betas, rest, model.parents, rotations, root)
