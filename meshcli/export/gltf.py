"""A body track as a skinned, animated glTF 2.0 asset (.glb, or .gltf + .bin), built with pygltflib.

The asset holds the track's shaped SMPL mesh in the rest pose, skinned to the 24
SMPL joints (``JOINTS_0``/``WEIGHTS_0``, and ``JOINTS_1``/``WEIGHTS_1`` for vertices
with more than four influences), SMPL's 207 pose corrective blend shapes as morph
targets, and one animation: every joint's rotation, the root's translation and the
morph weights, keyed at the video's own frame times. A glTF viewer evaluates
``sum_j w_j * (joint_j world * inverse bind_j) * (rest + sum_k weight_k * target_k)``,
which is SMPL's forward exactly when no vertex has more than eight influences.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pygltflib as gl
from scipy.spatial.transform import Rotation

from .. import __version__
from ..smpl import SMPL_JOINT_NAMES
from .body_model import BodyModel
from .motion import BodyMotion

MAX_INFLUENCES = 8  # two JOINTS_n/WEIGHTS_n sets; more are dropped and the rest renormalised
CHUNK = 64  # frames posed at once when measuring the truncation error (bounds memory)
_FLOAT, _UBYTE, _UINT = gl.FLOAT, gl.UNSIGNED_BYTE, gl.UNSIGNED_INT


@dataclass
class Skin:
    """Per-vertex influences as written: joints (V, n) and weights (V, n), n = 4 or 8."""

    joints: np.ndarray
    weights: np.ndarray
    truncated_vertices: int  # vertices that had more than MAX_INFLUENCES non-zero weights

    @classmethod
    def of(cls, weights: np.ndarray) -> "Skin":
        count = (weights > 0).sum(1)
        n = 4 if count.max() <= 4 else MAX_INFLUENCES
        joints = np.argsort(-weights, axis=1, kind="stable")[:, :n]
        kept = np.take_along_axis(weights, joints, 1)
        kept = kept / kept.sum(1, keepdims=True)
        joints = np.where(kept > 0, joints, 0)  # unused slots: joint 0, weight 0
        kept32 = kept.astype(np.float32)
        # float32 sums must be 1: the largest weight takes up the rounding
        kept32[:, 0] = np.float32(1) - kept32[:, 1:].sum(1, dtype=np.float32)
        return cls(joints.astype(np.uint8), kept32, int((count > MAX_INFLUENCES).sum()))

    def dense(self, num_joints: int) -> np.ndarray:
        """(V, num_joints) the weights a viewer applies, float64."""
        out = np.zeros((len(self.joints), num_joints))
        np.add.at(out, (np.arange(len(self.joints))[:, None], self.joints), self.weights)
        return out


def truncation_error(model: BodyModel, motion: BodyMotion, skin: Skin) -> float:
    """Largest distance (m) between SMPL's vertices and the written skin's, over the track's frames."""
    if not skin.truncated_vertices:
        return 0.0
    written = skin.dense(model.skin_weights.shape[1])
    worst = 0.0
    for start in range(0, len(motion.rotations), CHUNK):
        rotations = motion.rotations[start:start + CHUNK]
        exact = model.pose(motion.rest, rotations).vertices
        approx = model.pose(motion.rest, rotations, weights=written).vertices
        worst = max(worst, float(np.linalg.norm(exact - approx, axis=-1).max()))
    return worst


class _Buffer:
    """One binary buffer and the bufferViews/accessors into it."""

    def __init__(self, asset: gl.GLTF2):
        self.asset = asset
        self.data = bytearray()

    def add(self, array: np.ndarray, component: int, kind: str, target: int | None = None,
            bounds: bool = False) -> int:
        array = np.ascontiguousarray(array)
        self.data += b"\0" * (-len(self.data) % 4)
        self.asset.bufferViews.append(gl.BufferView(buffer=0, byteOffset=len(self.data),
                                                    byteLength=array.nbytes, target=target))
        self.data += array.tobytes()
        flat = array.reshape(len(array), -1)
        accessor = gl.Accessor(bufferView=len(self.asset.bufferViews) - 1, componentType=component,
                               count=len(array), type=kind)
        if bounds:
            accessor.min, accessor.max = flat.min(0).tolist(), flat.max(0).tolist()
        self.asset.accessors.append(accessor)
        return len(self.asset.accessors) - 1


def _continuous(quaternions: np.ndarray) -> np.ndarray:
    """(F, J, 4) with each quaternion's sign chosen nearest its predecessor, so LINEAR keys turn the short way."""
    out = quaternions.copy()
    for f in range(1, len(out)):
        flip = (out[f] * out[f - 1]).sum(-1) < 0
        out[f, flip] *= -1
    return out


