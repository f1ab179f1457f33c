"""HMR (Kanazawa et al., CVPR 2018): SMPL from one person crop, from the official TF checkpoint.

The official release (akanazawa/hmr) is a TensorFlow 1 graph whose only
weights are the checkpoint ``model.ckpt-667589`` (``.index`` +
``.data-00000-of-00001``, in ``models.tar.gz``). meshcli reads that bundle
without TensorFlow (``meshcli.tfcheckpoint``) and maps it onto the same
network in PyTorch:

- encoder: TF-slim ResNet-v2-50 (``meshcli.models.resnet_v2``), 224x224 RGB
  input scaled to [-1, 1], pooled to 2048 features;
- regressor ("3D_module"): iterative error feedback, 3 iterations sharing
  ``fc1`` (2133->1024) - ReLU - ``fc2`` (1024->1024) - ReLU - ``fc3`` (->85),
  ``theta_t = theta_{t-1} + fc(concat[features, theta_{t-1}])`` starting from
  the checkpoint's trained ``mean_param`` (dropout is off at test time);
- theta (85) = camera [s, tx, ty], 24 axis-angle rotations (joint 0 the
  global orientation), 10 betas; SMPL poses the body and HMR's 19 "cocoplus"
  joints are the checkpoint's ``cocoplus_regressor`` applied to the posed
  vertices; the camera is orthographic, ``x = s (X + t)`` in crop units
  where [-1, 1] spans the crop.

Crop rule (demo.py): the frame is scaled so the person is about 150 px tall
(``150 / diagonal`` of the keypoint or person box; ``224 / max(H, W)`` for a
whole frame) and a 224 px window is cut around the scaled centre from the
edge-padded image.

Checkpoint variables the inference graph does not use (Adam slots, the
discriminator ``D/*``, training scalars) are ignored; SMPL's arrays in the
checkpoint are not read (the body model comes from the user's SMPL file),
except ``cocoplus_regressor``, HMR's own joint regressor. ``convert_checkpoint``
stores the mapped tensors once as a torch file with a provenance record;
``--weights`` takes either that file or the TF checkpoint prefix directly.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..checkpoints import build_loaded, load_state_dict_strict, tensor_bytes, torch_load
from ..device import autocast
from ..errors import MeshcliError
from ..models.resnet_v2 import ResNetV2, tf_variable_map as resnet_variable_map
from ..io.smplfile import NUM_COCOPLUS, NUM_VERTS
from ..tfcheckpoint import TFCheckpoint, checkpoint_prefix, is_tf_checkpoint
from ..types import Person, file_sha256
from .body import BodyPredictor, PersonCrop

# Input size, normalisation and the 19 joint names (14 LSP joints, then 5 face points) are in the
# variant's weights record (meshcli.records).
VARIANTS: dict[str, dict] = {
    # The released model: ResNet-v2-50 + 3-iteration IEF, trained on LSP, MPII, COCO
    # (2D) and Human3.6M / MPI-INF-3DHP (3D), checkpoint model.ckpt-667589.
    "resnet50-ief": {
        "iterations": 3,
        "person_height": 150.0,  # px the crop rule scales a keypoint box's diagonal to
        "focal_length": 500.0,  # px at crop resolution, the demo renderer's camera
    },
}
DEFAULT_VARIANT = next(iter(VARIANTS))

NUM_THETA = 85


class IEFRegressor(nn.Module):
    """HMR's "3D_module": iterative error feedback on [features, theta]."""

    def __init__(self, num_features: int = 2048, num_theta: int = NUM_THETA, width: int = 1024):
        super().__init__()
        self.fc1 = nn.Linear(num_features + num_theta, width)
        self.fc2 = nn.Linear(width, width)
        self.fc3 = nn.Linear(width, num_theta)

    def forward(self, feat: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        x = torch.cat([feat, theta], dim=1)
        return theta + self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class HMRNet(nn.Module):
    """Encoder + IEF regressor; ``forward`` returns features (N,2048) and theta per iteration (N,T,85).

    Input: (N, 3, 224, 224) RGB in [-1, 1]. Buffers: ``mean_param`` (1, 85), the
    initial theta, and ``cocoplus_regressor`` (19, 6890), HMR's joints from vertices.
    """

    def __init__(self, iterations: int = 3):
        super().__init__()
        self.iterations = iterations
        self.encoder = ResNetV2(50)
        self.regressor = IEFRegressor(self.encoder.num_features)
        # Untrained start: HMR's initial camera (s 0.9) and the body upright (root pi about x).
        init = torch.zeros(1, NUM_THETA)
        init[0, 0], init[0, 3] = 0.9, np.pi
        self.register_buffer("mean_param", init)
        self.register_buffer("cocoplus_regressor", torch.zeros(NUM_COCOPLUS, NUM_VERTS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.encoder(x)
        theta = self.mean_param.expand(len(x), -1)
        thetas = []
        for _ in range(self.iterations):
            theta = self.regressor(feat, theta)
            thetas.append(theta)
        return feat, torch.stack(thetas, dim=1)


# ------------------------------------------------------------------ the official checkpoint

def _same(a: np.ndarray) -> np.ndarray:
    return a


def _dense(w: np.ndarray) -> np.ndarray:
    return w.T  # TF dense kernel [in, out] -> nn.Linear weight [out, in]


def tf_variable_map(net: HMRNet) -> Iterator[tuple[str, str, Callable[[np.ndarray], np.ndarray]]]:
    """(state-dict key, TF variable, transform) for every tensor HMRNet takes from the checkpoint."""
    yield from resnet_variable_map(net.encoder, prefix="encoder.")
    for i in (1, 2, 3):
        yield f"regressor.fc{i}.weight", f"3D_module/fc{i}/weights", _dense
        yield f"regressor.fc{i}.bias", f"3D_module/fc{i}/biases", _same
    yield "mean_param", "mean_param", _same
    yield "cocoplus_regressor", "cocoplus_regressor", _dense  # stored (6890, 19)


def read_tf_checkpoint(path: str | Path, net: HMRNet | None = None) -> dict[str, torch.Tensor]:
    """HMRNet's full state dict from the official TF checkpoint; unused variables are ignored.

    Raises MeshcliError naming the first missing or mis-shaped variable, before
    reading any tensor data; every tensor read is CRC-checked.
    """
    if net is None:
        with torch.device("meta"):  # only the names and shapes are needed
            net = HMRNet()
    ckpt = TFCheckpoint(path)
    own = net.state_dict()
    plan = list(tf_variable_map(net))
    for key, tf_name, fn in plan:
        if tf_name not in ckpt:
            raise MeshcliError(ckpt.index_path, f"variable {tf_name!r} is missing from the checkpoint",
                               "this is not HMR's model.ckpt-667589 (or it is incomplete); "
                               "get models.tar.gz again with `meshcli weights fetch hmr`")
        entry = ckpt.entries[tf_name]
        got = fn(np.broadcast_to(np.uint8(0), entry.shape)).shape  # the stored shape, transformed
        want = tuple(own[key].shape)
        if got != want:
            raise MeshcliError(ckpt.index_path, f"variable {tf_name!r} has shape {list(entry.shape)}, "
                               f"which does not fit HMR's {key} {list(want)}",
                               "use the official HMR checkpoint (model.ckpt-667589)")
    # BatchNorm's num_batches_tracked has no TF counterpart (and no use at inference)
    state = {k: torch.zeros((), dtype=torch.int64) for k in own if k.endswith("num_batches_tracked")}
    for key, tf_name, fn in plan:
        state[key] = torch.from_numpy(np.ascontiguousarray(fn(ckpt.read(tf_name))))
    return state


def _provenance(prefix: Path) -> dict:
    files = [Path(f"{prefix}.index")] + sorted(prefix.parent.glob(f"{prefix.name}.data-*-of-*"))
    return {
        "format": "tensorflow-v2-bundle",
        "source": prefix.name,
        "files": [{"name": f.name, "size": f.stat().st_size, "sha256": file_sha256(f)} for f in files],
        "converter": f"meshcli {__version__} meshcli.methods.hmr.convert_checkpoint",
        "converted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def convert_checkpoint(src: str | Path, dst: str | Path, variant: str | None = None) -> dict:
    """Convert HMR's TF checkpoint ``src`` (prefix, .index or data shard) into a torch file ``dst``.

    The file holds ``{"state_dict": ..., "provenance": {...}}`` with each source
    file's name, size and sha256; it loads with ``torch.load(weights_only=True)``.
    Returns the provenance record.
    """
    state = read_tf_checkpoint(src)
    provenance = _provenance(checkpoint_prefix(src))
    torch.save({"state_dict": state, "provenance": provenance}, dst)
    return provenance


def load_weights(path: str | Path, holds: int) -> dict[str, torch.Tensor]:
    """HMRNet's state dict from the TF checkpoint (prefix, .index or data shard) or a converted file
    (``holds``: HMRNet's tensor bytes)."""
    if is_tf_checkpoint(path):
        return read_tf_checkpoint(path)
    obj = torch_load(path, holds)
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise MeshcliError(path, "not an HMR checkpoint: expected the TF checkpoint (model.ckpt-667589) "
                                 "or a file converted from it", "pass --weights DIR/model.ckpt-667589")
    return obj["state_dict"]


def validate_checkpoint(path: Path, variant: str = DEFAULT_VARIANT) -> None:
    """Load ``path`` (TF prefix or converted file) strictly into HMRNet; MeshcliError on any mismatch."""
    net = HMRNet(VARIANTS[variant]["iterations"])
    load_state_dict_strict(net, load_weights(path, tensor_bytes(net)), path, "HMR network")


# ------------------------------------------------------------------ crop rule

def crop_parameters(person: Person, image_size: tuple[int, int], size: int = 224,
                    person_height: float = 150.0) -> tuple[float, np.ndarray]:
    """(scale, centre (x, y)) of HMR's demo rule for one person."""
    h, w = image_size
    if person.kind == "frame":
        scale = 1.0 if max(h, w) == size else size / max(h, w)
        centre = np.round(np.array([h, w]) / 2).astype(np.int64)[::-1]  # numpy rounds halves to even
        return scale, centre
    lo, hi = person.box[:2], person.box[2:]
    diagonal = float(np.linalg.norm(hi - lo))
    if diagonal <= 0:
        raise MeshcliError(None, f"a person box of zero size ({person.box.tolist()})",
                           "check the keypoints or boxes given")
    return person_height / diagonal, (lo + hi) / 2


MAX_SCALED_PIXELS = 16_000_000  # above this the crop is sampled directly (see crop_image)


def crop_image(image: np.ndarray, scale: float, centre: np.ndarray, size: int = 224,
               max_scaled_pixels: int = MAX_SCALED_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """HMR's ``scale_and_crop``: (crop uint8 (size,size,3), start point (x, y) in the padded scaled image).

    The scaled image is edge-padded by size/2 on every side and the crop starts
    at the rounded scaled centre; indexing with clamped coordinates gives the
    same pixels without building the padded image. A small person in a large
    frame would need a huge scaled frame: then the crop's pixels are sampled
    straight from the frame with the same bilinear mapping (equal to OpenCV's
    1/32-pixel interpolation precision instead of bit for bit).
    """
    h, w = image.shape[:2]
    new_h, new_w = (max(1, int(n)) for n in np.floor(np.array([h, w]) * scale))
    start = np.round(centre * np.array([new_w / w, new_h / h])).astype(np.int64)
    margin = size // 2
    cols = np.clip(np.arange(size) + start[0] - margin, 0, new_w - 1)
    rows = np.clip(np.arange(size) + start[1] - margin, 0, new_h - 1)
    if new_h * new_w <= max_scaled_pixels:
        scaled = image if (new_h, new_w) == (h, w) else cv2.resize(image, (new_w, new_h))
        return scaled[rows[:, None], cols[None, :]], start
    # cv2.resize samples scaled pixel c at source (c + 0.5) * old / new - 0.5
    map_x = ((cols + 0.5) * (w / new_w) - 0.5).astype(np.float32)
    map_y = ((rows + 0.5) * (h / new_h) - 0.5).astype(np.float32)
    grid_x, grid_y = np.meshgrid(map_x, map_y)
    return cv2.remap(image, grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), start


def normalise(crop: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW in [-1, 1], computed in float64 as the demo does."""
    return (2 * (crop / 255.0 - 0.5)).astype(np.float32).transpose(2, 0, 1)


# ------------------------------------------------------------------ predictor

class HmrPredictor(BodyPredictor):
    """HMR over a person source; see the module docstring (Python API: ``predictor(frames)``)."""

    method = "hmr"
    openpose_choice = "most_confident"  # demo: the person with the highest mean keypoint confidence

    def __init__(self, weights: str | Path | None, variant: str | None = None,
                 device: str | torch.device = "cpu", **options):
        super().__init__(weights, variant, device, **options)
        cfg = VARIANTS[self.variant]
        self.person_height = cfg["person_height"]
        self.focal = cfg["focal_length"]
        self.net = build_loaded(lambda: HMRNet(cfg["iterations"]), weights, load_weights, "HMR network")
        if weights is None and self.smpl.has_cocoplus:  # untrained: HMR's joints from the SMPL file if it has them
            self.net.cocoplus_regressor.copy_(self.smpl.cocoplus_regressor)
        self.net.eval().to(self.device)

    def _weights_file(self, weights):
        # A TF checkpoint is named by its prefix; stamp its index file (its name is the prefix's).
        if weights is not None and is_tf_checkpoint(weights):
            return Path(f"{checkpoint_prefix(weights)}.index")
        return weights

    def crop(self, image: np.ndarray, person: Person) -> PersonCrop:
        scale, centre = crop_parameters(person, image.shape[:2], self.crop_size, self.person_height)
        crop, start = crop_image(image, scale, centre, self.crop_size)
        half = self.crop_size / 2
        region = np.concatenate([(start - half) / scale, (start + half) / scale])
        return PersonCrop(normalise(crop), region, {"scale": scale, "start": start})

    def regress(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast(self.device, self.half):
            theta = self.net(x)[1][:, -1]
        theta = theta.float()  # SMPL and the cameras stay float32
        cam, pose, betas = theta[:, :3], theta[:, 3:75], theta[:, 75:]
        joints, vertices = self.posed_body(betas, pose)
        return {"global_orient": pose[:, :3], "body_pose": pose[:, 3:], "betas": betas, "cam": cam,
                "joints3d": joints, "vertices": vertices}

    def posed_body(self, betas: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(joints3d, vertices) of SMPL parameters (betas (P, 10), axis-angle pose (P, 72)): HMR's cocoplus
        joints of the posed mesh."""
        body = self.smpl(betas, pose)
        return torch.einsum("jv,bvc->bjc", self.net.cocoplus_regressor, body.vertices), body.vertices

    def to_image(self, crop: PersonCrop, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        s, tx, ty = (float(v) for v in out["cam"])
        scale, start = crop.params["scale"], crop.params["start"]
        half = self.crop_size / 2
        # orthographic projection in crop units, then crop pixels (float32 as the demo), then the image
        xy = out["cam"][0] * (out["joints3d"][:, :2] + out["cam"][1:])
        crop_px = (xy + 1) * np.float32(0.5) * np.float32(self.crop_size)
        joints2d = (crop_px + start - half) / scale
        # The demo renders with f = 500 px at crop scale, the mesh pushed back to
        # 500 / (112 s): its perspective view matches the orthographic camera.
        return {"joints2d": joints2d,
                "cam_t": np.array([tx, ty, self.focal / (half * s)]),
                "focal_length": np.full(2, self.focal / scale),
                "principal_point": start / scale}

    @torch.no_grad()
    def body_from_parameters(self, betas: np.ndarray, pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``posed_body`` of numpy parameters, in numpy (the temporal stage's smoothed parameters)."""
        tensors = (torch.as_tensor(a, dtype=torch.float32, device=self.device) for a in (betas, pose))
        return tuple(t.cpu().numpy() for t in self.posed_body(*tensors))

    def project(self, cam: np.ndarray, joints3d: np.ndarray, focal_length: np.ndarray,
                principal_point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cam_t, joints2d) of rows, as ``to_image`` computes them: the orthographic crop camera carried to
        the image (the crop's scale is method focal / ``focal_length``)."""
        s, t = cam[:, :1], cam[:, 1:]
        half = self.crop_size / 2
        pixels_per_unit = half * s * focal_length.mean(1, keepdims=True) / self.focal
        joints2d = pixels_per_unit[:, None] * (joints3d[..., :2] + t[:, None]) + principal_point[:, None]
        return np.concatenate([t, self.focal / (half * s)], 1), joints2d
