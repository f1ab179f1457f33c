"""I2L-MeshNet (Moon & Lee, ECCV 2020): SMPL body meshes from image-to-lixel 1-D heatmaps.

Per person, as the official test-time code (mks0601/I2L-MeshNet_RELEASE, demo/demo.py)
runs it:

1. The box is clipped to the image, made square and enlarged 1.25x; that region is
   warped to a 256x256 crop with ``cv2.warpAffine`` (RGB, values /255, no mean/std).
2. Pose backbone (ResNet-50) -> PoseNet: 29 joints, each coordinate the soft-argmax of
   a 64-bin 1-D heatmap ("lixels") along x, y and depth.
3. 3-D Gaussian heatmaps of those joints + the backbone's early features -> Pose2Feat ->
   mesh backbone (ResNet-50 layer1..4) -> MeshNet: 6890 vertices in lixel space. This
   is the *lixel* stage.
4. *Param* stage: 29 joints regressed from the lixel mesh -> ParamRegressor -> 6-D
   rotations -> axis-angle + 10 betas -> SMPL -> mesh relative to its pelvis.
5. Back to the camera: lixels -> crop pixels -> image pixels (inverse crop affine),
   depth bins -> metres within a 2 m cube around the root, the root at a fixed depth
   (the demo's RootNet constant, 11.25 m) and a pinhole camera (focal 1500 px,
   principal point at the image centre unless told otherwise).

Checkpoint: the trainer's ``snapshot_N.pth.tar`` = ``{'epoch', 'network', 'optimizer'}``,
the network's keys prefixed ``module.`` (DataParallel). The official demo loads it with
``strict=False``; here every network key must be present and used, or loading fails
naming the key. ``optimizer`` and ``epoch`` are training state and are not read.

The snapshot also holds ``human_model_layer.th_{betas, shapedirs, posedirs, v_template,
J_regressor, weights, faces}``: the persistent buffers of the SMPL layer (smplpytorch)
the official model builds, i.e. a float32 copy of the neutral SMPL model
(``basicModel_neutral_lbs_10_207_0_v1.0.0.pkl``) it was trained with plus a zero
betas vector. They are not network weights: meshcli checks their names and shapes and
takes the body model from the SMPL file the user imported (``--smpl``) instead, so
nothing of the licensed model is read out of a weights file.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from ..checkpoints import load_state_dict_strict, tensor_bytes, torch_load
from ..device import autocast
from ..draw import person_colours, track_labels
from ..errors import MeshcliError
from ..models.resnet import ResNet
from ..options import parse_floats
from ..people import FixedBox
from ..records import record_for
from ..smpl import SMPLModel, rot6d_to_rotmat, rotmat_to_axis_angle
from ..types import BodyResult, Person
from . import METHODS
from .body import BodyFrame, BodyPredictor, PersonCrop

# I2L adds five face points to SMPL's 24 joints, each one vertex of the mesh.
# The 5 face points after SMPL's 24 joints (the record's joint names), as SMPL vertex indices.
FACE_POINTS = {"nose": 331, "left_eye": 2802, "right_eye": 6262, "left_ear": 3489, "right_ear": 3990}
VARIANTS: dict[str, dict] = {
    # The released body models (demo snapshot_8, the Human3.6M / 3DPW test models) all
    # share this configuration: main/config.py with an SMPL test set.
    "body": {
        "input_size": (256, 256),  # (height, width) of the crop
        "heatmap_bins": 64,  # lixels per axis (output_hm_shape 64x64x64)
        "sigma": 2.5,  # lixels, of the 3-D joint heatmaps fed to Pose2Feat
        "bbox_enlarge": 1.25,
        "bbox_3d_size": 2.0,  # metres covered by the 64 depth bins
        "num_vertices": 6890,
    },
}
DEFAULT_VARIANT = next(iter(VARIANTS))

# Demo defaults for the camera (demo/demo.py): a 1500 px focal length and a root depth
# that RootNet gave for the demo image (11250.5732421875 mm).
DEFAULT_FOCAL = 1500.0
DEFAULT_ROOT_DEPTH = 11.2505732421875
STAGES = ("lixel", "param")

# SMPL layer buffers stored in official snapshots; see the module docstring.
SMPL_BUFFER_SHAPES = {
    "th_betas": (1, 10),
    "th_shapedirs": (6890, 3, 10),
    "th_posedirs": (6890, 3, 207),
    "th_v_template": (1, 6890, 3),
    "th_J_regressor": (24, 6890),
    "th_weights": (6890, 24),
    "th_faces": (13776, 3),
}
SMPL_BUFFER_PREFIX = "human_model_layer."
SMPL_BUFFER_BYTES = 8 * sum(int(np.prod(shape)) for shape in SMPL_BUFFER_SHAPES.values())  # at most 8-byte values


# ----------------------------------------------------------------------------- network

class LixelHead(nn.Module):
    """PoseNet (29 joints) and MeshNet (6890 vertices): 1-D heatmap logits per point and axis.

    x and y come from upsampled features averaged over the other image axis; depth has
    no image axis, so it comes from the pooled backbone feature through one wide layer
    that is reshaped into 256 channels x ``bins`` depth positions.
    """

    def __init__(self, num_points: int, bins: int = 64, in_channels: int = 2048, width: int = 256):
        super().__init__()
        self.bins, self.width = bins, width
        layers, c = [], in_channels
        for _ in range(3):
            layers += [nn.ConvTranspose2d(c, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            c = width
        self.deconv = nn.Sequential(*layers)
        self.conv_x = nn.Sequential(nn.Conv1d(width, num_points, 1))
        self.conv_y = nn.Sequential(nn.Conv1d(width, num_points, 1))
        self.conv_z_1 = nn.Sequential(nn.Conv1d(in_channels, width * bins, 1), nn.BatchNorm1d(width * bins),
                                      nn.ReLU())
        self.conv_z_2 = nn.Sequential(nn.Conv1d(width, num_points, 1))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """(B, 2048, h, w) backbone features -> logits (B, 3 [x, y, z], num_points, bins)."""
        up = self.deconv(feat)  # (B, 256, bins, bins)
        logits_x = self.conv_x(up.mean(2))
        logits_y = self.conv_y(up.mean(3))
        depth_feat = self.conv_z_1(feat.mean((2, 3))[:, :, None]).view(-1, self.width, self.bins)
        logits_z = self.conv_z_2(depth_feat)
        return torch.stack((logits_x, logits_y, logits_z), 1)


def soft_argmax_1d(logits: torch.Tensor) -> torch.Tensor:
    """(B, 3, N, bins) logits -> (B, N, 3) expected bin index along each axis."""
    prob = torch.softmax(logits, -1)
    bins = torch.arange(logits.shape[-1], dtype=prob.dtype, device=prob.device)
    return (prob * bins).sum(-1).transpose(1, 2)


def gaussian_heatmaps(joints: torch.Tensor, bins: int, sigma: float) -> torch.Tensor:
    """(B, J, 3) lixel coordinates -> unnormalised 3-D Gaussians (B, J, z, y, x).

    exp(-(dx² + dy² + dz²) / 2σ²) factorises per axis: three small 1-D profiles
    multiplied out give the same numbers (to float32 rounding) without materialising the
    (B, J, 64³) coordinate differences.
    """
    grid = torch.arange(bins, dtype=joints.dtype, device=joints.device)
    g = torch.exp(-(((grid - joints[..., None]) / sigma) ** 2) / 2)  # (B, J, 3, bins)
    gx, gy, gz = g[:, :, 0], g[:, :, 1], g[:, :, 2]
    return gz[:, :, :, None, None] * gy[:, :, None, :, None] * gx[:, :, None, None, :]


class Pose2Feat(nn.Module):
    """Early image features + the joints' 3-D heatmaps (depth folded into channels) -> 64 channels."""

    def __init__(self, num_joints: int, bins: int = 64, feat_channels: int = 64):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(feat_channels + num_joints * bins, feat_channels, 3, padding=1),
                                  nn.BatchNorm2d(feat_channels), nn.ReLU())

    def forward(self, feat: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        b, j, d, h, w = heatmaps.shape
        return self.conv(torch.cat((feat, heatmaps.reshape(b, j * d, h, w)), 1))


class ParamRegressor(nn.Module):
    """29 lixel joints (raw lixel units) -> 24 6-D joint rotations (144) and 10 betas."""

    def __init__(self, num_joints: int = 29, num_rot: int = 24, num_betas: int = 10):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(num_joints * 3, 1024), nn.BatchNorm1d(1024), nn.ReLU(),
                                nn.Linear(1024, 512), nn.BatchNorm1d(512), nn.ReLU())
        self.fc_pose = nn.Sequential(nn.Linear(512, num_rot * 6))
        self.fc_shape = nn.Sequential(nn.Linear(512, num_betas))

    def forward(self, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.fc(joints.reshape(len(joints), -1))
        return self.fc_pose(feat), self.fc_shape(feat)


class I2LMeshNet(nn.Module):
    """The official ``Model``'s network modules, under the official attribute names.

    ``forward`` runs the lixel stage; ``param_regressor`` is run by ``param_stage``.
    The mesh backbone's ``conv1``/``bn1`` are in every checkpoint but unused at test
    time: Pose2Feat's output goes straight into its ``layer1``.
    """

    def __init__(self, num_joints: int = 29, num_vertices: int = 6890, bins: int = 64, sigma: float = 2.5):
        super().__init__()
        self.bins, self.sigma = bins, sigma
        self.pose_backbone = ResNet()
        self.pose_net = LixelHead(num_joints, bins, self.pose_backbone.num_features)
        self.pose2feat = Pose2Feat(num_joints, bins)
        self.mesh_backbone = ResNet()
        self.mesh_net = LixelHead(num_vertices, bins, self.mesh_backbone.num_features)
        self.param_regressor = ParamRegressor(num_joints)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, 256, 256) crops -> joints (B, 29, 3) and vertices (B, 6890, 3), in lixels."""
        early = self.pose_backbone.stem(img)
        joints = soft_argmax_1d(self.pose_net(self.pose_backbone.stages(early)))
        feat = self.pose2feat(early, gaussian_heatmaps(joints, self.bins, self.sigma))
        vertices = soft_argmax_1d(self.mesh_net(self.mesh_backbone.stages(feat)))
        return joints, vertices


def joint_regressor_29(j_regressor: torch.Tensor) -> torch.Tensor:
    """SMPL's (24, 6890) joint regressor + one-hot rows for I2L's five face points."""
    face = torch.zeros(len(FACE_POINTS), j_regressor.shape[1], dtype=j_regressor.dtype, device=j_regressor.device)
    face[torch.arange(len(FACE_POINTS)), torch.tensor(list(FACE_POINTS.values()))] = 1
    return torch.cat((j_regressor, face))


@dataclass
class ParamOutput:
    """The parameter stage for B people."""

    joints_lixel: torch.Tensor  # (B, 29, 3) joints regressed from the lixel mesh: the regressor's input
    pose6d: torch.Tensor  # (B, 144)
    rotmat: torch.Tensor  # (B, 24, 3, 3)
    pose: torch.Tensor  # (B, 72) axis-angle, joint 0 = global orientation
    betas: torch.Tensor  # (B, 10)
    vertices: torch.Tensor  # (B, 6890, 3) SMPL output
    pelvis: torch.Tensor  # (B, 3) its pelvis, regressed from the posed mesh
    mesh: torch.Tensor  # (B, 6890, 3) the same relative to the pelvis


def param_stage(regressor: ParamRegressor, smpl: SMPLModel, joint_regressor: torch.Tensor,
                joints_lixel: torch.Tensor) -> ParamOutput:
    """29 lixel joints -> SMPL pose and shape -> pelvis-relative mesh (metres)."""
    pose6d, betas = regressor(joints_lixel)
    rotmat = rot6d_to_rotmat(pose6d)
    # Through axis-angle and back inside SMPL, as the official model does.
    pose = rotmat_to_axis_angle(rotmat).reshape(len(pose6d), -1)
    vertices, pelvis = mesh_and_pelvis(smpl, joint_regressor, betas, pose)
    return ParamOutput(joints_lixel, pose6d, rotmat, pose, betas, vertices, pelvis, vertices - pelvis[:, None])


def mesh_and_pelvis(smpl: SMPLModel, joint_regressor: torch.Tensor, betas: torch.Tensor,
                    pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SMPL's mesh (B, 6890, 3) of (B, 10) betas and (B, 72) axis-angle pose, and its pelvis (B, 3) as I2L
    regresses it from the mesh."""
    vertices = smpl(betas, pose).vertices
    return vertices, torch.einsum("v,bvc->bc", joint_regressor[0], vertices)


