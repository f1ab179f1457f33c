"""SRN: Stacked Regression Network for 3D hand pose from a depth image.

Ren et al., BMVC 2019; official code RenFeiTemp/SRN (``realtime/``). A
ResNet-18 stem feeds three regression stages; after each stage the joints are
turned into "offset maps" (per-joint unit vectors and closeness on a 32x32
grid of the input's depth) that are stacked onto the stem features of the next
stage. The released model is the HANDS2017 one, 21 joints.

The crop and normalisation follow the official loaders to the bit (see the
parity fixtures' READMEs): a cube of ``cube`` mm around the hand centre is cut
from the depth frame, resized by nearest neighbour to 128x128 and scaled to
[-1, 1] around the centre depth. Two official paths differ in what happens
before the crop, and both are offered:

- realtime (``mirror=True``, ``centre="auto"``): the frame is mirrored left to
  right, invalid (0) pixels are filled with the frame's maximum, and the hand
  centre is found by the demo's nearest-depth heuristic;
- NYU evaluation (``mirror=False``, centres from a file): no mirror, no fill.

Whatever the path, results are reported in the input image's own frame:
``joints_uvd`` (u = column, v = row, d mm) and ``joints_xyz`` (camera mm,
x right, y down, z forward).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import load_state_dict_strict, tensor_bytes, torch_load
from ..device import autocast, resolve_device, to_device
from ..draw import draw_skeleton
from ..errors import MeshcliError
from ..models.resnet import BasicBlock
from ..io.depth import DEPTH_EXTENSIONS, DEPTH_FORMATS, read_depth
from ..records import record_for
from ..types import Frame, HandResult, WeightsInfo
from . import METHODS
from .base import Predictor

# The model's joint order (HANDS2017 / BigHand2.2M), from its weights record. T/I/M/R/P = thumb..pinky.
HANDS17_JOINTS = record_for("srn", "hands17").joint_names
# MSRA order as indices into the HANDS2017 order (the realtime demo's joint.txt).
HANDS17_TO_MSRA = (0, 2, 9, 10, 11, 3, 12, 13, 14, 4, 15, 16, 17, 5, 18, 19, 20, 1, 6, 7, 8)
JOINT_ORDERS = {"hands17": tuple(range(21)), "msra": HANDS17_TO_MSRA}

# Fingers as chains of HANDS2017 indices from the wrist to the tip; drawn one colour each.
FINGERS = {
    "thumb": (0, 1, 6, 7, 8), "index": (0, 2, 9, 10, 11), "middle": (0, 3, 12, 13, 14),
    "ring": (0, 4, 15, 16, 17), "pinky": (0, 5, 18, 19, 20),
}
FINGER_RGB = {"thumb": (255, 64, 64), "index": (64, 220, 64), "middle": (64, 128, 255),
              "ring": (255, 220, 0), "pinky": (230, 64, 230)}

# Pinhole intrinsics (fx, fy, cx, cy) in pixels. nyu: the official NYU loader;
# kinect2 and sr300: the two sensors of the official realtime demo.
INTRINSICS = {
    "nyu": (588.03, 587.07, 320.0, 240.0),
    "kinect2": (363.9, 363.9, 255.4, 206.3),
    "sr300": (615.866, 615.866, 316.584, 228.38),
}

VARIANTS: dict[str, dict[str, Any]] = {
    # input size and joint names: the variant's weights record
    "hands17": {
        "pool_factor": 4,  # stem output = input / 4: the grid of the offset maps
        "num_stages": 3,
        "cube_mm": 250.0,
        # HANDS2017 was recorded with an Intel RealSense SR300.
        "intrinsics": "sr300",
    },
}

CENTRES_FORMATS = ("xyz", "nyu")
MIN_WINDOW_PX = 2  # a crop window narrower than this holds no usable hand
MAX_WINDOW_FACTOR = 16  # a window this many times the frame's size means the depth is not in mm
MAX_DEPTH_SCALE = 1e6  # kilometres to mm; larger factors overflow float32 depths


# ----------------------------------------------------------------------------
# Network


def _layer(inplanes: int, planes: int, stride: int) -> nn.Sequential:
    """Two ResNet basic blocks; the first changes width/resolution through a 1x1-conv shortcut."""
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
    return nn.Sequential(BasicBlock(inplanes, planes, stride, downsample), BasicBlock(planes, planes))


def offset_maps(joints: torch.Tensor, image: torch.Tensor, size: int) -> torch.Tensor:
    """SRN's re-parameterisation of joints (B,J,3, normalised u,v,d) into (B,4J,size,size) maps.

    Each grid cell is the point (g(col), g(row), depth) with g spanning [-1, 1]
    in size-1 steps and depth the input sampled by nearest neighbour. For every
    joint: 3 channels of the unit vector from the cell to the joint and (after
    all unit vectors) 1 channel of 1 - distance, all zero where the cell is
    background (depth 1) or farther than 1 from the joint.
    """
    b, j, _ = joints.shape
    # Nearest-neighbour sampling of the input onto the grid: cell i reads pixel floor(i * S / size).
    pick = torch.arange(size, device=image.device) * image.shape[-1] // size
    depth = image[:, 0, pick[:, None], pick[None, :]]  # (B, size, size)
    axis = torch.linspace(-1.0, 1.0, size, device=image.device)
    cells = torch.stack(torch.broadcast_tensors(axis[None, None, :], axis[None, :, None], depth), -1)
    to_joint = joints[:, :, None, None, :] - cells[:, None]  # (B, J, size, size, 3)
    dist = (to_joint.square().sum(-1) + 1e-8).sqrt()
    closeness = 1 - dist
    near_hand = (closeness >= 0) & (depth[:, None] < 1)
    unit = torch.where(near_hand[..., None], to_joint / dist[..., None], 0.0)
    return torch.cat((unit.permute(0, 1, 4, 2, 3).reshape(b, 3 * j, size, size),
                      torch.where(near_hand, closeness, 0.0)), dim=1)


class SRN(nn.Module):
    """The released SRN: ResNet-18 stem + stacked regression stages with offset maps.

    Module names follow the official state dict (``pre``, ``fcs``, ``features``).
    """

    def __init__(self, num_joints: int = 21, num_stages: int = 3, input_size: int = 128,
                 pool_factor: int = 4):
        super().__init__()
        self.num_joints = num_joints
        self.map_size = input_size // pool_factor
        self.pre = nn.Sequential(nn.Conv2d(1, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1), _layer(64, 64, 1))
        map_channels = 4 * num_joints
        # fcs is registered before features, as in the official module (state-dict order).
        self.fcs = nn.ModuleList(nn.Linear(512, 3 * num_joints) for _ in range(num_stages))
        self.features = nn.ModuleList(
            nn.Sequential(_layer(64 + k * map_channels, 128, 2), _layer(128, 256, 2), _layer(256, 512, 2))
            for k in range(num_stages))

    def forward(self, image: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """image (B,1,S,S) normalised depth -> (stage outputs (B,J,3), offset maps fed to later stages)."""
        stem = self.pre(image)
        stages, maps = [], []
        for k, (feature, fc) in enumerate(zip(self.features, self.fcs)):
            x = feature(torch.cat([stem, *maps], dim=1))
            x = F.avg_pool2d(x, x.shape[-1], stride=1).flatten(1)
            stages.append(fc(x).view(x.shape[0], self.num_joints, 3))
            if k + 1 < len(self.features):
                maps.append(offset_maps(stages[-1], image, self.map_size))
        return stages, maps


def build_model(variant: str) -> SRN:
    cfg, record = VARIANTS[variant], record_for("srn", variant)
    return SRN(len(record.joint_names), cfg["num_stages"], record.input_size, cfg["pool_factor"])


def load_checkpoint(model: SRN, path: str | Path) -> None:
    """Map the official plain state dict (``offset_000_240.pth``) strictly onto ``model``."""
    state = torch_load(path, tensor_bytes(model))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MeshcliError(path, "is not a plain state dict of tensors (the format of offset_000_240.pth)",
                           "use the official SRN checkpoint checkpoint/hands17/offset_000_240.pth")
    load_state_dict_strict(model, state, path, "SRN model")


def validate_checkpoint(path: Path, variant: str) -> None:
    load_checkpoint(build_model(METHODS["srn"].choose_variant(variant)), path)




# ----------------------------------------------------------------------------
# Options: intrinsics, centres


def parse_intrinsics(value: str | Path | tuple | list) -> tuple[float, float, float, float]:
    """``nyu|kinect2|sr300``, ``"fx,fy,cx,cy"``, a JSON file ({fx,fy,cx,cy} or [fx,fy,cx,cy]) or 4 numbers."""
    where, raw = None, value
    if isinstance(value, str) and value.strip().lower() in INTRINSICS:
        raw = INTRINSICS[value.strip().lower()]
    elif isinstance(value, (str, Path)) and (str(value).lower().endswith(".json") or Path(value).is_file()):
        where = Path(value)
        if not where.is_file():
            raise MeshcliError(where, "intrinsics file not found", "give fx,fy,cx,cy or a preset: "
                               + ", ".join(INTRINSICS))
        try:
            raw = json.loads(where.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MeshcliError(where, f"intrinsics file is not valid JSON ({err})",
                               'write {"fx": ..., "fy": ..., "cx": ..., "cy": ...}') from None
        if isinstance(raw, dict):
            missing = [k for k in ("fx", "fy", "cx", "cy") if k not in raw]
            if missing:
                raise MeshcliError(where, f"intrinsics file lacks {', '.join(missing)}",
                                   'write {"fx": ..., "fy": ..., "cx": ..., "cy": ...} in pixels')
            raw = [raw[k] for k in ("fx", "fy", "cx", "cy")]
    elif isinstance(value, str):
        raw = value.replace(" ", "").split(",")
    try:
        fx, fy, cx, cy = (float(v) for v in raw)
    except (TypeError, ValueError):
        raise MeshcliError(where, f"cannot read intrinsics from {value!r}",
                           "give fx,fy,cx,cy in pixels, a JSON file, or a preset: " + ", ".join(INTRINSICS)) from None
    if not (fx > 0 and fy > 0 and all(math.isfinite(v) for v in (fx, fy, cx, cy))):
        raise MeshcliError(where, f"intrinsics {fx},{fy},{cx},{cy}: focal lengths must be positive and finite",
                           "give fx,fy,cx,cy in pixels")
    return fx, fy, cx, cy


def parse_centre(value: str | tuple | list | None) -> tuple[float, float, float] | None:
    """``auto`` (None) or a fixed hand centre ``"x,y,z"`` in camera mm (y down)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    parts = value.replace(" ", "").split(",") if isinstance(value, str) else value
    try:
        x, y, z = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise MeshcliError(None, f"cannot read --centre {value!r}",
                           "give auto, or x,y,z in camera millimetres (y down, z forward)") from None
    if not (z > 0 and math.isfinite(x) and math.isfinite(y)):
        raise MeshcliError(None, f"--centre {value!r}: z must be a positive distance in mm",
                           "give x,y,z in camera millimetres (y down, z forward)")
    return x, y, z


