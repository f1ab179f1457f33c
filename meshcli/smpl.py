"""The SMPL body model posed with smplx, and the rotation conversions the body methods share.

The model is built from arrays that ``meshcli.io.smplfile`` read and checked.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import smplx
import torch
from torch.nn import functional as F
from smplx.utils import Struct

from .io.smplfile import LAYOUT, NUM_JOINTS, NUM_VERTS, load_smpl

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)


# --------------------------------------------------------------------------
# The forward


@dataclass
class SMPLOutput:
    vertices: torch.Tensor  # (B, 6890, 3)
    joints: torch.Tensor  # (B, 24, 3): SMPL's skeleton joints (the posed kinematic chain)


class SMPLModel(torch.nn.Module):
    """smplx's SMPL built from checked arrays, returning vertices and 24 joints.

    ``cocoplus_regressor`` (19, 6890) is HMR's joint regressor when the file has it (None otherwise).

    Batched and device-aware (``.to(device)``); no translation is applied.
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], num_betas: int = 10, dtype: torch.dtype = torch.float32):
        super().__init__()
        struct = Struct(**{k: arrays[k] for k in LAYOUT})
        # smplx prints a notice for models with fewer than 300 shape components; keep stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            self.layer = smplx.SMPL("", data_struct=struct, num_betas=num_betas, dtype=dtype,
                                    create_betas=False, create_global_orient=False,
                                    create_body_pose=False, create_transl=False)
        self.faces = np.asarray(arrays["f"], dtype=np.int64)
        coco = arrays.get("cocoplus_regressor")
        self.register_buffer("cocoplus_regressor",
                             None if coco is None else torch.as_tensor(np.asarray(coco), dtype=dtype))

    @classmethod
    def from_file(cls, path: str | Path, *, num_betas: int = 10,
                  dtype: torch.dtype = torch.float32) -> "SMPLModel":
        """Load any accepted SMPL file (imported .npz, official or HMR .pkl) and build the model."""
        return cls(load_smpl(path), num_betas=num_betas, dtype=dtype)

    @property
    def has_cocoplus(self) -> bool:
        return self.cocoplus_regressor is not None

    @property
    def j_regressor(self) -> torch.Tensor:
        """(24, 6890) SMPL joint regressor, dense."""
        return self.layer.J_regressor

    def forward(self, betas: torch.Tensor, pose: torch.Tensor) -> SMPLOutput:
        """Pose the body.

        ``betas`` (B, K<=num_betas) or (1, K) shared; ``pose`` is axis-angle
        (B, 72) or (B, 24, 3), or rotation matrices (B, 24, 3, 3); joint 0 is
        the global orientation.
        """
        as_matrices = pose.dim() == 4
        b = pose.shape[0]
        pose = pose.reshape(b, NUM_JOINTS, 3, 3) if as_matrices else pose.reshape(b, NUM_JOINTS, 3)
        p = self.layer.shapedirs.dtype
        if b == 0:  # no people in the frame(s): smplx cannot view an empty batch
            verts = pose.new_zeros((0, NUM_VERTS, 3), dtype=p)
            joints = pose.new_zeros((0, NUM_JOINTS, 3), dtype=p)
            return SMPLOutput(verts, joints)
        betas = betas.to(p).expand(b, -1) if betas.shape[0] == 1 else betas.to(p)
        if betas.shape[1] < self.layer.num_betas:  # fewer components given: the rest are zero
            betas = torch.nn.functional.pad(betas, (0, self.layer.num_betas - betas.shape[1]))
        pose = pose.to(p)
        if as_matrices:
            orient, body = pose[:, :1], pose[:, 1:]
        else:
            orient, body = pose[:, 0], pose[:, 1:].reshape(b, -1)
        out = self.layer(betas=betas, global_orient=orient, body_pose=body, pose2rot=not as_matrices)
        return SMPLOutput(out.vertices, out.joints[:, :NUM_JOINTS])


# -- SMPL parameter conversions shared by the body methods --------------------------------------

def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """(..., 6k) -> (..., k, 3, 3) by Gram-Schmidt.

    The six numbers of a rotation are a 3x2 matrix stored row by row, so its two
    columns interleave: (n0, n2, n4) and (n1, n3, n5).
    """
    m = x.reshape(-1, 3, 2)
    b1 = F.normalize(m[:, :, 0], dim=1)
    a2 = m[:, :, 1]
    b2 = F.normalize(a2 - (b1 * a2).sum(1, keepdim=True) * b1, dim=1)
    b3 = torch.linalg.cross(b1, b2, dim=1)
    return torch.stack((b1, b2, b3), -1).reshape(*x.shape[:-1], -1, 3, 3)


def rotmat_to_axis_angle(r: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle, the way I2L's torchgeometry 0.1.2 does it.

    The quaternion comes from whichever of the four classic formulas the diagonal
    selects (torchgeometry's case rule, not the numerically best one, so that the
    results match to float rounding); the angle is 2 atan2(|xyz|, w) with both signs
    flipped when w < 0.
    """
    shape = r.shape[:-2]
    r = r.reshape(-1, 3, 3)
    r00, r01, r02 = r[:, 0, 0], r[:, 0, 1], r[:, 0, 2]
    r10, r11, r12 = r[:, 1, 0], r[:, 1, 1], r[:, 1, 2]
    r20, r21, r22 = r[:, 2, 0], r[:, 2, 1], r[:, 2, 2]
    t = torch.stack((1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22, 1 + r00 + r11 + r22), 1)
    candidates = torch.stack((
        torch.stack((r21 - r12, t[:, 0], r10 + r01, r02 + r20), 1),
        torch.stack((r02 - r20, r10 + r01, t[:, 1], r21 + r12), 1),
        torch.stack((r10 - r01, r02 + r20, r21 + r12, t[:, 2]), 1),
        torch.stack((t[:, 3], r21 - r12, r02 - r20, r10 - r01), 1),
    ), 1)  # (N, 4 cases, 4 = w x y z)
    low_z = r22 < eps
    case = torch.where(low_z, torch.where(r00 > r11, 0, 1), torch.where(r00 < -r11, 2, 3))
    idx = torch.arange(len(r), device=r.device)
    q = candidates[idx, case] * 0.5 / torch.sqrt(t[idx, case])[:, None]
    w, xyz = q[:, 0], q[:, 1:]
    sin_half = xyz.norm(dim=1)
    angle = 2 * torch.where(w < 0, torch.atan2(-sin_half, -w), torch.atan2(sin_half, w))
    k = torch.where(sin_half > 0, angle / sin_half, torch.full_like(angle, 2.0))
    return (xyz * k[:, None]).reshape(*shape, 3)
