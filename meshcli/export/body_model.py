"""SMPL posed in numpy: what the exporters need, without torch.

``rest`` shapes the template by a person's ``betas`` and regresses the 24 rest
joints; ``pose`` applies per-frame joint rotations to that rest body: pose
corrective offsets, the kinematic chain, then linear blend skinning. Both are
vectorised over frames; the chain is walked once per joint (parents first).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

NUM_JOINTS = 24


@dataclass
class RestBody:
    """One person's shaped body in SMPL's rest pose (the T-pose), model space, metres."""

    vertices: np.ndarray  # (V, 3)
    joints: np.ndarray  # (24, 3)


@dataclass
class PosedBody:
    vertices: np.ndarray  # (F, V, 3)
    joints: np.ndarray  # (F, 24, 3): the posed kinematic chain
    transforms: np.ndarray  # (F, 24, 4, 4): each joint's world transform


class BodyModel:
    """The arrays of a checked SMPL file (``meshcli.smpl.load_smpl``) and the forward over them."""

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        self.template = np.asarray(arrays["v_template"], np.float64)
        self.shape_dirs = np.asarray(arrays["shapedirs"], np.float64)  # (V, 3, K)
        self.pose_dirs = np.asarray(arrays["posedirs"], np.float64)  # (V, 3, 207)
        self.joint_regressor = np.asarray(arrays["J_regressor"], np.float64)  # (24, V)
        self.skin_weights = np.asarray(arrays["weights"], np.float64)  # (V, 24)
        self.parents = np.asarray(arrays["kintree_table"], np.int64)[0].copy()
        self.parents[0] = -1
        self.faces = np.asarray(arrays["f"], np.int64)

    @property
    def num_betas(self) -> int:
        return self.shape_dirs.shape[2]

    def rest(self, betas: np.ndarray) -> RestBody:
        """The template shaped by ``betas`` (K <= num_betas components; the rest are zero) and its joints."""
        betas = np.asarray(betas, np.float64)
        vertices = self.template + self.shape_dirs[:, :, :len(betas)] @ betas
        return RestBody(vertices, self.joint_regressor @ vertices)

    def pose_features(self, rotations: np.ndarray) -> np.ndarray:
        """(F, 24, 3, 3) -> (F, 207): the pose corrective blend shapes' coefficients, (R - I) of joints 1..23."""
        return (rotations[:, 1:] - np.eye(3)).reshape(len(rotations), -1)

    def pose_offsets(self, rotations: np.ndarray) -> np.ndarray:
        """(F, 24, 3, 3) -> (F, V, 3): the pose corrective displacement of each rest vertex."""
        features = self.pose_features(rotations)
        return (features @ self.pose_dirs.reshape(-1, features.shape[1]).T).reshape(len(rotations), -1, 3)

    def chain(self, rest: RestBody, rotations: np.ndarray) -> np.ndarray:
        """World transforms (F, 24, 4, 4) of the joints: each joint rotates about its rest position."""
        frames = len(rotations)
        local = np.zeros((frames, NUM_JOINTS, 4, 4))
        local[:, :, :3, :3] = rotations
        local[:, :, 3, 3] = 1
        local[:, :, :3, 3] = joint_offsets(rest.joints, self.parents)
        world = np.empty_like(local)
        world[:, 0] = local[:, 0]
        for j in range(1, NUM_JOINTS):
            world[:, j] = world[:, self.parents[j]] @ local[:, j]
        return world

    def pose(self, rest: RestBody, rotations: np.ndarray, weights: np.ndarray | None = None) -> PosedBody:
        """Pose ``rest`` by rotations (F, 24, 3, 3); ``weights`` (V, 24) replace the model's skinning weights."""
        world = self.chain(rest, rotations)
        # skinning moves rest-space points: undo each joint's rest position first
        skinning = world.copy()
        skinning[:, :, :3, 3] -= np.einsum("fjab,jb->fja", world[:, :, :3, :3], rest.joints)
        weights = self.skin_weights if weights is None else weights
        frames = len(rotations)
        # each vertex's blended (3, 4) transform: a (V, 24) x (24, F * 12) product
        blended = (weights @ skinning[:, :, :3].transpose(1, 0, 2, 3).reshape(NUM_JOINTS, -1))
        blended = blended.reshape(-1, frames, 3, 4).transpose(1, 0, 2, 3)
        corrected = rest.vertices + self.pose_offsets(rotations)
        vertices = np.einsum("fvab,fvb->fva", blended[..., :3], corrected) + blended[..., 3]
        return PosedBody(vertices, world[:, :, :3, 3], world)


def joint_offsets(joints: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """(24, 3) each joint's position relative to its parent's (the root's: its own position)."""
    return joints - np.where(parents[:, None] >= 0, joints[parents], 0)


def axis_angle_to_matrix(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 3, 3) rotation matrices."""
    axis_angle = np.asarray(axis_angle, np.float64)
    return Rotation.from_rotvec(axis_angle.reshape(-1, 3)).as_matrix().reshape(*axis_angle.shape[:-1], 3, 3)


def pose_rotations(global_orient: np.ndarray, body_pose: np.ndarray) -> np.ndarray:
    """NPZ rows' ``global_orient`` (F, 3) and ``body_pose`` (F, 69) -> (F, 24, 3, 3)."""
    aa = np.concatenate([np.asarray(global_orient).reshape(-1, 1, 3), np.asarray(body_pose).reshape(-1, 23, 3)], 1)
    return axis_angle_to_matrix(aa)