def parse_centres_file(path: str | Path, fmt: str = "xyz") -> np.ndarray:
    """Per-frame hand centres, one ``x y z`` row (mm) per frame -> (N,3) float64, camera y down.

    ``fmt="nyu"`` reads NYU's world convention (y up), as in center_test_refined.txt.
    Separators may be spaces, tabs or commas; blank lines and ``#`` comments are skipped.
    """
    path = Path(path)
    if fmt not in CENTRES_FORMATS:
        raise MeshcliError(path, f"unknown centres format {fmt!r}", f"choose one of {', '.join(CENTRES_FORMATS)}")
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise MeshcliError(path, "centres file not found", "check the path given to --centres") from None
    except (OSError, UnicodeDecodeError) as err:
        raise MeshcliError(path, f"cannot read the centres file ({err})", "give a text file of x y z rows") from None
    rows = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].replace(",", " ").split()
        if not text:
            continue
        try:
            if len(text) != 3:
                raise ValueError
            rows.append([float(v) for v in text])
        except ValueError:
            raise MeshcliError(path, f"line {number} is not 3 numbers x y z: {line.strip()[:60]!r}",
                               "write one hand centre per frame, x y z in mm") from None
    if not rows:
        raise MeshcliError(path, "centres file holds no rows", "write one hand centre per frame, x y z in mm")
    centres = np.asarray(rows, dtype=np.float64)
    if fmt == "nyu":
        centres[:, 1] = -centres[:, 1]
    return centres