def build(model: BodyModel, motion: BodyMotion, name: str, truncation_m: float) -> tuple[gl.GLTF2, bytes]:
    """The glTF document and its binary buffer for one track."""
    asset = gl.GLTF2(asset=gl.Asset(generator=f"meshcli {__version__}", version="2.0"))
    buf = _Buffer(asset)
    skin = Skin.of(model.skin_weights)
    num_joints = len(model.parents)

    # -- the mesh: rest shape, skin, pose correctives as morph targets
    attributes = gl.Attributes(POSITION=buf.add(motion.rest.vertices.astype(np.float32), _FLOAT, gl.VEC3,
                                                gl.ARRAY_BUFFER, bounds=True))
    for k in range(skin.joints.shape[1] // 4):
        setattr(attributes, f"JOINTS_{k}", buf.add(skin.joints[:, 4 * k:4 * k + 4], _UBYTE, gl.VEC4, gl.ARRAY_BUFFER))
        setattr(attributes, f"WEIGHTS_{k}", buf.add(skin.weights[:, 4 * k:4 * k + 4], _FLOAT, gl.VEC4,
                                                    gl.ARRAY_BUFFER))
    num_targets = model.pose_dirs.shape[2]
    targets = [gl.Attributes(POSITION=buf.add(model.pose_dirs[:, :, k].astype(np.float32), _FLOAT, gl.VEC3,
                                              gl.ARRAY_BUFFER, bounds=True)) for k in range(num_targets)]
    target_names = [f"{SMPL_JOINT_NAMES[1 + k // 9]}_R{k % 9 // 3}{k % 3}" for k in range(num_targets)]
    faces = buf.add(model.faces.astype(np.uint32).reshape(-1), _UINT, gl.SCALAR, gl.ELEMENT_ARRAY_BUFFER)
    asset.meshes.append(gl.Mesh(name=name, weights=[0.0] * num_targets, extras={"targetNames": target_names},
                                primitives=[gl.Primitive(attributes=attributes, indices=faces, targets=targets)]))

    # -- the skeleton: joint nodes at their rest offsets, then the skinned mesh's node
    offsets = motion.offsets
    for j in range(num_joints):
        asset.nodes.append(gl.Node(name=SMPL_JOINT_NAMES[j], translation=offsets[j].tolist(),
                                   children=[int(c) for c in np.flatnonzero(model.parents == j)]))
    inverse_bind = np.tile(np.eye(4), (num_joints, 1, 1))
    inverse_bind[:, :3, 3] = -motion.rest.joints
    asset.skins.append(gl.Skin(name=name, joints=list(range(num_joints)), skeleton=0,
                               inverseBindMatrices=buf.add(inverse_bind.transpose(0, 2, 1).astype(np.float32),
                                                           _FLOAT, gl.MAT4)))
    asset.nodes.append(gl.Node(name=name, mesh=0, skin=0))
    asset.scenes.append(gl.Scene(name=name, nodes=[num_joints, 0]))
    asset.scene = 0

    # -- the animation, keyed at the frames' times
    animation = gl.Animation(name=name)
    times = buf.add(motion.track.times.astype(np.float32), _FLOAT, gl.SCALAR, bounds=True)
    quaternions = Rotation.from_matrix(motion.rotations.reshape(-1, 3, 3)).as_quat()  # x, y, z, w as glTF
    quaternions = _continuous(quaternions.reshape(len(motion.rotations), num_joints, 4))
    outputs = [(j, "rotation", buf.add(quaternions[:, j].astype(np.float32), _FLOAT, gl.VEC4))
               for j in range(num_joints)]
    outputs.append((0, "translation", buf.add(motion.root_position.astype(np.float32), _FLOAT, gl.VEC3)))
    weights = model.pose_features(motion.rotations).astype(np.float32).reshape(-1)
    outputs.append((num_joints, "weights", buf.add(weights, _FLOAT, gl.SCALAR)))
    for node, path, output in outputs:
        animation.samplers.append(gl.AnimationSampler(input=times, output=output, interpolation=gl.ANIM_LINEAR))
        animation.channels.append(gl.AnimationChannel(sampler=len(animation.samplers) - 1,
                                                      target=gl.AnimationChannelTarget(node=node, path=path)))
    asset.animations.append(animation)
    asset.extras = {"meshcli": {"track_id": motion.track.id, "frames": motion.track.frames.tolist(),
                                "betas": motion.betas.tolist(),
                                "skin_truncated_vertices": skin.truncated_vertices,
                                "skin_truncation_error_m": truncation_m}}
    asset.buffers.append(gl.Buffer(byteLength=len(buf.data)))
    return asset, bytes(buf.data)


def encode(asset: gl.GLTF2, blob: bytes, target: Path) -> dict[Path, bytes]:
    """The files of ``asset``: one .glb, or a .gltf and its .bin beside it."""
    if target.suffix == ".glb":
        asset.set_binary_blob(blob)
        return {target: b"".join(asset.save_to_bytes())}
    bin_path = target.with_suffix(".bin")
    asset.buffers[0].uri = bin_path.name
    return {target: json.dumps(json.loads(asset.gltf_to_json()), indent=1).encode(), bin_path: blob}
