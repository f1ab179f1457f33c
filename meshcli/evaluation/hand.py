"""Mean 3D joint error of hand predictions against ground truth (mm), overall and per joint.

Ground truth: NYU's u, v, d labels (``nyu_keypointsUVD_test.mat``: ``keypoints3D``
(F,14,3), the 14 evaluation joints; or NYU's own ``joint_data.mat`` with
``joint_uvd`` (cameras, F, 36, 3)), or an NPZ with ``joints_uvd`` or
``joints_xyz`` (F,J,3) and optionally ``joint_names``.

Predictions: a ``meshcli hand`` NPZ, or a results text file in the official
SRN format (one frame per line, 14 x (u, v, d), as ``result/NYU/result.txt``).

Errors are Euclidean distances in camera space: u, v, d are back-projected
with the given intrinsics (NYU's by default), as the NYU benchmark does.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MeshcliError
from ..methods.srn import HANDS17_JOINTS, back_project

# NYU's 14 evaluation joints, in the order of the benchmark's label files:
# NYU joint indices 0, 3, 6, 9, 12, 15, 18, 21, 24, 25, 27, 30, 31, 32 of its 36.
NYU_EVAL_JOINTS = ("PinkyTip", "PinkyPIP", "RingTip", "RingPIP", "MiddleTip", "MiddlePIP", "IndexTip",
                   "IndexPIP", "ThumbTip", "ThumbIP", "ThumbMCP", "Wrist1", "Wrist2", "Palm")
NYU36_EVAL_INDEX = (0, 3, 6, 9, 12, 15, 18, 21, 24, 25, 27, 30, 31, 32)

# NYU joint <- HANDS2017 joint(s), averaged. An approximation: the two datasets
# place joints differently. BigHand's thumb "PIP"/"DIP" are the anatomical MCP/IP;
# NYU's two wrist points lie on either side of the wrist, HANDS2017's one in its
# middle; NYU's palm point is taken halfway between the wrist and the middle MCP.
NYU_FROM_HANDS17 = {
    "PinkyTip": ("PTIP",), "PinkyPIP": ("PPIP",), "RingTip": ("RTIP",), "RingPIP": ("RPIP",),
    "MiddleTip": ("MTIP",), "MiddlePIP": ("MPIP",), "IndexTip": ("ITIP",), "IndexPIP": ("IPIP",),
    "ThumbTip": ("TTIP",), "ThumbIP": ("TDIP",), "ThumbMCP": ("TPIP",),
    "Wrist1": ("Wrist",), "Wrist2": ("Wrist",), "Palm": ("Wrist", "MMCP"),
}

NYU_FILE = re.compile(r"^depth_1_(\d+)$")  # NYU test frames: depth_1_0000001.png is label row 0


@dataclass
class HandJoints:
    """Joints of F frames as (F,J,3) u,v,d (pixels, mm) and/or x,y,z (mm), with names and frame numbers."""

    joints: dict[str, np.ndarray]  # "uvd" and/or "xyz"
    names: tuple[str, ...]
    frames: np.ndarray | None = None  # ground-truth row of each frame, when the file says

    def __len__(self) -> int:
        return len(next(iter(self.joints.values())))


@dataclass
class HandError:
    mean_mm: float
    per_joint_mm: dict[str, float]
    frames: int  # frames evaluated
    skipped: int  # frames without a prediction (no hand found) or without a label
    mapped: bool  # True when predictions were mapped from HANDS2017 joints onto NYU's


def _names_for(count: int, path: Path) -> tuple[str, ...]:
    if count == len(NYU_EVAL_JOINTS):
        return NYU_EVAL_JOINTS
    if count == len(HANDS17_JOINTS):
        return HANDS17_JOINTS
    raise MeshcliError(path, f"has {count} joints per frame and no joint_names",
                       "give 14 (NYU evaluation) or 21 (HANDS2017) joints, or store joint_names")


def load_ground_truth(path: str | Path) -> HandJoints:
    path = Path(path)
    if not path.is_file():
        raise MeshcliError(path, "ground-truth file not found", "check the path")
    if path.suffix.lower() == ".mat":
        from scipy.io import loadmat

        try:
            mat = loadmat(path)
        except (ValueError, OSError, NotImplementedError) as err:
            raise MeshcliError(path, f"is not a readable MATLAB file ({err})",
                               "give nyu_keypointsUVD_test.mat or NYU's joint_data.mat") from None
        if "keypoints3D" in mat:
            uvd = np.asarray(mat["keypoints3D"], np.float64)
        elif "joint_uvd" in mat:
            uvd = np.asarray(mat["joint_uvd"], np.float64)[0][:, NYU36_EVAL_INDEX]  # camera 1
        else:
            raise MeshcliError(path, "holds neither keypoints3D nor joint_uvd",
                               "give nyu_keypointsUVD_test.mat or NYU's joint_data.mat")
        if uvd.ndim != 3 or uvd.shape[1:] != (14, 3):
            raise MeshcliError(path, f"labels have shape {uvd.shape}, expected (frames, 14, 3)",
                               "give NYU's u, v, d labels")
        return HandJoints({"uvd": uvd}, NYU_EVAL_JOINTS)
    if path.suffix.lower() == ".npz":
        return _load_npz(path)
    raise MeshcliError(path, f"unsupported ground-truth file type {path.suffix!r}", "give a .mat or .npz file")


def load_predictions(path: str | Path) -> HandJoints:
    path = Path(path)
    if not path.is_file():
        raise MeshcliError(path, "predictions file not found", "check the path")
    if path.suffix.lower() == ".npz":
        return _load_npz(path)
    if path.suffix.lower() == ".txt":
        try:
            rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except ValueError as err:
            raise MeshcliError(path, f"is not a table of numbers ({err})",
                               "give an official results file: one frame per line, u v d per joint") from None
        if rows.shape[1] != 3 * len(NYU_EVAL_JOINTS):
            raise MeshcliError(path, f"has {rows.shape[1]} numbers per line, expected 42 (14 joints x u, v, d)",
                               "give an NYU results file in the official format")
        return HandJoints({"uvd": rows.reshape(len(rows), -1, 3)}, NYU_EVAL_JOINTS)
    raise MeshcliError(path, f"unsupported predictions file type {path.suffix!r}",
                       "give a meshcli hand .npz or an official results .txt")


def _load_npz(path: Path) -> HandJoints:
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise MeshcliError(path, f"is not a readable NPZ ({err})", "give a meshcli hand .npz") from None
    joints = {kind: np.asarray(data[f"joints_{kind}"], np.float64)
              for kind in ("uvd", "xyz") if f"joints_{kind}" in data}
    if not joints:
        raise MeshcliError(path, "holds neither joints_uvd nor joints_xyz", "give a meshcli hand .npz")
    for kind, values in joints.items():
        if values.ndim != 3 or values.shape[2] != 3:
            raise MeshcliError(path, f"joints_{kind} has shape {values.shape}, expected (frames, joints, 3)",
                               "give a meshcli hand .npz")
    count = next(iter(joints.values())).shape[1]
    names = tuple(str(n) for n in data["joint_names"]) if "joint_names" in data else _names_for(count, path)
    frames = None
    if "files" in data and "frame_index" in data:
        numbers = [NYU_FILE.match(Path(str(f)).stem) for f in data["files"]]
        if all(numbers):
            frames = np.array([int(m.group(1)) - 1 for m in numbers])[np.asarray(data["frame_index"])]
    return HandJoints(joints, names, frames)


def _to_names(pred: HandJoints, values: np.ndarray, names: tuple[str, ...], path: Path) -> tuple[np.ndarray, bool]:
    """Predicted ``values`` re-ordered onto the ground truth's joints; True when HANDS2017 -> NYU was mapped."""
    index = {n: i for i, n in enumerate(pred.names)}
    if all(n in index for n in names):
        return values[:, [index[n] for n in names]], False
    if names == NYU_EVAL_JOINTS and all(n in index for n in HANDS17_JOINTS):
        cols = [values[:, [index[s] for s in NYU_FROM_HANDS17[n]]].mean(1) for n in names]
        return np.stack(cols, 1), True
    raise MeshcliError(path, f"joints {', '.join(pred.names[:4])}... cannot be matched to the ground truth's "
                       f"{', '.join(names[:4])}...", "predict the same joints, or HANDS2017 joints for NYU")