# ----------------------------------------------------------------------------- checkpoint

def read_snapshot(path: str | Path, net: I2LMeshNet) -> dict[str, torch.Tensor]:
    """The ``network`` state of an official snapshot for ``net``, keys as stored (``module.`` prefix)."""
    ckpt = torch_load(path, tensor_bytes(net) + SMPL_BUFFER_BYTES)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("network"), Mapping):
        found = ", ".join(map(repr, list(ckpt)[:5])) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise MeshcliError(path, f"not an I2L-MeshNet snapshot: no 'network' entry (found {found})",
                           "use the official snapshot_N.pth.tar ({'epoch', 'network', 'optimizer'})")
    return dict(ckpt["network"])


def network_state(state: Mapping[str, torch.Tensor], path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The network weights without the SMPL layer buffers, and the key prefix ("module." or "").

    The buffers are optional (a snapshot stripped of the licensed model still loads)
    but, where present, must be the known ones with SMPL's shapes: a MANO (hand)
    snapshot fails here, naming the key.
    """
    prefix = "module." if any(k.startswith("module.") for k in state) else ""
    smpl_prefix = prefix + SMPL_BUFFER_PREFIX
    network = {}
    for key, value in state.items():
        if not key.startswith(smpl_prefix):
            network[key] = value
            continue
        name = key[len(smpl_prefix):]
        if name not in SMPL_BUFFER_SHAPES:
            raise MeshcliError(path, f"unexpected key {key!r}: not a buffer of the SMPL body layer",
                               "this is not a body (SMPL) I2L-MeshNet snapshot; use the official body snapshot")
        if tuple(value.shape) != SMPL_BUFFER_SHAPES[name]:
            raise MeshcliError(path, f"{key!r} has shape {tuple(value.shape)}, SMPL's is {SMPL_BUFFER_SHAPES[name]}",
                               "use the official body (SMPL) I2L-MeshNet snapshot")
    return network, prefix


def _prefixed(net: nn.Module, prefix: str) -> nn.Module:
    # DataParallel's layout: the network under the attribute "module", so the strict
    # loader's messages name keys exactly as the file stores them.
    return nn.ModuleDict({"module": net}) if prefix else net


def param_head_trained(network: Mapping[str, torch.Tensor], prefix: str = "") -> bool:
    """Whether the parameter stage was trained: lixel-stage training never runs the
    ParamRegressor, so its BatchNorm statistics keep their initial mean 0 / variance 1."""
    mean = network[f"{prefix}param_regressor.fc.1.running_mean"]
    var = network[f"{prefix}param_regressor.fc.1.running_var"]
    return bool(mean.abs().max() > 0 or (var - 1).abs().max() > 0)


def load_network(path: str | Path, variant: str = DEFAULT_VARIANT,
                 net: I2LMeshNet | None = None) -> tuple[I2LMeshNet, bool]:
    """Strictly load an official snapshot; returns the network and whether its param head is trained."""
    net = net if net is not None else build_network(variant)
    network, prefix = network_state(read_snapshot(path, net), path)
    load_state_dict_strict(_prefixed(net, prefix), network, path, what=f"I2L-MeshNet {variant} network")
    return net, param_head_trained(network, prefix)


def build_network(variant: str = DEFAULT_VARIANT) -> I2LMeshNet:
    cfg = VARIANTS[variant]
    return I2LMeshNet(len(record_for("i2l", variant).joint_names), cfg["num_vertices"], cfg["heatmap_bins"],
                      cfg["sigma"])


def validate_checkpoint(path: Path, variant: str) -> None:
    """Check every tensor name and shape of a snapshot against the architecture (no values copied)."""
    variant = METHODS["i2l"].choose_variant(variant)
    with torch.device("meta"):  # shapes only: copying into meta tensors is a no-op
        net = build_network(variant)
    network, prefix = network_state(read_snapshot(path, net), path)
    load_state_dict_strict(_prefixed(net, prefix), network, path, what=f"I2L-MeshNet {variant} network")


# ----------------------------------------------------------------------------- crop

def crop_region(box_xywh, width: int, height: int, aspect: float = 1.0, enlarge: float = 1.25
                ) -> np.ndarray | None:
    """The image region (x, y, w, h; float64) a person box is cropped from, or None when it misses the image.

    The box's top-left is clipped to the image and its far corner to the last pixel
    (a box loses one pixel each way, as in I2L's data loaders); the short side then grows
    to the crop's aspect (w/h) and both grow by ``enlarge``, about the box's centre.
    """
    x, y, w, h = (float(v) for v in box_xywh)
    start = np.maximum([x, y], 0.0)
    end = np.minimum([width - 1.0, height - 1.0], start + np.maximum([w - 1, h - 1], 0.0))
    extent = end - start
    if not w * h > 0 or (extent < 0).any() or not extent.any():
        return None
    centre = start + extent / 2.0
    # Grow the short side only: (w, h) -> (max(w, h * aspect), max(h, w / aspect)).
    extent = np.maximum(extent, [extent[1] * aspect, extent[0] / aspect]) * enlarge
    return np.concatenate([centre - extent / 2.0, extent])


def crop_transforms(bbox: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image->crop and crop->image affines (2x3 float32) mapping the box onto the whole crop.

    Solved by OpenCV from three float32 point pairs (centre, bottom-middle, right-middle),
    as the official code does, so the matrices match it bit for bit.
    """
    out_h, out_w = out_hw
    w, h = float(bbox[2]), float(bbox[3])
    centre = np.array([bbox[0] + 0.5 * w, bbox[1] + 0.5 * h], np.float32)
    src = np.stack([centre, centre + np.array([0, h * 0.5], np.float32),
                    centre + np.array([w * 0.5, 0], np.float32)])
    dst = np.array([[out_w * 0.5, out_h * 0.5], [out_w * 0.5, out_h], [out_w, out_h * 0.5]], np.float32)
    return (cv2.getAffineTransform(src, dst).astype(np.float32),
            cv2.getAffineTransform(dst, src).astype(np.float32))


def crop_input(image_rgb: np.ndarray, trans: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """(3, H, W) float32 network input: the image warped as float32 (so the bilinear
    samples are not rounded to integers), then /255; no mean/std."""
    crop = cv2.warpAffine(image_rgb.astype(np.float32), trans, (out_hw[1], out_hw[0]), flags=cv2.INTER_LINEAR)
    return np.ascontiguousarray(crop.transpose(2, 0, 1)) / np.float32(255)


# ----------------------------------------------------------------------------- camera

def lixel_to_image(points: np.ndarray, inv_trans: np.ndarray, bins: int, in_hw: tuple[int, int],
                   bbox_3d_size: float) -> np.ndarray:
    """(..., 3) lixels -> float32 (u, v) image pixels and depth relative to the root (m).

    (x, y) go lixel -> crop pixel (a crop side per ``bins``) -> image (the inverse crop
    affine), composed into one affine; depth bins span ``bbox_3d_size`` metres centred on the root.
    """
    lixel_to_crop = np.diag(np.array([in_hw[1], in_hw[0]], np.float32) / np.float32(bins))
    linear = np.asarray(inv_trans, np.float32)[:, :2] @ lixel_to_crop
    p = np.asarray(points, np.float32)
    uv = p[..., :2] @ linear.T + np.asarray(inv_trans, np.float32)[:, 2]
    depth = p[..., 2:] * np.float32(bbox_3d_size / bins) - np.float32(bbox_3d_size / 2)
    return np.concatenate([uv, depth], -1)


def pixel_to_camera(uvz: np.ndarray, focal, principal) -> np.ndarray:
    """Pinhole back-projection of (..., 3) (u, v, depth) rows; keeps the input's float type."""
    depth = uvz[..., 2:]
    principal, focal = np.asarray(principal, uvz.dtype), np.asarray(focal, uvz.dtype)
    return np.concatenate(((uvz[..., :2] - principal) / focal * depth, depth), -1)


def to_camera(joints_lixel: np.ndarray, mesh_lixel: np.ndarray, inv_trans: np.ndarray, root_row: np.ndarray,
              focal, principal, root_depth: float, cfg: dict, mesh_param: np.ndarray | None = None
              ) -> dict[str, np.ndarray]:
    """One person's lixel outputs (and param mesh) -> image and camera space, as demo.py does it.

    The root is SMPL's pelvis row applied to the lixel mesh in image space, put at
    ``root_depth``; lixel depths are relative to it. The param mesh is pelvis-relative
    and is moved to the root's camera position. Returns ``mesh_img`` / ``joints_img``
    (u, v px; depth m), ``root_img`` / ``root_cam`` (float64), ``mesh_cam`` and, given
    ``mesh_param``, ``mesh_cam_param`` (m).
    """
    def to_image(points):
        return lixel_to_image(points, inv_trans, cfg["heatmap_bins"], cfg["input_size"], cfg["bbox_3d_size"])

    mesh_img = to_image(mesh_lixel)
    root_img = np.array([*(root_row @ mesh_img[:, :2]), root_depth])  # float64, as the demo
    root_cam = pixel_to_camera(root_img, focal, principal)
    mesh_img[:, 2] += root_depth
    joints_img = to_image(joints_lixel)
    joints_img[:, 2] += root_depth
    out = {"mesh_img": mesh_img, "joints_img": joints_img, "root_img": root_img, "root_cam": root_cam,
           "mesh_cam": pixel_to_camera(mesh_img, focal, principal)}
    if mesh_param is not None:
        out["mesh_cam_param"] = (mesh_param.astype(np.float64) + root_cam).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- predictor

class I2LPredictor(BodyPredictor):
    """I2L-MeshNet over a person source: lixel mesh and joints, SMPL parameters and mesh.

    ``stage`` picks the mesh the overlay shows (``lixel`` or ``param``); the NPZ holds
    the parameter stage whenever the snapshot's parameter head is trained. People come
    from ``bbox`` (x, y, w, h, the same box in every frame) or a ``people`` source
    (meshcli.people). The camera: ``focal`` (px; f or (fx, fy)), ``principal_point``
    (px; default the image centre) and ``root_depth`` (m from the camera to the pelvis);
    the defaults are the official demo's.

    NPZ rows per person: ``bbox`` (x0, y0, x1, y1, as every body method), ``joints_img``
    (29, 3) the PoseNet joints in image pixels + depth (m), ``global_orient`` (3),
    ``body_pose`` (69), ``betas`` (10); with ``save_vertices`` ``mesh_cam`` (the lixel
    mesh) and ``mesh_cam_param`` (the SMPL mesh) in camera space, metres.
    """

    method = "i2l"
    meshes_in_camera_space = True  # both of its meshes come out in camera space

    def __init__(self, weights: str | Path | None, variant: str | None = None,
                 device: str | torch.device = "cpu", *, stage: str = "lixel", bbox=None, focal=DEFAULT_FOCAL,
                 principal_point=None, root_depth: float = DEFAULT_ROOT_DEPTH, **options):
        if stage not in STAGES:
            raise MeshcliError(None, f"unknown --stage {stage!r}", "use lixel or param")
        if bbox is not None:
            if options.get("people") is not None:
                raise MeshcliError(None, "--bbox was given together with another person source",
                                   "use --bbox for one fixed box, or --boxes / --detector")
            options["people"] = FixedBox(bbox)
        self.focal = parse_floats(focal, 2, "--focal", "1500 or 1500,1500")
        self.principal_point = (None if principal_point is None
                                else parse_floats(principal_point, 2, "--principal-point", "320,240"))
        self.root_depth = float(root_depth)
        if not (min(self.focal) > 0 and 0 < self.root_depth < np.inf):
            raise MeshcliError(None, "--focal and --root-depth must be positive", "e.g. --focal 1500 --root-depth 5")
        super().__init__(weights, variant, device, **options)
        self.stage = stage
        self.config = VARIANTS[self.variant]
        self.crop_hw = self.config["input_size"]
        self.crop_size = self.crop_hw[1]
        self.net = build_network(self.variant)
        if weights is not None:
            _, self.param_trained = load_network(weights, self.variant, self.net)
        else:
            self.param_trained = True  # random weights: run every stage (outputs are stamped untrained)
        if stage == "param" and not self.param_trained:
            raise MeshcliError(weights, "the parameter head of this snapshot is untrained (a lixel-stage snapshot)",
                               "use --stage lixel, or a param-stage snapshot")
        self.net.eval().to(self.device)
        self.joint_regressor = joint_regressor_29(self.smpl.j_regressor.float())
        # The demo takes the root from SMPL's pelvis row, in float32 numpy.
        self.root_row = self.smpl.j_regressor[0].float().cpu().numpy()

    def camera(self, image_hw: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
        """(focal, principal point) for an image of this size."""
        h, w = image_hw
        return self.focal, self.principal_point or (w / 2, h / 2)

    # -- pipeline steps

    def crop(self, image: np.ndarray, person: Person) -> PersonCrop:
        h, w = image.shape[:2]
        xywh = np.r_[person.box[:2], person.box[2:] - person.box[:2]]
        square = crop_region(xywh, w, h, self.crop_hw[1] / self.crop_hw[0], self.config["bbox_enlarge"])
        if square is None:
            raise MeshcliError(None, f"person box {np.round(person.box, 1).tolist()} (x0, y0, x1, y1) lies outside "
                                     f"the {w}x{h} image", "give boxes in the image's pixels")
        trans, inv_trans = crop_transforms(square, self.crop_hw)
        region = np.r_[square[:2], square[:2] + square[2:]]
        return PersonCrop(crop_input(image, trans, self.crop_hw), region, {"inv_trans": inv_trans})

    def regress(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast(self.device, self.half):
            joints, vertices = self.net(x)
        joints, vertices = joints.float(), vertices.float()  # the parameter stage and SMPL stay float32
        out = {"joint_coord_img": joints, "mesh_coord_img": vertices}
        if self.param_trained:
            param = param_stage(self.net.param_regressor, self.smpl, self.joint_regressor,
                                self.joint_regressor @ vertices)
            out.update(pose=param.pose, betas=param.betas, mesh_coord_cam=param.mesh, pelvis=param.pelvis)
        return out

    def postprocess(self, prepared: BodyFrame, raw: dict[str, np.ndarray]) -> BodyResult:
        if not prepared.crops:
            return BodyResult(prepared.index, self.empty_rows())
        focal, principal = self.camera(prepared.image_size)
        people: list[dict[str, np.ndarray]] = []
        for k, crop in enumerate(prepared.crops):
            cam = to_camera(raw["joint_coord_img"][k], raw["mesh_coord_img"][k], crop.params["inv_trans"],
                            self.root_row, focal, principal, self.root_depth, self.config,
                            raw["mesh_coord_cam"][k] if self.param_trained else None)
            person = {"joints_img": cam["joints_img"], "mesh_cam": cam["mesh_cam"]}
            if self.param_trained:
                pose = raw["pose"][k]
                # the parameter mesh is SMPL's moved by cam_t (its pelvis to the root's camera position)
                person.update(global_orient=pose[:3], body_pose=pose[3:], betas=raw["betas"][k],
                              cam_t=cam["root_cam"] - raw["pelvis"][k], mesh_cam_param=cam["mesh_cam_param"])
            people.append(person)
        rows = {"bbox": np.stack([p.box for p in prepared.people]).astype(np.float64),
                "principal_point": np.tile(np.asarray(principal, np.float64), (len(people), 1))}  # the one used
        rows.update({k: np.stack([p[k] for p in people]) for k in self.empty_rows() if k not in rows})
        shown = np.stack([p["mesh_cam" if self.stage == "lixel" else "mesh_cam_param"] for p in people])
        return BodyResult(prepared.index, rows, vertices=shown)

    def image_joints(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        return rows["joints_img"][..., :2]

    def param_mesh(self, betas: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mesh (P, 6890, 3), pelvis (P, 3)) of SMPL parameters (betas (P, 10), axis-angle pose (P, 72)) as the
        parameter stage computes them, metres; the temporal stage recomputes smoothed meshes with it."""
        tensors = (torch.as_tensor(a, dtype=torch.float32, device=self.device) for a in (betas, pose))
        with torch.no_grad():
            return tuple(t.cpu().numpy() for t in mesh_and_pelvis(self.smpl, self.joint_regressor, *tensors))

    # -- outputs

    def empty_rows(self) -> dict[str, np.ndarray]:
        j, v = len(self.joint_names), self.config["num_vertices"]
        shapes = {"joints_img": (j, 3)}
        if self.param_trained:
            shapes.update(global_orient=(3,), body_pose=(69,), betas=(10,))
        if self.save_vertices:
            shapes["mesh_cam"] = (v, 3)
            if self.param_trained:
                shapes["mesh_cam_param"] = (v, 3)
        rows = {"bbox": np.zeros((0, 4)), "principal_point": np.zeros((0, 2)),
                **{k: np.zeros((0, *s), np.float32) for k, s in shapes.items()}}
        if self.param_trained:
            rows["cam_t"] = np.zeros((0, 3))
        return rows

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta.update({
            "stage": self.stage,
            "param_stage": self.param_trained,
            "focal": np.array(self.focal),
            "root_depth": self.root_depth,
        })
        return meta

    def annotate(self, image: np.ndarray, result: BodyResult) -> np.ndarray:
        if not result.num_people:
            return image.copy()
        focal, principal = self.camera(image.shape[:2])
        # the meshes are already in camera space: no per-person translation
        colours = person_colours(result.rows, result.num_people)
        out = self.renderer.render(image, result.vertices, np.zeros((result.num_people, 3)), focal, principal,
                                   colours=colours)
        track_labels(out, result.rows, colours)
        return out