# ----------------------------------------------------------------------------
# Hand centre, crop and normalisation (the official loaders' arithmetic)


def auto_centre(depth: np.ndarray) -> np.ndarray | None:
    """The realtime demo's hand centre: (u, v, d) float64 of the nearest blob, or None.

    The mean of the 300 smallest depths sets the near limit; pixels within
    [near, near + 100 mm] are averaged. u and v use the demo's pixel grid
    ``linspace(0, W, W)`` (column j -> j*W/(W-1)); d is their float32 mean.
    ``depth`` must already have its invalid pixels filled (see ``prepare_depth``).
    """
    flat = depth.reshape(-1)
    smallest = np.sort(np.partition(flat, 299)[:300]) if flat.size > 300 else np.sort(flat)
    near = smallest.mean()  # float32, as the demo
    rows, cols = np.nonzero((depth >= near) & (depth <= near + np.float32(100)))
    if rows.size == 0:
        return None
    h, w = depth.shape
    d = depth[rows, cols].mean()
    if not d > 0:
        return None
    return np.array([np.linspace(0, w, w)[cols].mean(), np.linspace(0, h, h)[rows].mean(), d], np.float64)


def project(xyz: np.ndarray, intrinsics) -> np.ndarray:
    """Camera (x, y down, z) mm -> image (u, v, d), float64."""
    fx, fy, cx, cy = intrinsics
    x, y, z = (np.asarray(xyz, np.float64)[..., i] for i in range(3))
    return np.stack([x * fx / z + cx, y * fy / z + cy, z], axis=-1)


