"""A stand-in SMPL model whose template is a closed, smooth, body-like surface (SMPL's vertex and face counts).

The shared ``fake_smpl.py`` model has SMPL's layout but random faces, which no renderer draws in a meaningful
time. This one keeps that layout and replaces the surface: a sphere-topology mesh (2 poles and 123 rings of 56
vertices: 6890 vertices, 13776 faces, every edge shared by two faces, outward winding) stretched along a
standing person's height profile (feet, legs, hips, waist, chest, shoulders, neck, head) in SMPL's rest frame
(metres, y up). Each vertex moves rigidly with the joint of its height band, joints sit inside the body, and
posing adds no corrective offsets, so posed meshes stay closed and smooth.
"""
from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

RINGS, SEGMENTS = 123, 56  # 2 + RINGS * SEGMENTS = 6890 vertices, 2 * RINGS * SEGMENTS = 13776 faces
# (height from the soles in m, half width, half depth): a standing person, arms at the sides.
PROFILE = np.array([[0.00, 0.10, 0.08], [0.08, 0.16, 0.10], [0.45, 0.17, 0.10], [0.85, 0.20, 0.12],
                    [1.00, 0.19, 0.11], [1.10, 0.16, 0.10], [1.30, 0.22, 0.12], [1.42, 0.24, 0.12],
                    [1.50, 0.07, 0.06], [1.55, 0.08, 0.08], [1.65, 0.10, 0.10], [1.74, 0.06, 0.06]])
HEIGHT = 1.75
PELVIS_HEIGHT = 0.95  # SMPL's rest frame has the pelvis near the origin
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]  # SMPL's kinematic tree


def body_surface() -> tuple[np.ndarray, np.ndarray]:
    """(vertices (6890, 3) float64, faces (13776, 3) int64) of the stand-in body, outward winding."""
    t = (np.arange(RINGS) + 0.5) / RINGS  # ring heights, soles (0) to crown (1), poles excluded
    height = t * HEIGHT
    half_w = np.interp(height, PROFILE[:, 0], PROFILE[:, 1])
    half_d = np.interp(height, PROFILE[:, 0], PROFILE[:, 2])
    angle = 2 * np.pi * np.arange(SEGMENTS) / SEGMENTS
    ring = np.stack([half_w[:, None] * np.cos(angle), np.broadcast_to(height[:, None], (RINGS, SEGMENTS)),
                     half_d[:, None] * np.sin(angle)], -1).reshape(-1, 3)
    verts = np.concatenate([[[0.0, 0.0, 0.0]], ring, [[0.0, HEIGHT, 0.0]]])
    verts[:, 1] -= PELVIS_HEIGHT
    s = np.arange(SEGMENTS)
    s1 = (s + 1) % SEGMENTS
    bottom, top = 0, 1 + RINGS * SEGMENTS
    faces = [np.stack([np.full(SEGMENTS, bottom), 1 + s, 1 + s1], 1)]
    for r in range(RINGS - 1):
        a, b = 1 + r * SEGMENTS + s, 1 + r * SEGMENTS + s1
        c, d = a + SEGMENTS, b + SEGMENTS
        faces += [np.stack([a, c, b], 1), np.stack([b, c, d], 1)]
    last = 1 + (RINGS - 1) * SEGMENTS
    faces.append(np.stack([np.full(SEGMENTS, top), last + s1, last + s], 1))
    return verts, np.concatenate(faces).astype(np.int64)


def write_standin_smpl(path: Path, fake_smpl: Path | None = None) -> Path:
    """The shared stand-in SMPL (``fake_smpl.py``'s arrays) with the body surface: a pickle at ``path``.

    Without ``fake_smpl`` (a machine with this repository only) the arrays the surface does not replace are
    made here: SMPL's kinematic tree, and the COCO-plus regressor from the first 19 joints' bands.
    """
    if fake_smpl is not None:
        subprocess.run([sys.executable, str(fake_smpl), str(path)], check=True)
        with open(path, "rb") as fh:
            model = pickle.load(fh)
    else:
        model = {"kintree_table": np.array([[2**32 - 1] + PARENTS[1:], list(range(len(PARENTS)))], np.int64),
                 "posedirs": np.zeros((6890, 3, 207)), "shapedirs": np.zeros((6890, 3, 10))}
    verts, faces = body_surface()
    joints = len(model["kintree_table"][0])
    # Joints spread along the body's height; each vertex follows the joint nearest its own height.
    joint_height = np.linspace(verts[:, 1].min() + 0.05, verts[:, 1].max() - 0.05, joints)
    nearest = np.abs(verts[:, 1][:, None] - joint_height[None]).argmin(1)
    weights = np.zeros((len(verts), joints))
    weights[np.arange(len(verts)), nearest] = 1.0
    regressor = weights.T / np.maximum(weights.sum(0)[:, None], 1)  # each joint: the mean of its band
    empty = regressor.sum(1) == 0
    regressor[empty] = 1.0 / len(verts)
    model.update(v_template=verts, f=faces.astype(np.uint32), weights=weights, J_regressor=regressor,
                 posedirs=np.zeros_like(model["posedirs"]),
                 shapedirs=0.02 * verts[:, :, None] * np.linspace(1, -1, model["shapedirs"].shape[2]))
    model.setdefault("cocoplus_regressor", regressor[:19])
    with open(path, "wb") as fh:
        pickle.dump(model, fh, protocol=2)
    return path