def evaluate(pred_path: str | Path, gt_path: str | Path, intrinsics) -> HandError:
    """Mean joint error (mm) of the predictions in ``pred_path`` against ``gt_path``."""
    pred, gt = load_predictions(pred_path), load_ground_truth(gt_path)
    kind = next((k for k in ("uvd", "xyz") if k in pred.joints and k in gt.joints), None)
    if kind is None:
        raise MeshcliError(pred_path, f"holds {'/'.join(pred.joints)} joints, the ground truth {'/'.join(gt.joints)}",
                           "give u, v, d (or x, y, z) on both sides; meshcli NPZs hold both")
    values, mapped = _to_names(pred, pred.joints[kind], gt.names, Path(pred_path))
    if pred.frames is not None:
        rows = pred.frames
        if rows.max(initial=-1) >= len(gt):
            raise MeshcliError(gt_path, f"has {len(gt)} frames but the predictions name frame {rows.max() + 1}",
                               "give the ground truth of the same test set")
    elif len(values) == len(gt):
        rows = np.arange(len(values))
    else:
        raise MeshcliError(pred_path, f"has {len(values)} frames, the ground truth {len(gt)}, and its "
                           "file names do not say which labels they are", "predict every frame of the test set")
    labels = gt.joints[kind][rows]
    if kind == "uvd":
        values, labels = back_project(values, intrinsics), back_project(labels, intrinsics)
    ok = np.isfinite(values).all((1, 2)) & np.isfinite(labels).all((1, 2))
    if not ok.any():
        raise MeshcliError(pred_path, "no frame has both a prediction and a label", "check the inputs")
    err = np.linalg.norm(values[ok] - labels[ok], axis=-1)  # (frames, joints) mm
    return HandError(float(err.mean()), {n: float(e) for n, e in zip(gt.names, err.mean(0))},
                     int(ok.sum()), int((~ok).sum()), mapped)