def back_project(uvd: np.ndarray, intrinsics) -> np.ndarray:
    """Image (u, v, d) -> camera (x, y down, z) mm, float64."""
    fx, fy, cx, cy = intrinsics
    u, v, d = (np.asarray(uvd, np.float64)[..., i] for i in range(3))
    return np.stack([(u - cx) * d / fx, (v - cy) * d / fy, d], axis=-1)


def crop_window(centre_uvd: np.ndarray, cube: float, intrinsics) -> tuple[int, int, int, int, float, float]:
    """Pixel window [x0, x1) x [y0, y1) and depth range [z0, z1] of a cube around the centre.

    Arithmetic of the official loaders: u*d is formed in the centre's own
    dtype (float32 for file centres, float64 for the automatic one), the rest
    in float64; bounds are rounded half up.
    """
    fx, fy = intrinsics[0], intrinsics[1]
    u, v, d = centre_uvd
    half = cube / 2.0
    dd = float(d)
    x0 = math.floor((float(u * d) / fx - half) / dd * fx + 0.5)
    x1 = math.floor((float(u * d) / fx + half) / dd * fx + 0.5)
    y0 = math.floor((float(v * d) / fy - half) / dd * fy + 0.5)
    y1 = math.floor((float(v * d) / fy + half) / dd * fy + 0.5)
    return x0, x1, y0, y1, dd - half, dd + half


