"""SPIN (Kolotouros et al., ICCV 2019): HMR's regressor in PyTorch, trained with SMPLify in the loop.

The official release (nkolot/SPIN) ships ``model_checkpoint.pt``:
``torch.save`` of ``{'model': state_dict, 'optimizer', 'epoch', ...}``; only
``'model'`` is read. Its network, under the official key names:

- a torchvision-layout ResNet-50 (``conv1``, ``bn1``, ``layer1..4``; no ``fc``)
  on a 224x224 ImageNet-normalised RGB crop, averaged to 2048 features;
- a 3-iteration regressor sharing ``fc1`` (2205->1024) and ``fc2`` (1024->1024)
  with **no** activation between them (dropout off at test time), then
  ``decpose`` (144), ``decshape`` (10), ``deccam`` (3) added to the running
  estimate, which starts from the buffers ``init_pose``, ``init_shape``,
  ``init_cam`` (SMPL's mean pose in 6-D, mean betas, camera [0.9, 0, 0]);
- each joint's 6 numbers become a rotation by Gram-Schmidt (Zhou et al.).

SMPL is posed from the rotation matrices; ``joints3d`` are SMPL's 24 joints.
The camera [s, tx, ty] is a weak perspective one; the demo renders it as a
pinhole camera of focal 5000 px at crop scale, the mesh at
``[tx, ty, 2 * 5000 / (224 s)]``.

Crop rule (demo.py ``process_image``, utils/imutils.py ``crop``): a square of
side ``200 * scale`` around ``centre`` (whole frame: centre (W//2, H//2),
scale max(H, W)/200; OpenPose: the mean of the confident keypoints and 1.2x
their larger extent; box: its centre and larger side), cut from a zero canvas,
contrast-stretched to uint8 over the box and resized to 224 with Pillow's
bilinear filter (what ``scipy.misc.imresize`` did).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from ..checkpoints import build_loaded, load_state_dict_strict, tensor_bytes, torch_load
from ..device import autocast
from ..errors import MeshcliError
from ..models.resnet import ResNet
from ..smpl import rot6d_to_rotmat, rotmat_to_axis_angle
from ..types import Person
from .body import BodyPredictor, PersonCrop

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

VARIANTS: dict[str, dict] = {
    # The released model (data/model_checkpoint.pt of fetch_data.sh).
    # Input size, normalisation and joint names (SMPL's 24) are in the weights record.
    "resnet50": {
        "iterations": 3,
        "focal_length": 5000.0,  # px at crop resolution (constants.FOCAL_LENGTH)
        "box_rescale": 1.2,  # OpenPose keypoint box enlargement (demo.py)
    },
}
DEFAULT_VARIANT = next(iter(VARIANTS))

NUM_POSE_6D = 24 * 6


class SpinNet(ResNet):
    """SPIN's ``HMR`` module; ``forward`` -> rotation matrices (N,24,3,3), betas (N,10), camera (N,3)."""

    def __init__(self, iterations: int = 3):
        super().__init__()
        self.iterations = iterations
        width = self.num_features + NUM_POSE_6D + 10 + 3
        self.fc1 = nn.Linear(width, 1024)
        self.fc2 = nn.Linear(1024, 1024)
        self.decpose = nn.Linear(1024, NUM_POSE_6D)
        self.decshape = nn.Linear(1024, 10)
        self.deccam = nn.Linear(1024, 3)
        # Untrained start: every joint at the identity, the root turned pi about x (upright
        # in camera coordinates), camera s 0.9; the official checkpoint holds SMPL's mean pose.
        pose = torch.tensor([1.0, 0, 0, 1, 0, 0]).repeat(24)
        pose[3] = -1.0
        self.register_buffer("init_pose", pose[None])
        self.register_buffer("init_shape", torch.zeros(1, 10))
        self.register_buffer("init_cam", torch.tensor([[0.9, 0.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat = super().forward(x)
        n = len(x)
        pose, shape, cam = (b.expand(n, -1) for b in (self.init_pose, self.init_shape, self.init_cam))
        for _ in range(self.iterations):
            xc = self.fc2(self.fc1(torch.cat([feat, pose, shape, cam], 1)))
            pose = self.decpose(xc) + pose
            shape = self.decshape(xc) + shape
            cam = self.deccam(xc) + cam
        return rot6d_to_rotmat(pose).reshape(n, 24, 3, 3), shape, cam


def load_weights(path: str | Path, holds: int) -> dict[str, torch.Tensor]:
    """The network state dict of SPIN's ``model_checkpoint.pt`` (its ``'model'`` entry; ``holds``: SpinNet's
    tensor bytes)."""
    obj = torch_load(path, holds)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj["model"]
    raise MeshcliError(path, "not a SPIN checkpoint: expected a dict with a 'model' state dict "
                             "(data/model_checkpoint.pt of SPIN's fetch_data.sh)",
                       "download model_checkpoint.pt again (`meshcli weights fetch spin`)")


def validate_checkpoint(path: Path, variant: str = DEFAULT_VARIANT) -> None:
    net = SpinNet(VARIANTS[variant]["iterations"])
    load_state_dict_strict(net, load_weights(path, tensor_bytes(net)), path, "SPIN network")


# ------------------------------------------------------------------ crop rule

def crop_parameters(person: Person, image_size: tuple[int, int], rescale: float = 1.2
                    ) -> tuple[np.ndarray, float]:
    """(centre (x, y), scale) of SPIN's demo rule; the crop is a square of side 200 * scale."""
    h, w = image_size
    if person.kind == "frame":
        return np.array([w // 2, h // 2], np.float64), max(h, w) / 200
    if person.kind == "keypoints":
        kps = person.keypoints
        xy = kps[kps[:, 2] > 0.2, :2]
        extent = float((xy.max(0) - xy.min(0)).max())
        return xy.mean(0), extent / 200.0 * rescale
    # a box, handled as the demo's [x, y, w, h] float32 bbox json
    x0, y0, x1, y1 = person.box
    bbox = np.array([x0, y0, x1 - x0, y1 - y0], np.float32)
    return (bbox[:2] + np.float32(0.5) * bbox[2:]).astype(np.float64), float(max(bbox[2], bbox[3]) / 200.0)


def crop_corners(centre: np.ndarray, scale: float, size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """Top-left and bottom-right (exclusive) image pixels of the crop box.

    SPIN maps the crop's corners back through the inverse of its crop
    similarity and truncates toward zero; doing the same arithmetic keeps the
    box (which can be 1 px off square) identical.
    """
    h = 200.0 * scale
    t = np.array([[size / h, 0.0, size * (-float(centre[0]) / h + 0.5)],
                  [0.0, size / h, size * (-float(centre[1]) / h + 0.5)],
                  [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(t)
    ul = (inv @ np.array([0.0, 0.0, 1.0]))[:2].astype(np.int64)
    br = (inv @ np.array([float(size), float(size), 1.0]))[:2].astype(np.int64)
    return ul, br


MAX_BOX_PIXELS = 16_000_000  # a larger box is reduced before it is built (see crop_image)


def crop_image(image: np.ndarray, ul: np.ndarray, br: np.ndarray, size: int = 224,
               max_box_pixels: int = MAX_BOX_PIXELS) -> np.ndarray:
    """The box [ul, br) on a zero canvas, contrast-stretched to uint8, resized to size x size (Pillow bilinear).

    ``scipy.misc.imresize`` byte-scaled its float box over the box's full range
    (zero border included) before resizing. The box holds only uint8 values and
    zeros, so a 256-entry table of that stretch gives the same bytes without a
    float copy of the box. A box far larger than the image (a 20000-px box around a
    small image) would need gigabytes: it is built at 1/k of its size (k the
    smallest integer that fits ``max_box_pixels``, the image area-averaged into it),
    which the network sees as the same picture up to interpolation.
    """
    h, w = image.shape[:2]
    x0, x1 = max(0, ul[0]), min(w, br[0])
    y0, y1 = max(0, ul[1]), min(h, br[1])
    shape = (max(1, br[1] - ul[1]), max(1, br[0] - ul[0]), 3)
    inside = image[y0:y1, x0:x1] if x1 > x0 and y1 > y0 else image[:0, :0]
    values = [int(inside.min()), int(inside.max())] if inside.size else []
    if inside.shape[:2] != shape[:2]:
        values.append(0)  # the zero border takes part in the range
    lo, hi = min(values), max(values)
    lut = (((np.arange(256, dtype=np.float64) - lo) * (255.0 / (hi - lo or 1.0))).clip(0, 255) + 0.5).astype(np.uint8)
    k = int(np.ceil(np.sqrt(shape[0] * shape[1] / max_box_pixels)))
    if k > 1:
        shape = (-(-shape[0] // k), -(-shape[1] // k), 3)
        top, left = (y0 - ul[1]) // k, (x0 - ul[0]) // k
        if inside.size:
            inside = cv2.resize(inside, (max(1, min(shape[1] - left, round(inside.shape[1] / k))),
                                         max(1, min(shape[0] - top, round(inside.shape[0] / k)))),
                                interpolation=cv2.INTER_AREA)
    else:
        top, left = y0 - ul[1], x0 - ul[0]
    box = np.full(shape, lut[0], np.uint8)
    if inside.size:
        box[top:top + inside.shape[0], left:left + inside.shape[1]] = lut[inside]
    return np.asarray(Image.fromarray(box, "RGB").resize((size, size), Image.BILINEAR))


def normalise(crop: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW, ImageNet mean/std (float32 arithmetic, as torchvision's Normalize)."""
    x = crop.astype(np.float32) / np.float32(255.0)
    return ((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).copy()


# ------------------------------------------------------------------ predictor

class SpinPredictor(BodyPredictor):
    """SPIN over a person source; see the module docstring (Python API: ``predictor(frames)``)."""

    method = "spin"
    openpose_choice = "first"  # demo.py reads people[0]

    def __init__(self, weights: str | Path | None, variant: str | None = None,
                 device: str | torch.device = "cpu", **options):
        super().__init__(weights, variant, device, **options)
        cfg = VARIANTS[self.variant]
        self.focal = cfg["focal_length"]
        self.rescale = cfg["box_rescale"]
        self.net = build_loaded(lambda: SpinNet(cfg["iterations"]), weights, load_weights, "SPIN network")
        self.net.eval().to(self.device)

    def crop(self, image: np.ndarray, person: Person) -> PersonCrop:
        centre, scale = crop_parameters(person, image.shape[:2], self.rescale)
        ul, br = crop_corners(centre, scale, self.crop_size)
        crop = crop_image(image, ul, br, self.crop_size)
        region = np.concatenate([ul, br]).astype(np.float64)
        return PersonCrop(normalise(crop), region, {})

    def regress(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast(self.device, self.half):
            rotmat, betas, cam = self.net(x)
        rotmat, betas, cam = rotmat.float(), betas.float(), cam.float()  # SMPL and the cameras stay float32
        body = self.smpl(betas, rotmat)
        pose = rotmat_to_axis_angle(rotmat)
        return {"global_orient": pose[:, 0], "body_pose": pose[:, 1:].reshape(len(x), -1), "betas": betas,
                "cam": cam, "joints3d": body.joints, "vertices": body.vertices}

    def to_image(self, crop: PersonCrop, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        s, tx, ty = out["cam"]
        half = np.float32(self.crop_size / 2)
        cam_t = np.array([tx, ty, 2 * np.float32(self.focal) / (2 * half * s + np.float32(1e-9))], np.float32)
        # The demo's crop camera (focal 5000, centre 112 with pixel edges at integers) carried
        # through the crop box's scaling to the image, in OpenCV's pixel-centre coordinates.
        ul, br = crop.region[:2], crop.region[2:]
        focal = self.focal * (br - ul) / self.crop_size
        centre = (ul + br) / 2 - 0.5
        p = out["joints3d"].astype(np.float64) + cam_t
        return {"joints2d": focal * p[:, :2] / p[:, 2:] + centre, "cam_t": cam_t,
                "focal_length": focal, "principal_point": centre}

    @torch.no_grad()
    def body_from_parameters(self, betas: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(joints3d, vertices) of SMPL parameters (betas (P, 10), axis-angle pose (P, 72)): SPIN's joints
        are SMPL's own 24."""
        body = self.smpl(*(torch.as_tensor(a, dtype=torch.float32, device=self.device) for a in (betas, pose)))
        return body.joints.cpu().numpy(), body.vertices.cpu().numpy()

    def project(self, cam: np.ndarray, joints3d: np.ndarray, focal_length: np.ndarray,
                principal_point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cam_t, joints2d) of rows, as ``to_image`` computes them: the crop's pinhole camera in the image."""
        s, t = cam[:, :1], cam[:, 1:]
        cam_t = np.concatenate([t, 2 * self.focal / (self.crop_size * s + 1e-9)], 1)
        p = joints3d + cam_t[:, None]
        return cam_t, focal_length[:, None] * p[..., :2] / p[..., 2:] + principal_point[:, None]
