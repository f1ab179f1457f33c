"""DEKR: bottom-up multi-person 2D keypoints by disentangled keypoint regression.

Geng et al., "Bottom-Up Human Pose Estimation Via Disentangled Keypoint
Regression", CVPR 2021; official code and weights: github.com/HRNet/DEKR (MIT).

An HRNet backbone feeds two heads: a heatmap head (one map per joint plus a
person-centre map) and an offset head in which every joint has its own pair of
adaptive (deformable) convolution blocks regressing the joint's displacement
from each pixel. At test time the official pipeline is reproduced step by step:

1. resize so that the short side is ``input_size * s`` (long side rounded up to
   a multiple of 64 at scale 1) with ``cv2.warpAffine``; normalise with the
   ImageNet mean/std;
2. flip test: the mirrored input is shifted 3 px left (stride - 1) so that the
   two output grids line up; heatmaps and regressed poses are averaged with
   the mirrored joint order;
3. per scale: centre-map peaks (max-pool NMS, top ``max_people`` above the
   threshold) each propose the poses regressed at that pixel; heatmaps of all
   scales are resized to the scale-1 input and averaged;
4. pose NMS on the proposals (scores: centre score x heat value of each joint);
5. back to image pixels through the inverse affine; optional rescoring of each
   person by the official OKS-predicting MLP.

People keep the order in which pose NMS picks them (the official output order).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from ..draw import draw_box, draw_skeleton, person_colours
from ..errors import MeshcliError
from ..options import parse_floats
from ..models.hrnet import BranchwiseConv1x1, HRNet, concat_branches, conv_bn
from ..models.inference import fold_into, for_inference
from ..models.onnx_backend import GRAPH_VERSION, OnnxRuntimeNetwork, check_backend
from ..models.resnet import BasicBlock
from ..ops import DeformConv2d
from ..records import record_for, store_dir
from ..types import Frame, PoseResult, WeightsInfo
from . import METHODS
from .base import Predictor

# Joint names, input sizes and normalisation are in each variant's weights record (meshcli.records).
_COCO = {
    "flip_index": (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15),
    # Limbs of the rescoring features (also the COCO skeleton that is drawn).
    "links": ((0, 1), (0, 2), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 6), (5, 7), (5, 11),
              (6, 8), (6, 12), (7, 9), (8, 10), (11, 12), (11, 13), (12, 14), (13, 15), (14, 16)),
    "nms_num_threshold": 8,
    "decrease": 0.9,
    "rescore_file": "final_rescore_coco_kpt.pth",
}
_CROWDPOSE = {
    "flip_index": (1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12, 13),
    "links": ((12, 13), (13, 0), (13, 1), (0, 2), (1, 3), (2, 4), (3, 5), (0, 6), (1, 7), (6, 8),
              (7, 9), (8, 10), (9, 11), (6, 7), (0, 1)),
    "nms_num_threshold": 7,
    "decrease": 0.8,
    "rescore_file": "final_rescore_crowd_pose_kpt.pth",
}

# The TEST settings of the official configs (experiments/<dataset>/w{32,48}/*.yaml).
VARIANTS: dict[str, dict[str, Any]] = {
    "w32-coco": {"width": 32, **_COCO},
    "w48-coco": {"width": 48, **_COCO},
    "w32-crowdpose": {"width": 32, **_CROWDPOSE},
    "w48-crowdpose": {"width": 48, **_CROWDPOSE},
}

# Store entries for the two rescoring nets (one per dataset, shared by W32 and W48).
RESCORE_VARIANTS: dict[str, dict[str, Any]] = {"rescore-coco": _COCO, "rescore-crowdpose": _CROWDPOSE}

STRIDE = 4  # input pixels per output grid cell
OFFSET_CHANNELS_PER_JOINT = 15
RESCORE_HIDDEN = 256
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
FLIP_SHIFT = STRIDE - 1  # columns the mirrored input moves left to align the output grids
POOL_THRESHOLDS = (300, 200)  # mean grid side above which the centre NMS kernel is 7, else 5, else 3
NMS_THRESHOLD = 0.05  # pose NMS distance factor, single-scale config
NMS_THRESHOLD_MULTISCALE = 0.15  # the official README's setting for multi-scale testing
CENTER_THRESHOLD = 0.01
MAX_PEOPLE = 30
PERSON_THR = 0.3  # person score below which annotate() leaves a person out (official demo's --visthre)




# ----------------------------------------------------------------------------- networks


class AdaptBlock(nn.Module):
    """Residual block whose 3x3 deformable conv samples along a per-pixel affine grid.

    Each pixel predicts a 2x2 matrix A and a translation t; tap k of the
    regular 3x3 grid (dy, dx) = R[:, k] moves to A R[:, k] + t, i.e. the
    sampling offset is (A - I) R[:, k] + t.
    """

    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        # Row 0: the taps' y, row 1: their x (torchvision's (dy, dx) order).
        self.register_buffer("regular_matrix", torch.tensor(
            [[-1, -1, -1, 0, 0, 0, 1, 1, 1], [-1, 0, 1, -1, 0, 1, -1, 0, 1]], dtype=torch.float32))
        self.transform_matrix_conv = nn.Conv2d(channels, 4, 3, 1, 1)
        self.translation_conv = nn.Conv2d(channels, 2, 3, 1, 1)
        self.adapt_conv = DeformConv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.transform_matrix_conv(x)
        t = self.translation_conv(x)
        ry = self.regular_matrix[0].view(1, -1, 1, 1)
        rx = self.regular_matrix[1].view(1, -1, 1, 1)
        dy = a[:, 0:1] * ry + a[:, 1:2] * rx - ry + t[:, 0:1]
        dx = a[:, 2:3] * ry + a[:, 3:4] * rx - rx + t[:, 1:2]
        offset = torch.stack([dy, dx], 2).flatten(1, 2)  # channels dy0, dx0, dy1, dx1, ...
        return F.relu(self.bn(self.adapt_conv(x, offset)) + x)


class FusedAdaptBlock(nn.Module):
    """An AdaptBlock in inference form: its offsets from one 3x3 conv, its BatchNorm inside the deformable conv.

    The offsets are linear in the outputs of the transform and translation
    convs (see AdaptBlock), so that map composes with both convs into a
    single conv with one output per offset channel.
    """

    def __init__(self, block: AdaptBlock):
        super().__init__()
        ry, rx = block.regular_matrix.double()
        taps = len(ry)
        # offsets = mix @ (a00, a01, a10, a11, ty, tx) - (ry, rx) tap by tap, channels dy0, dx0, dy1, ...
        mix = torch.zeros(2 * taps, 6, dtype=torch.float64)
        mix[0::2, 0], mix[0::2, 1], mix[0::2, 4] = ry, rx, 1
        mix[1::2, 2], mix[1::2, 3], mix[1::2, 5] = ry, rx, 1
        convs = (block.transform_matrix_conv, block.translation_conv)
        weight = torch.einsum("om,mchw->ochw", mix, torch.cat([c.weight.double() for c in convs]))
        bias = mix @ torch.cat([c.bias.double() for c in convs]) - torch.stack([ry, rx], 1).flatten()
        self.offset_conv = nn.Conv2d(weight.shape[1], 2 * taps, 3, 1, 1)
        self.offset_conv.weight = nn.Parameter(weight.float(), requires_grad=False)
        self.offset_conv.bias = nn.Parameter(bias.float(), requires_grad=False)
        self.adapt_conv = block.adapt_conv
        self.adapt_conv.weight, self.adapt_conv.bias = fold_into(block.adapt_conv.weight, None, block.bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.adapt_conv(x, self.offset_conv(x)) + x)


# The 3x3 taps (row, column) in the order of a 3x3 kernel's weights, as steps from the centre pixel.
_TAP_ROWS = torch.tensor([-1, -1, -1, 0, 0, 0, 1, 1, 1])
_TAP_COLUMNS = torch.tensor([-1, 0, 1, -1, 0, 1, -1, 0, 1])
_TARGETS_PER_PASS = 256  # grid pixels evaluated together: bounds the gathered values to some 100 MB


class PointOffsetHead(nn.Module):
    """The offset head of every joint, evaluated only at chosen grid pixels: where DEKR reads its poses.

    DEKR reads the offset map at the centre peaks alone (at most ``max_people`` pixels an image). A joint's
    offset at pixel p is its second AdaptBlock at p, which reads the first block's output at p's 3x3
    neighbours and at the four pixels around each of its nine sampling points; the first block reads the
    transition features in the same way. So only those pixels are computed: a few thousand per joint where the
    dense head computes every pixel of the grid (on a 512x832 input it was a quarter of DEKR's forward). The
    arithmetic per pixel is the dense head's, with torchvision's bilinear rule in pixel coordinates (the four
    neighbours weighted, zero outside the grid), and all joints go through one batched product.
    """

    def __init__(self, layers: nn.ModuleList, finals: nn.ModuleList):
        super().__init__()
        every = [block for blocks in layers for block in blocks]
        if not all(isinstance(block, FusedAdaptBlock) for block in every):
            raise ValueError("PointOffsetHead takes the fused blocks (DekrNet.fuse_offset_blocks)")
        if any(k.adapt_conv.stride != 1 or k.adapt_conv.padding != k.adapt_conv.dilation for k in every):
            raise ValueError("PointOffsetHead takes 3x3 deformable convolutions that keep the grid size")
        depths = list(zip(*layers))  # per depth, the joints' blocks
        self.dilations = [blocks[0].adapt_conv.dilation for blocks in depths]

        def by_depth(tensor) -> torch.Tensor:  # (depth, J, ...) from each block's tensor
            return torch.stack([torch.stack([tensor(k) for k in blocks]) for blocks in depths])

        def by_tap(weight: torch.Tensor) -> torch.Tensor:  # (9 taps x C in, out): rows as the neighbours are read
            return weight.permute(2, 3, 1, 0).flatten(0, 2)

        self.register_buffer("offset_weight", by_depth(lambda k: by_tap(k.offset_conv.weight)))
        self.register_buffer("offset_bias", by_depth(lambda k: k.offset_conv.bias[None]))
        self.register_buffer("adapt_weight", by_depth(lambda k: by_tap(k.adapt_conv.weight)))
        self.register_buffer("adapt_bias", by_depth(lambda k: k.adapt_conv.bias[None]))
        self.register_buffer("final_weight", torch.stack([f.weight[:, :, 0, 0].t() for f in finals]))
        self.register_buffer("final_bias", torch.stack([f.bias[None] for f in finals]))

    def forward(self, features: torch.Tensor, image: torch.Tensor, row: torch.Tensor, column: torch.Tensor
                ) -> torch.Tensor:
        """Offsets (M, 2J) at grid pixels (``image``, ``row``, ``column``: (M,) each) of the transition features
        (N, J*C, h, w): for each joint its (x, y) channels, as the dense head's output there."""
        joints = len(self.final_weight)
        n, _, h, w = features.shape
        # (pixel, joint) -> the joint's C values there: a view of channels_last features, else a copy
        table = features.permute(0, 2, 3, 1).reshape(n * h * w, joints, -1)
        joint = torch.arange(joints, device=features.device)

        def read_features(image, row, column):
            inside = _in_grid(row, column, h, w)
            pixel = (image * h + row.clamp(0, h - 1)) * w + column.clamp(0, w - 1)
            values = table[pixel, joint.view(-1, *[1] * (pixel.dim() - 1))]
            return values.masked_fill_(~inside[..., None], 0)

        def read_first(image, row, column):
            return _at_pixels(lambda i, y, x: self._block(0, read_features, i, y, x), image, row, column, (n, h, w))

        out = []
        for start in range(0, len(row), _TARGETS_PER_PASS):
            targets = [t[start:start + _TARGETS_PER_PASS].expand(joints, -1) for t in (image, row, column)]
            second = self._block(1, read_first, *targets)
            out.append(torch.baddbmm(self.final_bias, second, self.final_weight))  # (J, M, 2)
        return torch.cat(out, 1).permute(1, 0, 2).flatten(1) if out else features.new_zeros(0, 2 * joints)

    def _block(self, depth: int, read, image: torch.Tensor, row: torch.Tensor, column: torch.Tensor
               ) -> torch.Tensor:
        """FusedAdaptBlock ``depth`` of every joint at pixels (J, P) inside the grid: (J, P, C).

        ``read(image, row, column)`` gives the block's input at pixels (J, ...), zero outside the grid.
        """
        taps_y, taps_x = _TAP_ROWS.to(row.device), _TAP_COLUMNS.to(row.device)
        images = image[..., None].expand(*image.shape, len(taps_y))
        neighbours = read(images, row[..., None] + taps_y, column[..., None] + taps_x)  # (J, P, 9, C)
        offsets = torch.baddbmm(self.offset_bias[depth], neighbours.flatten(2),
                                self.offset_weight[depth])  # (J, P, 18): dy, dx per tap
        dilation = self.dilations[depth]
        sample_y = (row[..., None] + dilation * taps_y).to(offsets.dtype) + offsets[..., 0::2]
        sample_x = (column[..., None] + dilation * taps_x).to(offsets.dtype) + offsets[..., 1::2]
        sampled = _bilinear(read, images, sample_y, sample_x)
        out = torch.baddbmm(self.adapt_bias[depth], sampled.flatten(2), self.adapt_weight[depth])
        return out.add_(neighbours[:, :, len(taps_y) // 2]).relu_()  # + the block's input at the pixel itself


def _in_grid(row: torch.Tensor, column: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return (row >= 0) & (row < h) & (column >= 0) & (column < w)


def _at_pixels(evaluate, image: torch.Tensor, row: torch.Tensor, column: torch.Tensor,
               grid: tuple[int, int, int]) -> torch.Tensor:
    """``evaluate`` (a block of every joint at (J, P) pixels) read at pixels (J, ...) of an (N, h, w) grid: each
    distinct pixel of a joint evaluated once, zero outside the grid (the padding of the next block)."""
    n, h, w = grid
    joints = len(row)
    inside = _in_grid(row, column, h, w)
    joint = torch.arange(joints, device=row.device).view(-1, *[1] * (row.dim() - 1))
    distinct, where = torch.unique((((joint * n + image) * h + row) * w + column)[inside], return_inverse=True)
    owner, pixel = distinct // (n * h * w), distinct % (n * h * w)  # sorted by joint, then by pixel
    counts = torch.bincount(owner, minlength=joints)
    slot = torch.arange(len(distinct), device=row.device) - (counts.cumsum(0) - counts)[owner]
    padded = torch.zeros(3, joints, max(int(counts.max()), 1), dtype=torch.long, device=row.device)
    padded[:, owner, slot] = torch.stack([pixel // (h * w), pixel // w % h, pixel % w])
    values = evaluate(*padded)[owner, slot]  # what a short joint's filler pixels (0, 0) give is dropped
    out = values.new_zeros(*row.shape, values.shape[-1])
    out[inside] = values[where]
    return out


def _bilinear(read, image: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``read`` at real positions: torchvision's deformable-convolution rule (the four pixels around the point,
    weighted by closeness; those outside the grid read 0, as ``read`` gives them)."""
    # far outside, every neighbour is outside anyway: the bounds keep the integer conversion defined
    y, x = y.clamp(-2.0, 1e6), x.clamp(-2.0, 1e6)
    top, left = y.floor(), x.floor()
    down, across = y - top, x - left
    up, back = 1 - down, 1 - across
    top, left = top.long(), left.long()
    return ((up * back)[..., None] * read(image, top, left) + (up * across)[..., None] * read(image, top, left + 1)
            + (down * back)[..., None] * read(image, top + 1, left)
            + (down * across)[..., None] * read(image, top + 1, left + 1))


class DekrNet(HRNet):
    """HRNet with DEKR's heads; ``forward`` returns the raw (heatmap, offset) outputs.

    heatmap: (N, J+1, H/4, W/4), the last channel is the person centre.
    offset: (N, 2J, H/4, W/4), channels (x, y) per joint in grid units; the
    joint regressed at grid pixel p is p - offset.
    """

    def __init__(self, width: int, num_joints: int):
        super().__init__(width)
        features = sum(self.out_channels)
        self.num_joints = num_joints
        # (attribute order = the official state dict's order)
        self.transition_heatmap = conv_bn(features, width, kernel=1)
        self.transition_offset = conv_bn(features, num_joints * OFFSET_CHANNELS_PER_JOINT, kernel=1)
        self.head_heatmap = nn.ModuleList([nn.Sequential(BasicBlock(width, width)),
                                           nn.Conv2d(width, num_joints + 1, 1)])
        self.offset_feature_layers = nn.ModuleList(
            nn.Sequential(AdaptBlock(OFFSET_CHANNELS_PER_JOINT), AdaptBlock(OFFSET_CHANNELS_PER_JOINT))
            for _ in range(num_joints))
        self.offset_final_layer = nn.ModuleList(
            nn.Conv2d(OFFSET_CHANNELS_PER_JOINT, 2, 1) for _ in range(num_joints))
        self.branchwise_transitions = None  # both transitions in one, once fuse_transitions has run
        self.point_offsets = None  # the offset head at chosen pixels, once fuse_offset_blocks has run

    def fuse_offset_blocks(self) -> DekrNet:
        """Replace every AdaptBlock by its FusedAdaptBlock and add the head's ``point_offsets`` (after loading:
        the official names are gone)."""
        for layers in self.offset_feature_layers:
            for k, block in enumerate(layers):
                layers[k] = FusedAdaptBlock(block)
        self.point_offsets = PointOffsetHead(self.offset_feature_layers, self.offset_final_layer)
        return self

    def inference_form(self) -> DekrNet:
        """The network with its fused modules, in place (after loading: the official names are gone)."""
        return self.fuse_offset_blocks().fuse_transitions()

    def fuse_transitions(self) -> DekrNet:
        """Replace both heads' transitions by one BranchwiseConv1x1 (after loading: the official names are gone)."""
        self.branchwise_transitions = BranchwiseConv1x1([self.transition_heatmap, self.transition_offset],
                                                        self.out_channels)
        del self.transition_heatmap, self.transition_offset
        return self

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(heatmap, offset features): the network short of the offset blocks, whose input the features are."""
        branches = super().forward(x)
        if self.branchwise_transitions is None:
            feats = concat_branches(branches)
            heat_in, offset_in = self.transition_heatmap(feats), self.transition_offset(feats)
        else:
            heat_in, offset_in = self.branchwise_transitions(branches)
        return self.head_heatmap[1](self.head_heatmap[0](heat_in)), offset_in

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        heatmap, features = self.heads(x)
        per_joint = features.split(OFFSET_CHANNELS_PER_JOINT, 1)
        offset = torch.cat([final(layers(f)) for f, layers, final in
                            zip(per_joint, self.offset_feature_layers, self.offset_final_layer)], 1)
        return heatmap, offset


class DekrHeads(nn.Module):
    """``DekrNet.heads`` as a module's forward: what is exported for ONNX Runtime."""

    def __init__(self, net: DekrNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.heads(x)


class RescoreNet(nn.Module):
    """The official PredictOKSNet: an MLP from pose features to a predicted OKS."""

    def __init__(self, in_features: int, hidden: int = RESCORE_HIDDEN):
        super().__init__()
        self.l1 = nn.Linear(in_features, hidden)
        self.l2 = nn.Linear(hidden, hidden)
        self.l3 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(F.relu(self.l2(F.relu(self.l1(x)))))


def build_network(variant: str) -> DekrNet:
    variant = METHODS["dekr"].choose_variant(variant)
    return DekrNet(VARIANTS[variant]["width"], len(record_for("dekr", variant).joint_names))


def build_rescore_net(variant: str) -> RescoreNet:
    """The rescoring net of a pose variant, or of a store entry ``rescore-coco`` / ``rescore-crowdpose``."""
    if variant not in RESCORE_VARIANTS:
        variant = METHODS["dekr"].choose_variant(variant)
    cfg = RESCORE_VARIANTS.get(variant) or VARIANTS[variant]
    return RescoreNet(3 * len(cfg["links"]) + len(record_for("dekr", variant).joint_names))


# ----------------------------------------------------------------------------- checkpoints

def _read_state_dict(path: str | Path, module: nn.Module) -> Mapping[str, torch.Tensor]:
    state = torch_load(path, tensor_bytes(module))
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MeshcliError(path, "is not a plain state dict of tensors (the official DEKR files are)",
                           "use the official .pth file as downloaded")
    return state


def load_network(module: DekrNet, path: str | Path, variant: str) -> None:
    load_state_dict_strict(module, _read_state_dict(path, module), path, what=f"DEKR {variant} network")


def load_rescore_net(module: RescoreNet, path: str | Path, variant: str) -> None:
    # The official code loads this file with strict=False; meshcli insists on all six tensors.
    load_state_dict_strict(module, _read_state_dict(path, module), path, what=f"DEKR {variant} rescoring net")


def validate_checkpoint(path: Path, variant: str) -> None:
    """Check a file against a pose variant's network, or against ``rescore-<dataset>``'s rescoring net.

    Every tensor name and shape must match; nothing is allocated.
    """
    with torch.device("meta"):
        if variant in RESCORE_VARIANTS:
            module, what = build_rescore_net(variant), f"DEKR {variant} net"
        else:
            variant = METHODS["dekr"].choose_variant(variant)
            module, what = build_network(variant), f"DEKR {variant} network"
    load_state_dict_strict(module, _read_state_dict(path, module), path, what=what)


# ----------------------------------------------------------------------------- geometry


MAX_ASPECT = 8  # a longer side than this many short sides would make the network input explode


def resize_geometry(image_hw: tuple[int, int], input_size: int, s: float
                    ) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """Network input size (W, H) at scale ``s``, affine centre (int px) and scale (w, h in 200 px).

    The short side becomes ``input_size * s``; the long side keeps the aspect
    ratio, rounded up to a multiple of 64 at scale 1, then times ``s``.
    """
    h, w = image_hw
    center = np.array([int(w / 2.0 + 0.5), int(h / 2.0 + 0.5)])
    short = int((input_size + 63) // 64 * 64)
    if w < h:
        size = (int(short * s), int(int((short / w * h + 63) // 64 * 64) * s))
        scale = np.array([w / 200.0, size[1] / size[0] * w / 200.0])
    else:
        size = (int(int((short / h * w + 63) // 64 * 64) * s), int(short * s))
        scale = np.array([size[0] / size[1] * h / 200.0, h / 200.0])
    return size, center, scale


def check_input_size(size: int, full: int, option: str) -> int:
    """A smaller network input short side than the variant's ``full`` one: a multiple of 64 (the long side
    is rounded to 64 too, and the output grid to ``STRIDE``), at least 128 (a 32x32 output grid)."""
    if not (isinstance(size, int) and 128 <= size <= full and size % 64 == 0):
        raise MeshcliError(None, f"{option} {size}: DEKR's input short side must be a multiple of 64 from 128 to "
                           f"{full} (its full size)", "e.g. 256 or 384")
    return size


def affine_matrix(center: np.ndarray, scale: np.ndarray, size: tuple[int, int],
                  inverse: bool = False) -> np.ndarray:
    """Image -> input affine (or its inverse) from three point pairs, as the official code builds it.

    The source square of side ``scale[0] * 200`` around ``center`` maps onto
    the width of ``size``; the points are float32, which the parity of the
    matrix (and so of the warped input) depends on.
    """
    half_src = scale[0] * 200.0 * -0.5
    width, height = size
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + np.array([0.0, half_src])
    dst[0] = [width * 0.5, height * 0.5]
    dst[1] = np.array([width * 0.5, height * 0.5]) + np.array([0, width * -0.5], np.float32)
    for pts in (src, dst):  # third point: the first one, rotated 90 degrees about the second
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]], np.float32)
    return cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)


def normalise(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 3xHxW float32, /255 then ImageNet mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div(255)
    return x.sub(torch.tensor(MEAN).view(3, 1, 1)).div(torch.tensor(STD).view(3, 1, 1))


def flip_input(x: torch.Tensor) -> torch.Tensor:
    """Mirror the batch and shift it FLIP_SHIFT columns left; the last columns keep mirrored values."""
    mirrored = x.flip(3)
    return torch.cat([mirrored[..., FLIP_SHIFT:], mirrored[..., -FLIP_SHIFT:]], 3)


def regressed_poses(offsets: torch.Tensor, row: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
    """Offsets (M, 2J) at grid pixels (``row``, ``column``) -> (M, J, 2) joint positions (x, y) in grid units."""
    pixel = torch.stack([column, row], -1).to(offsets.dtype)
    return pixel[:, None, :] - offsets.unflatten(1, (-1, 2))


def merge_flip_heat(heatmap: torch.Tensor, heatmap_flip: torch.Tensor, flip_index: Sequence[int]) -> torch.Tensor:
    """The average of the plain and the mirrored pass's (N, J+1, h, w) heatmaps."""
    heat_index = list(flip_index) + [len(flip_index)]  # the centre channel maps to itself
    return (heatmap + heatmap_flip.flip(3)[:, heat_index]) / 2.0


def merge_flip_poses(poses: torch.Tensor, poses_flip: torch.Tensor, width: int, flip_index: Sequence[int]
                     ) -> torch.Tensor:
    """The average of the poses (M, J, 2) regressed at some pixels and those the mirrored pass regressed at the
    mirrored pixels (column ``width - 1 - c``), in a grid ``width`` cells wide."""
    mirrored = poses_flip[:, list(flip_index)]
    mirrored = torch.stack([width - mirrored[..., 0] - 1, mirrored[..., 1]], -1)
    return (poses + mirrored) / 2.0


def center_peaks(center: torch.Tensor, max_people: int, threshold: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Local maxima of the (h, w) centre map: flat indices and values, best first, above threshold."""
    h, w = center.shape
    side = (h + w) / 2.0
    kernel = 7 if side > POOL_THRESHOLDS[0] else 5 if side > POOL_THRESHOLDS[1] else 3
    pooled = F.max_pool2d(center[None, None], kernel, 1, kernel // 2)[0, 0]
    peaks = center * (pooled == center).float()
    values, index = peaks.flatten().topk(min(max_people, h * w))
    keep = values > threshold
    return index[keep], values[keep]


def _grid_positions(cells: int, pixels: int, step: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Where each of ``pixels`` input pixels reads a ``cells``-long grid axis: (lower cell, upper cell, weight).

    The grid's first and last cells land on pixels 0 and ``pixels - step``, evenly
    spaced between; the pixels after the last cell read the last cell.
    """
    span = pixels - step
    per_pixel = (cells - 1) / span if span > 0 else 0.0
    position = (torch.arange(pixels, dtype=torch.float64) * per_pixel).clamp(max=cells - 1)
    lower = position.floor().long()
    upper = (lower + 1).clamp(max=cells - 1)
    return lower.to(device), upper.to(device), (position - lower).to(device)


def upsampled_size(heat: torch.Tensor, ratio: float) -> tuple[int, int]:
    """(H, W) of grid heatmaps (..., h, w) upsampled to input pixels: ``int(ratio h)``, ``int(ratio w)``."""
    return int(ratio * heat.shape[-2]), int(ratio * heat.shape[-1])


def upsampled_heat(heat: torch.Tensor, ratio: float, channel: torch.Tensor, row: torch.Tensor,
                   column: torch.Tensor) -> torch.Tensor:
    """The (C, h, w) grid heatmaps upsampled to input pixels, read at (channel, row, column) (broadcast together).

    The DEKR upsampling is separable linear interpolation along each axis (see ``_grid_positions``), with the
    grid's corners on input pixels 0 and ``(n - 1) step``: rows first, then columns. Only the pixels asked for
    are interpolated; a dense map would be 16 times the grid's size, and the joints read a few hundred pixels.
    """
    pixels_h, pixels_w = upsampled_size(heat, ratio)
    top, bottom, down = (t[row] for t in _grid_positions(heat.shape[1], pixels_h, int(pixels_h / heat.shape[1]),
                                                         heat.device))
    left, right, across = (t[column] for t in _grid_positions(heat.shape[2], pixels_w,
                                                              int(pixels_w / heat.shape[2]), heat.device))
    down, across = down.to(heat.dtype), across.to(heat.dtype)
    at_left = torch.lerp(heat[channel, top, left], heat[channel, bottom, left], down)
    at_right = torch.lerp(heat[channel, top, right], heat[channel, bottom, right], down)
    return torch.lerp(at_left, at_right, across)


def joint_heat(joints: torch.Tensor, maps: Sequence[tuple[torch.Tensor, float]]) -> torch.Tensor:
    """Scale-averaged heat of every proposal at its own joints: (K, J, 2) input pixels -> (K, J).

    ``maps``: each scale's (J+1, h, w) grid heatmaps and its grid-to-input ratio (all upsample to one size).
    Joint j reads channel j at the pixel that contains it, the border pixel when it lies outside.
    """
    height, width = upsampled_size(maps[0][0], maps[0][1])
    pixel = joints.floor()
    column = pixel[..., 0].clamp(0, width - 1).long()
    row = pixel[..., 1].clamp(0, height - 1).long()
    channel = torch.arange(joints.shape[1], device=joints.device)
    return sum(upsampled_heat(heat, ratio, channel, row, column) for heat, ratio in maps) / len(maps)


def centre_scores_on_scale_one(scores: torch.Tensor, counts: Sequence[int], one: int,
                               decrease: float) -> torch.Tensor:
    """Centre scores (K, J) of proposals grouped by scale (``counts``), made comparable across scales.

    Every scale but scale 1 (group ``one``) is rescaled so that its best score becomes
    ``decrease`` times scale 1's best; a scale without proposals counts as best 1.
    """
    group = torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts, dtype=torch.long))
    best = torch.ones(len(counts), dtype=scores.dtype).scatter_reduce(
        0, group, scores[:, 0], "amax", include_self=False)
    factor = torch.where(torch.arange(len(counts)) == one, torch.ones_like(best), best[one] * decrease / best)
    return scores * factor[group, None]


def nms_keep(coords: torch.Tensor, heat_score: torch.Tensor, threshold: float, num_threshold: int) -> list[int]:
    """Greedy pose NMS; returns the kept indices in the order they are picked.

    Proposal i covers k when more than ``num_threshold`` joints lie closer than
    ``threshold * diag(i)`` (diag: the diagonal of i's own joint box). Walking
    the proposals in order, the best-heat member of i's cover set is kept and
    the whole set removed, unless that member was already removed.
    """
    span = coords.amax(1) - coords.amin(1)
    reach = threshold * span.norm(dim=1)
    joint_dist = (coords[:, None] - coords[None]).norm(dim=3)
    covers = (joint_dist < reach[:, None, None]).sum(2) > num_threshold
    # A zero-size pose covers nobody, not even itself (the official code fails there): it is kept on its own.
    covers |= torch.diag(~covers.any(1))
    pick = torch.where(covers, heat_score[None], torch.tensor(-torch.inf)).argmax(1).tolist()
    covers = covers.tolist()
    removed = [False] * len(coords)
    keep: list[int] = []
    for i, best in enumerate(pick):
        if removed[i] or removed[best]:
            continue
        keep.append(best)
        removed = [r or c for r, c in zip(removed, covers[i])]
    return keep


def rescore_features(poses: np.ndarray, links: Sequence[tuple[int, int]]) -> np.ndarray:
    """Rescoring-net input from (N, J, 3) image-pixel poses: limb vectors, limb lengths, joint scores.

    Vectors and lengths are divided by the mean length of limbs 9 and 11
    (torso sides in both datasets' link lists), floored at 1.
    """
    start, end = np.asarray(links).T
    limbs = poses[:, start, :2] - poses[:, end, :2]  # (N, L, 2)
    length = np.linalg.norm(limbs, axis=2)
    unit = np.maximum(length[:, [9, 11]].mean(1), 1)[:, None]
    return np.concatenate([(limbs / unit[..., None]).reshape(len(poses), -1), length / unit, poses[:, :, 2]],
                          1).astype(np.float32)


# ----------------------------------------------------------------------------- predictor


@dataclass
class DekrInput:
    """One frame, resized and normalised at every test scale (descending)."""

    frame_index: int
    image_hw: tuple[int, int]
    inputs: list[torch.Tensor]  # (3, H_s, W_s) per scale
    base_size: tuple[int, int]  # scale-1 input (W, H)
    center: np.ndarray  # affine centre, image pixels
    scale: np.ndarray  # affine scale of the last (smallest) scale, as the official back-projection uses
    warp_matrix: np.ndarray  # scale-1 image -> input affine


@dataclass
class DekrRaw:
    """Network-side results of one frame, on the CPU."""

    proposals: torch.Tensor  # (K, J, 3): x, y in scale-1 input pixels, centre score
    counts: list[int]  # proposals per scale, scales descending
    heat: torch.Tensor  # (K, J): scale-averaged heat value at each proposed joint


class DekrPredictor(Predictor):
    task = "pose"
    method = "dekr"
    result_type = PoseResult

    def __init__(self, weights: str | Path | None, variant: str | None = None,
                 device: str | torch.device = "cpu", *, scales: Sequence[float] = (1.0,), flip: bool = True,
                 nms_threshold: float | None = None, rescore: bool = True,
                 rescore_weights: str | Path | None = None, center_threshold: float = CENTER_THRESHOLD,
                 max_people: int = MAX_PEOPLE, person_thr: float | None = None, kpt_thr: float = 0.0,
                 input_size: int | None = None, backend: str = "torch"):
        self.variant = METHODS["dekr"].choose_variant(variant)
        self.cfg = VARIANTS[self.variant]
        full_size = record_for("dekr", self.variant).input_size
        # a smaller input (the body detector's --detect-size) trades keypoint precision for speed
        self.input_size = full_size if input_size is None else check_input_size(input_size, full_size, "input_size")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        scales = parse_floats(scales, None, "--scales", "0.5,1,2")
        self.scales = sorted(scales, reverse=True)
        if 1.0 not in self.scales or len(set(self.scales)) != len(self.scales) or min(self.scales) <= 0:
            raise MeshcliError(None, f"--scales {','.join(map(str, scales))}: DEKR needs distinct positive "
                               "scales including 1 (other scales are normalised against it)",
                               "e.g. --scales 0.5,1,2")
        if max_people < 1:
            raise MeshcliError(None, f"max_people must be at least 1, got {max_people}")
        self.flip = flip
        self.nms_threshold = (nms_threshold if nms_threshold is not None else
                              NMS_THRESHOLD if len(self.scales) == 1 else NMS_THRESHOLD_MULTISCALE)
        self.center_threshold = center_threshold
        self.max_people = max_people
        # untrained weights score everyone low: an install check draws whatever was found
        self.person_thr = person_thr if person_thr is not None else (0.0 if weights is None else PERSON_THR)
        self.kpt_thr = kpt_thr  # joints scoring below it are not drawn
        self.joint_names = record_for("dekr", self.variant).joint_names
        self.skeleton = self.cfg["links"]

        if rescore and rescore_weights is None and weights is not None:
            raise MeshcliError(None, "DEKR rescoring needs the official rescoring net",
                               f"pass --rescore-weights {self.cfg['rescore_file']} or --no-rescore")

        self.weights = WeightsInfo.of(weights)
        self.model = build_network(self.variant)
        if weights is not None:
            load_network(self.model, weights, self.variant)
        self.model = for_inference(self.model.eval().inference_form(), self.device)
        self.backend = check_backend(backend, self.device)
        self.heads = self.model.heads  # the network short of the offset head, which runs at the centre peaks
        if backend == "onnxruntime":
            cached = (None if self.weights.sha256 is None else
                      store_dir() / "onnx" / f"dekr-{self.variant}-{self.weights.sha256[:16]}-g{GRAPH_VERSION}.onnx")
            self.heads = OnnxRuntimeNetwork(DekrHeads(self.model), ("heatmap", "offset_features"), cached)

        self.rescore_net = None
        self.rescore_weights = WeightsInfo(None, None)
        if rescore:  # with untrained pose weights and no file, the rescoring net is untrained too
            self.rescore_net = build_rescore_net(self.variant).eval()
            if rescore_weights is not None:
                load_rescore_net(self.rescore_net, rescore_weights, self.variant)
                self.rescore_weights = WeightsInfo.of(rescore_weights)

    # -- preprocess -----------------------------------------------------------------------

    def preprocess(self, frame: Frame, people=None) -> DekrInput:
        image = frame.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise MeshcliError(frame.name, "DEKR needs an RGB uint8 image",
                               "give a colour image or video")
        hw = image.shape[:2]
        if max(hw) > MAX_ASPECT * min(hw):  # the short side is scaled to the input size, the long one with it
            long_side = resize_geometry(hw, self.input_size, max(self.scales))[0]
            raise MeshcliError(frame.name, f"a {hw[1]}x{hw[0]} image would need a {max(long_side)}-pixel wide "
                               f"network input (DEKR scales the short side to {self.input_size}); images up "
                               f"to {MAX_ASPECT}:1 are accepted", "crop or pad the image to a less extreme shape")
        inputs = []
        for s in self.scales:
            size, center, scale = resize_geometry(hw, self.input_size, s)
            if size[0] % 32 or size[1] % 32:
                raise MeshcliError(frame.name, f"scale {s:g} gives a {size[0]}x{size[1]} network input; "
                                   "HRNet needs sides that are multiples of 32", "use scales such as 0.5,1,2")
            matrix = affine_matrix(center, scale, size)
            if s == 1.0:
                base_size, warp = size, matrix
            inputs.append(normalise(cv2.warpAffine(image, matrix, size)))
        return DekrInput(frame.index, hw, inputs, base_size, center, scale, warp)

    # -- infer ------------------------------------------------------------------------------

    def network_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(heatmap, offset features) of a normalised batch, the mirrored batch after it when flip test is on;
        the heatmaps flip-merged."""
        n = len(x)
        with autocast(self.device, self.half):
            heat, features = self.heads((torch.cat([x, flip_input(x)]) if self.flip else x)
                                        .contiguous(memory_format=torch.channels_last))
        heat, features = heat.float(), features.float()
        return (merge_flip_heat(heat[:n], heat[n:], self.cfg["flip_index"]) if self.flip else heat), features

    def poses_at(self, features: torch.Tensor, image: torch.Tensor, row: torch.Tensor, column: torch.Tensor
                 ) -> torch.Tensor:
        """(M, J, 2) poses regressed at grid pixels of the batch's images, flip-merged when flip test is on."""
        if not self.flip:
            return regressed_poses(self.model.point_offsets(features, image, row, column), row, column)
        width = features.shape[-1]
        mirrored_column = width - 1 - column
        offsets = self.model.point_offsets(features, torch.cat([image, image + len(features) // 2]),
                                           torch.cat([row, row]), torch.cat([column, mirrored_column]))
        plain, mirrored = offsets[:len(row)], offsets[len(row):]
        return merge_flip_poses(regressed_poses(plain, row, column), regressed_poses(mirrored, row, mirrored_column),
                                width, self.cfg["flip_index"])

    @torch.inference_mode()
    def infer(self, prepared: list[DekrInput]) -> list[DekrRaw]:
        ratio = self.input_size * 1.0 / (self.input_size // STRIDE)
        maps: list[list[tuple[torch.Tensor, float]]] = [[] for _ in prepared]  # per frame: (heatmaps, ratio) per scale
        found: list[list[torch.Tensor]] = [[] for _ in prepared]
        for si, s in enumerate(self.scales):  # descending, as the official loop
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, item in enumerate(prepared):
                groups.setdefault(tuple(item.inputs[si].shape), []).append(i)
            for members in groups.values():
                batch = to_device(torch.stack([prepared[i].inputs[si] for i in members]), self.device)
                heat, features = self.network_outputs(batch)
                upsampled = upsampled_size(heat, ratio / s)
                peaks = [center_peaks(heat[b, -1], self.max_people, self.center_threshold)
                         for b in range(len(members))]
                image = torch.cat([torch.full_like(index, b) for b, (index, _) in enumerate(peaks)])
                index = torch.cat([index for index, _ in peaks])
                poses = (ratio / s) * self.poses_at(features, image, index // heat.shape[-1], index % heat.shape[-1])
                for b, i in enumerate(members):
                    base_w, base_h = prepared[i].base_size
                    if upsampled != (base_h, base_w):
                        raise MeshcliError(None, f"scale {s:g} heatmaps come out {upsampled[1]}x{upsampled[0]}, "
                                           f"not the scale-1 input size {base_w}x{base_h}",
                                           "use scales such as 0.5,1,2")
                    maps[i].append((heat[b], ratio / s))
                    score = peaks[b][1]
                    pose = poses[image == b]
                    found[i].append(torch.cat([pose, score[:, None, None].expand(-1, pose.shape[1], 1)], 2))
        raws = []
        for i in range(len(prepared)):
            proposals = torch.cat(found[i])
            raws.append(DekrRaw(proposals.cpu(), [len(p) for p in found[i]],
                                joint_heat(proposals[..., :2], maps[i]).cpu()))
        return raws

    # -- postprocess ------------------------------------------------------------------------

    def pose_nms(self, raw: DekrRaw) -> np.ndarray:
        """Proposals -> people (N, J, 3): x, y in scale-1 input pixels, per-joint score."""
        j = raw.proposals.shape[1]
        if len(raw.proposals) == 0:
            return np.zeros((0, j, 3), np.float32)
        coords = raw.proposals[..., :2]
        centre = centre_scores_on_scale_one(raw.proposals[..., 2], raw.counts, self.scales.index(1.0),
                                            self.cfg["decrease"])
        heat_score = raw.heat.mean(1)
        poses = torch.cat([coords, (centre * raw.heat)[..., None]], 2)
        keep = nms_keep(coords, heat_score, self.nms_threshold, self.cfg["nms_num_threshold"])
        poses, heat_score = poses[keep], heat_score[keep]
        if len(keep) > self.max_people:
            poses = poses[heat_score.topk(self.max_people).indices]
        return poses.numpy()

    def to_image(self, poses: np.ndarray, prepared: DekrInput) -> np.ndarray:
        """Scale-1 input pixels -> image pixels (scores untouched)."""
        inverse = affine_matrix(prepared.center, prepared.scale, prepared.base_size, inverse=True)
        out = poses.copy()
        xy1 = np.concatenate([poses[..., :2].astype(np.float64), np.ones(poses.shape[:2] + (1,))], -1)
        out[..., :2] = xy1 @ inverse.T
        return out

    @torch.inference_mode()
    def rescore(self, poses: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Person scores times the rescoring net's predicted OKS (NaN predictions count as 0)."""
        features = torch.from_numpy(rescore_features(poses, self.skeleton))
        predicted = self.rescore_net(features)[:, 0].numpy()
        predicted[np.isnan(predicted)] = 0
        return predicted * scores

    def postprocess(self, prepared: DekrInput, raw: DekrRaw) -> PoseResult:
        poses = self.to_image(self.pose_nms(raw), prepared)
        scores = np.array([p[:, 2].mean() for p in poses], np.float32)
        if self.rescore_net is not None and len(poses):
            scores = self.rescore(poses, scores).astype(np.float32)
        xy = poses[..., :2]
        bbox = np.concatenate([xy.min(1), xy.max(1)], 1) if len(poses) else np.zeros((0, 4), np.float32)
        return PoseResult(prepared.frame_index, {"keypoints": poses, "scores": scores,
                                                 "bbox": bbox.astype(np.float32)})

    # -- output -----------------------------------------------------------------------------

    def annotate(self, image: np.ndarray, result: PoseResult) -> np.ndarray:
        out = image.copy()
        rows = result.rows
        colours = person_colours(rows, result.num_people)
        for k in range(result.num_people):
            score = float(rows["scores"][k])
            if score < self.person_thr:
                continue
            draw_skeleton(out, rows["keypoints"][k, :, :2], self.skeleton, colours[k],
                          visible=rows["keypoints"][k, :, 2] >= self.kpt_thr)
            track = f"#{int(rows['track_id'][k])} " if "track_id" in rows else ""
            draw_box(out, rows["bbox"][k], colours[k], label=f"{track}{score:.2f}")
        return out

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        if self.rescore_net is not None:
            meta.update(self.rescore_weights.npz_fields("rescore_weights"))
        meta.update({
            "joint_names": np.array(self.joint_names),
            "skeleton": np.array(self.skeleton, np.int64),
            "scales": np.array(self.scales),
            "input_size": self.input_size,
            "flip_test": self.flip,
            "nms_threshold": self.nms_threshold,
            "center_threshold": self.center_threshold,
            "max_people": self.max_people,
            "rescored": self.rescore_net is not None,
            "backend": self.backend,
        })
        return meta