def crop_hand(depth: np.ndarray, window, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut, depth-clamp, resize (nearest) and centre the window in a size x size canvas.

    Returns the crop in mm (0 = nothing) and M (3x3 float64), mapping frame
    pixels (u, v, 1) to crop pixels. Parts of the window outside the frame
    count as 0. Nearest-neighbour resizing picks whole source rows and
    columns, so OpenCV's pick is found on index vectors and only the picked
    pixels are read: the result equals resizing the cut window, without
    allocating a window that may be far larger than the frame.
    """
    x0, x1, y0, y1, z0, z1 = window
    h, w = depth.shape
    wb, hb = x1 - x0, y1 - y0
    tw, th = (size, hb * size // wb) if wb > hb else (wb * size // hb, size)
    scale = th / hb if hb > wb else tw / wb
    cols = x0 + _nearest_pick(wb, tw)
    rows = y0 + _nearest_pick(hb, th)
    cin, rin = (cols >= 0) & (cols < w), (rows >= 0) & (rows < h)
    resized = np.zeros((th, tw), np.float32)
    resized[np.ix_(rin, cin)] = depth[np.ix_(rows[rin], cols[cin])]
    valid = resized != 0
    near, far = np.float32(z0), np.float32(z1)
    too_near, too_far = valid & (resized < near), valid & (resized > far)
    resized[too_near] = near
    resized[too_far] = 0
    ox, oy = math.floor(size / 2 - tw / 2), math.floor(size / 2 - th / 2)
    crop = np.zeros((size, size), np.float32)
    crop[oy:oy + th, ox:ox + tw] = resized
    offset = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]], np.float64)
    scaling = np.diag([scale, scale, 1.0])
    to_window = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    return crop, offset @ scaling @ to_window


def _nearest_pick(src: int, dst: int) -> np.ndarray:
    """Source indices OpenCV's INTER_NEAREST takes when resizing ``src`` samples to ``dst``."""
    index = np.arange(src, dtype=np.float32)[None]  # exact integers below 2**24
    return cv2.resize(index, (dst, 1), interpolation=cv2.INTER_NEAREST)[0].astype(np.int64)


def normalise_crop(crop: np.ndarray, centre_depth: float, cube: float) -> np.ndarray:
    """Crop (mm) -> network input in [-1, 1]: background +1, centre depth 0.

    As the official code, the crop's maximum is also made background: it was
    meant for crops whose background is the maximum. After the depth clamp the
    far background is already 0, so this wipes the farthest hand/arm pixels;
    kept for parity with the released model's training and evaluation.
    """
    half = np.float32(cube / 2.0)
    far, near = np.float32(centre_depth + cube / 2.0), np.float32(centre_depth - cube / 2.0)
    background = (crop == 0) | (crop == crop.max())
    clamped = np.where(background, far, np.clip(crop, near, far))
    return (clamped - np.float32(centre_depth)) / half


# ----------------------------------------------------------------------------
# Predictor


@dataclass
class HandCrop:
    """One frame, prepared: everything postprocess needs to map joints back."""

    frame_index: int
    width: int  # of the input frame (for un-mirroring)
    status: str  # "ok" or why no hand was looked for
    centre_uvd: np.ndarray | None = None  # working frame (mirrored if mirror), float32 or float64
    centre_depth: float = 0.0  # float64 depth the normaliser uses
    crop_mm: np.ndarray | None = None
    M: np.ndarray | None = None
    input: np.ndarray | None = None  # (1, S, S) float32


class SrnPredictor(Predictor):
    task = "hand"
    method = "srn"
    result_type = HandResult
    file_extensions = DEPTH_EXTENSIONS

    def __init__(self, weights: str | Path | None, variant: str | None = None,
                 device: str | torch.device = "cpu", *, intrinsics=None, depth_format: str = "16bit",
                 depth_scale: float = 1.0, centre=None, centres: str | Path | None = None,
                 centres_format: str = "xyz", cube: float | None = None, mirror: bool = True,
                 order: str = "hands17"):
        self.variant = METHODS["srn"].choose_variant(variant)
        self.config = VARIANTS[self.variant]
        self.input_size = record_for("srn", self.variant).input_size
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.intrinsics = parse_intrinsics(self.config["intrinsics"] if intrinsics is None else intrinsics)
        if depth_format not in DEPTH_FORMATS:
            raise MeshcliError(None, f"unknown --depth-format {depth_format!r}",
                               f"choose one of {', '.join(DEPTH_FORMATS)}")
        if not (0 < depth_scale <= MAX_DEPTH_SCALE):  # larger factors overflow float32 depths to infinity
            raise MeshcliError(None, f"--depth-scale {depth_scale:g} must be a positive number up to "
                               f"{MAX_DEPTH_SCALE:g}", "give the factor from the file's units to mm, e.g. 1000 "
                               "for metres")
        self.depth_format, self.depth_scale = depth_format, float(depth_scale)
        self.fixed_centre = parse_centre(centre)
        if centres is not None and self.fixed_centre is not None:
            raise MeshcliError(None, "both --centre x,y,z and --centres FILE were given", "give one of them")
        self.centres = None if centres is None else parse_centres_file(centres, centres_format)
        self.centres_path = None if centres is None else str(centres)
        self.cube = float(self.config["cube_mm"] if cube is None else cube)
        if not (self.cube > 0 and math.isfinite(self.cube)):
            raise MeshcliError(None, f"--cube {cube} must be a positive size in mm", "the released model uses 250")
        self.mirror = bool(mirror)
        if order not in JOINT_ORDERS:
            raise MeshcliError(None, f"unknown --order {order!r}", f"choose one of {', '.join(JOINT_ORDERS)}")
        self.order = order
        self.joint_index = np.array(JOINT_ORDERS[order])
        self.joint_names = tuple(HANDS17_JOINTS[i] for i in self.joint_index)

        self.model = build_model(self.variant)
        if weights is not None:
            load_checkpoint(self.model, weights)
        self.model.eval().to(self.device)
        self.weights = WeightsInfo.of(weights)

    @property
    def centre_source(self) -> str:
        if self.centres is not None:
            return f"file {Path(self.centres_path).name}"
        return "auto" if self.fixed_centre is None else "fixed"

    # -- decoding

    def read_image(self, path: Path) -> np.ndarray:
        return read_depth(path, self.depth_format, self.depth_scale)

    # -- pipeline steps

    def preprocess(self, frame: Frame, people=None) -> HandCrop:
        depth = frame.image
        if depth.ndim != 2:
            raise MeshcliError(frame.name, "is a colour frame; SRN needs depth images",
                               "give depth images (16-bit PNG/TIFF in mm, NYU PNG with --depth-format nyu, .npy)")
        depth = np.ascontiguousarray(depth, dtype=np.float32)
        h, w = depth.shape
        if self.mirror:
            depth = np.ascontiguousarray(depth[:, ::-1])  # the realtime demo's left-right mirror
        item = HandCrop(frame.index, w, "ok")
        invalid = ~np.isfinite(depth) | (depth < 0)
        if invalid.any():  # no depth, as the sensors' 0
            depth = np.where(invalid, np.float32(0), depth)
            item.status = f"ok; {int(invalid.sum())} invalid depth pixel(s) (NaN, infinite or negative) read as 0"
        if not (depth > 0).any():
            item.status = "no hand in range: the frame has no valid depth"
            return item

        if self.fixed_centre is None and self.centres is None:
            # The demo fills invalid pixels with the farthest depth before looking for the hand.
            depth = np.where(depth == 0, depth.max(), depth)
            centre = auto_centre(depth)
            if centre is None:
                item.status = "no hand in range: no nearest-depth blob found"
                return item
            centre_depth = float(centre[2])
        else:
            xyz = self.fixed_centre if self.centres is None else self._centre_row(frame)
            if not (np.isfinite(xyz).all() and xyz[2] > 0):
                shown = ", ".join(f"{v:.1f}" for v in np.asarray(xyz, np.float64))
                item.status = f"no hand in range: centre ({shown}) is not in front of the camera"
                return item
            centre = project(xyz, self.intrinsics).astype(np.float32)  # the NYU loader keeps float32
            if self.mirror:
                centre[0] = np.float32(w - 1) - centre[0]
            centre_depth = float(xyz[2])
        item.centre_uvd, item.centre_depth = centre, centre_depth

        window = crop_window(centre, self.cube, self.intrinsics)
        x0, x1, y0, y1 = window[:4]
        if x1 - x0 > MAX_WINDOW_FACTOR * w or y1 - y0 > MAX_WINDOW_FACTOR * h:
            item.status = (f"no hand in range: a {self.cube:g} mm cube at {centre_depth:.3g} mm is far larger than "
                           "the image; is the depth in mm? (see --depth-scale)")
            return item
        if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            item.status = "no hand in range: the hand cube lies outside the image"
            return item
        short, long = sorted((x1 - x0, y1 - y0))
        if short < MIN_WINDOW_PX or short * self.input_size < long:
            item.status = f"no hand in range: the crop window is {x1 - x0}x{y1 - y0} px (check --intrinsics)"
            return item
        crop, item.M = crop_hand(depth, window, self.input_size)
        item.crop_mm = crop
        if not crop.any():
            item.status = "no hand in range: no depth within the cube around the centre"
            return item
        item.input = normalise_crop(crop, centre_depth, self.cube)[None]
        return item

    def _centre_row(self, frame: Frame) -> np.ndarray:
        if frame.source_position >= len(self.centres):
            raise MeshcliError(self.centres_path, f"has {len(self.centres)} centre row(s) but the input has a "
                               f"frame {frame.source_position} ({frame.name})",
                               "give one centre row per frame of the input")
        return self.centres[frame.source_position]

    @torch.no_grad()
    def infer(self, prepared: list[HandCrop]) -> list[np.ndarray | None]:
        todo = [i for i, p in enumerate(prepared) if p.input is not None]
        out: list[np.ndarray | None] = [None] * len(prepared)
        if todo:
            batch = to_device(torch.from_numpy(np.stack([prepared[i].input for i in todo])), self.device)
            with autocast(self.device, self.half):
                final = self.model(batch)[0][-1]
            final = final.float().cpu().numpy()
            for i, joints in zip(todo, final):
                out[i] = joints
        return out

    def postprocess(self, prepared: HandCrop, raw: np.ndarray | None) -> HandResult:
        nan = np.full((1, len(self.joint_names), 3), np.nan, np.float32)
        uvd, xyz = nan, nan.copy()
        centre_xyz = np.full((1, 3), np.nan, np.float32)
        if prepared.centre_uvd is not None:
            centre = self._to_image(prepared.centre_uvd.astype(np.float64), prepared.width)
            centre_xyz = back_project(centre, self.intrinsics).astype(np.float32)[None]
        if raw is not None and not np.isfinite(raw).all():  # never an "ok" frame with non-finite joints
            prepared.status = "no hand: the network's joints are not finite numbers"
            raw = None
        if raw is not None:
            joints = self._to_image(self.joints_uvd(raw, prepared), prepared.width)[self.joint_index]
            uvd = joints.astype(np.float32)[None]
            xyz = back_project(joints, self.intrinsics).astype(np.float32)[None]
        return HandResult(prepared.frame_index,
                          {"joints_xyz": xyz, "joints_uvd": uvd, "centre_xyz": centre_xyz},
                          {"status": prepared.status})  # the NPZ sink stores it as frame_status

    def joints_uvd(self, stage: np.ndarray, prepared: HandCrop) -> np.ndarray:
        """Normalised stage output (J,3) -> (u, v, d) in the working (maybe mirrored) frame, float32.

        u, v: [-1, 1] spans the crop's pixels, which M's inverse takes back to the frame;
        d: [-1, 1] spans the cube's depth about the centre depth.
        """
        p = np.asarray(stage, np.float32)
        crop_px = (p[:, :2] + 1) * np.float32(self.input_size / 2)
        to_frame = np.linalg.inv(prepared.M).astype(np.float32)
        uv = crop_px @ to_frame[:2, :2].T + to_frame[:2, 2]
        d = p[:, 2] * np.float32(self.cube / 2.0) + np.float32(prepared.centre_depth)
        return np.column_stack([uv, d])

    def _to_image(self, uvd: np.ndarray, width: int) -> np.ndarray:
        """Working frame -> input image frame (undo the mirror)."""
        out = np.array(uvd, copy=True)
        if self.mirror:
            out[..., 0] = (width - 1) - out[..., 0]
        return out

    # -- drawing

    def uvd_of(self, xyz: np.ndarray) -> np.ndarray:
        """Joints in camera space (..., 3) mm -> (u, v, d) in the input image, through ``intrinsics``."""
        return project(xyz, self.intrinsics)

    def annotate(self, image: np.ndarray, result: HandResult) -> np.ndarray:
        uvd = result.rows["joints_uvd"][0] if result.num_people else None
        centre = result.rows["centre_xyz"][0, 2] if result.num_people else np.nan
        canvas = colourise_depth(image, float(centre), self.cube) if image.ndim == 2 else image.copy()
        inverse = np.argsort(self.joint_index)  # HANDS2017 index -> output index
        if uvd is not None and np.isfinite(uvd).all():
            for finger, chain in FINGERS.items():
                links = [(inverse[a], inverse[b]) for a, b in zip(chain[:-1], chain[1:])]
                visible = np.zeros(len(uvd), bool)
                visible[inverse[list(chain)]] = True
                draw_skeleton(canvas, uvd, links, FINGER_RGB[finger], visible=visible)
            draw_3d_inset(canvas, result.rows["joints_xyz"][0][inverse], self.cube)
        else:
            _label(canvas, str(result.info.get("status", "no hand")))
        return canvas

    def empty_rows(self) -> dict[str, np.ndarray]:
        j = len(self.joint_names)
        return {"joints_xyz": np.zeros((0, j, 3), np.float32), "joints_uvd": np.zeros((0, j, 3), np.float32),
                "centre_xyz": np.zeros((0, 3), np.float32)}

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta.update({
            "joint_names": np.array(self.joint_names),
            "joint_order": self.order,
            "intrinsics": np.array(self.intrinsics, np.float64),
            "cube_mm": self.cube,
            "mirror": self.mirror,
            "centre_source": self.centre_source,
            "depth_format": self.depth_format,
            "depth_scale": self.depth_scale,
        })
        return meta


def colourise_depth(depth: np.ndarray, centre_depth: float, cube: float) -> np.ndarray:
    """HxW mm -> HxWx3 RGB: the hand's cube in colour (near = red), the rest in grey, 0 black."""
    valid = depth > 0
    sample = depth[::4, ::4]  # the grey ramp's range, from a subsample: it is only for display
    sample = sample[sample > 0]
    if not sample.size:
        return np.zeros(depth.shape + (3,), np.uint8)
    lo, hi = np.percentile(sample, [1, 99])
    grey = np.clip(200 - (depth - lo) * (160 / max(hi - lo, 1e-6)), 40, 200).astype(np.uint8)
    grey[~valid] = 0
    out = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    if math.isfinite(centre_depth):
        near = centre_depth - cube / 2
        level = np.clip((near + cube - depth) * (255 / cube), 0, 255).astype(np.uint8)
        turbo = cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
        in_cube = valid & (depth >= near) & (depth <= near + cube)
        cv2.copyTo(turbo, in_cube.view(np.uint8), out)
    return out


def draw_3d_inset(canvas: np.ndarray, xyz: np.ndarray, cube: float) -> None:
    """Draw the joints (HANDS2017 order, camera mm) seen from 45 degrees to the side, top-right corner."""
    h, w = canvas.shape[:2]
    side = max(64, min(h, w) // 3)
    panel = np.full((side, side, 3), 24, np.uint8)
    rel = xyz - xyz.mean(0)
    a = math.radians(45)
    rotated_x = rel[:, 0] * math.cos(a) - rel[:, 2] * math.sin(a)  # turn about the vertical axis
    pts = np.stack([rotated_x, rel[:, 1]], 1) / cube * (0.9 * side) + side / 2
    for finger, chain in FINGERS.items():
        visible = np.zeros(len(xyz), bool)
        visible[list(chain)] = True
        draw_skeleton(panel, pts, list(zip(chain[:-1], chain[1:])), FINGER_RGB[finger], visible=visible, thickness=1)
    cv2.rectangle(panel, (0, 0), (side - 1, side - 1), (160, 160, 160), 1)
    canvas[:side, w - side:] = panel


def _label(canvas: np.ndarray, text: str) -> None:
    h, w = canvas.shape[:2]
    s = max(0.35, min(h, w) / 900)
    cv2.putText(canvas, text, (4, h - 8), cv2.FONT_HERSHEY_SIMPLEX, s, (255, 255, 255), 1, cv2.LINE_AA)
