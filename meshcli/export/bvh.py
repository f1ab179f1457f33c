"""A body track as BVH: SMPL's 24-joint skeleton with the track's rest offsets, root position and rotations.

Every joint's rotation channels are ``Zrotation Xrotation Yrotation`` (degrees): the
joint's local rotation is Rz(z) Rx(x) Ry(y), applied to its children's offsets, and a
joint sits at its parent's transform applied to its OFFSET; the root adds
``Xposition Yposition Zposition`` (metres, y up). One frame per video frame from the
track's first to its last; a frame the person is missing from repeats the one before.
"""
from __future__ import annotations

import io

import numpy as np
from scipy.spatial.transform import Rotation

from ..smpl import SMPL_JOINT_NAMES
from .motion import BodyMotion

EULER_ORDER = "ZXY"  # intrinsic, as the channels are listed
ROTATION_CHANNELS = " ".join(f"{axis}rotation" for axis in EULER_ORDER)


def euler_degrees(rotations: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 3) angles in EULER_ORDER, degrees."""
    flat = Rotation.from_matrix(rotations.reshape(-1, 3, 3)).as_euler(EULER_ORDER, degrees=True)
    return flat.reshape(*rotations.shape[:-2], 3)


def encode(motion: BodyMotion, fps: float) -> bytes:
    out = io.StringIO()
    out.write("HIERARCHY\n")
    offsets = motion.offsets
    children = [np.flatnonzero(motion.parents == j) for j in range(len(motion.parents))]
    order: list[int] = []  # joints as the hierarchy lists them (depth first): the motion columns' order

    def joint(j: int, depth: int) -> None:
        order.append(j)
        pad = "  " * depth
        if j == 0:
            out.write(f"ROOT {SMPL_JOINT_NAMES[0]}\n{{\n{pad}  OFFSET 0.000000 0.000000 0.000000\n"
                      f"{pad}  CHANNELS 6 Xposition Yposition Zposition {ROTATION_CHANNELS}\n")
        else:
            x, y, z = offsets[j]
            out.write(f"{pad}JOINT {SMPL_JOINT_NAMES[j]}\n{pad}{{\n{pad}  OFFSET {x:.6f} {y:.6f} {z:.6f}\n"
                      f"{pad}  CHANNELS 3 {ROTATION_CHANNELS}\n")
        for c in children[j]:
            joint(int(c), depth + 1)
        if not len(children[j]):  # a leaf: BVH wants an end site; continue the bone by half its length
            x, y, z = offsets[j] / 2
            out.write(f"{pad}  End Site\n{pad}  {{\n{pad}    OFFSET {x:.6f} {y:.6f} {z:.6f}\n{pad}  }}\n")
        out.write(f"{pad}}}\n")

    joint(0, 0)
    frames = motion.track.frames
    # line k is video frame frames[0] + k: the latest of the track's rows at or before it
    held = np.searchsorted(frames, np.arange(frames[0], frames[-1] + 1), side="right") - 1
    angles = euler_degrees(motion.rotations[:, order]).reshape(len(frames), -1)
    values = np.concatenate([motion.root_position, angles], 1)
    out.write(f"MOTION\nFrames: {len(held)}\nFrame Time: {1 / fps:.8f}\n")
    np.savetxt(out, values[held], fmt="%.6f")
    return out.getvalue().encode("ascii")
