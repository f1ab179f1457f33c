"""HRNet backbone (Sun et al., CVPR 2019) as used by the HRNet pose family.

Module and parameter names follow the official HRNet pose code (``conv1``,
``layer1``, ``transition{k}``, ``stage{k}.{m}.branches`` / ``fuse_layers``), so
official state dicts map onto it key for key. A width ``C`` gives branches of
``C, 2C, 4C, 8C`` channels at strides 4, 8, 16, 32; the input sides must be
multiples of 32 for the branches to line up when they are fused.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .inference import conv_bn_relu, fold_into
from .resnet import BasicBlock, Bottleneck


class ConvBN(nn.Sequential):
    """Convolution, BatchNorm and optionally ReLU, named as the official ``nn.Sequential`` (0, 1, 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_bn_relu(self[0], self[1], x, relu=len(self) > 2)


def conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> ConvBN:
    layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_ch)]
    if relu:
        layers.append(nn.ReLU())
    return ConvBN(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then every branch receives the sum of all branches."""

    def __init__(self, channels: list[int], num_blocks: int):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c, c) for _ in range(num_blocks))) for c in channels)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(self._fuse(channels, src, dst) for src in range(len(channels)))
            for dst in range(len(channels)))

    @staticmethod
    def _fuse(channels: list[int], src: int, dst: int) -> nn.Module:
        if src == dst:
            return nn.Identity()
        if src > dst:  # lower resolution: 1x1 conv to the target width, nearest upsampling
            return nn.Sequential(nn.Conv2d(channels[src], channels[dst], 1, bias=False),
                                 nn.BatchNorm2d(channels[dst]),
                                 nn.Upsample(scale_factor=2 ** (src - dst), mode="nearest"))
        steps = dst - src  # higher resolution: strided 3x3 convs, the last without ReLU
        return nn.Sequential(*(conv_bn(channels[src], channels[dst] if k == steps - 1 else channels[src],
                                       stride=2, relu=k < steps - 1) for k in range(steps)))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for fuse in self.fuse_layers:
            y = fuse[0](xs[0]) + fuse[1](xs[1])  # a new tensor: the rest is summed into it in place
            for j in range(2, len(xs)):
                y += fuse[j](xs[j])
            out.append(y.relu_())
        return out


class HRNet(nn.Module):
    """Stem, a Bottleneck stage to 256 channels, then stages of 2, 3 and 4 branches."""

    def __init__(self, width: int = 32, stage_modules: tuple[int, ...] = (1, 4, 3), num_blocks: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        downsample = nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256))
        self.layer1 = nn.Sequential(Bottleneck(64, 64, downsample=downsample),
                                    *(Bottleneck(256, 64) for _ in range(3)))
        previous = [256]
        for s, modules in enumerate(stage_modules):
            channels = [width * 2 ** b for b in range(s + 2)]
            setattr(self, f"transition{s + 1}", self._transition(previous, channels))
            setattr(self, f"stage{s + 2}", nn.Sequential(
                *(HighResolutionModule(channels, num_blocks) for _ in range(modules))))
            previous = channels
        self.num_stages = len(stage_modules)
        self.out_channels = previous

    @staticmethod
    def _transition(previous: list[int], channels: list[int]) -> nn.ModuleList:
        layers = []
        for b, ch in enumerate(channels):
            if b < len(previous):
                layers.append(nn.Identity() if previous[b] == ch else conv_bn(previous[b], ch))
            else:  # a new, lower-resolution branch grows from the last existing one
                steps = b + 1 - len(previous)
                layers.append(nn.Sequential(*(conv_bn(previous[-1], ch if k == steps - 1 else previous[-1],
                                                      stride=2) for k in range(steps))))
        return nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = conv_bn_relu(self.conv2, self.bn2, conv_bn_relu(self.conv1, self.bn1, x))
        feats = [self.layer1(x)]
        for s in range(self.num_stages):
            transition = getattr(self, f"transition{s + 1}")
            feats = [t(feats[b] if b < len(feats) else feats[-1]) for b, t in enumerate(transition)]
            feats = getattr(self, f"stage{s + 2}")(feats)
        return feats


def concat_branches(feats: list[torch.Tensor]) -> torch.Tensor:
    """HRNetV2 representation: all branches bilinearly resized to the first one and stacked."""
    size = feats[0].shape[-2:]
    return torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                   for f in feats[1:]], 1)


class BranchwiseConv1x1(nn.Module):
    """1x1 ConvBN+ReLU layers that all read ``concat_branches(feats)``, run as one convolution per branch.

    Resizing the branches and a 1x1 convolution are both linear and act on different axes, so each branch's
    share of the weights runs at the branch's own resolution and the results are resized and summed: about a
    seventh of the multiply-adds, and the wide concatenation is never written. The first branch's convolution
    adds that sum and applies the ReLU in the same call (``conv_bn_relu``). ``forward`` returns one tensor per
    layer, in order, as channel slices of one channels_last tensor: each pixel's values side by side.
    """

    def __init__(self, layers: Sequence[ConvBN], branch_channels: Sequence[int]):
        super().__init__()
        if not all(len(layer) == 3 and isinstance(layer[1], nn.BatchNorm2d) for layer in layers):
            raise ValueError("BranchwiseConv1x1 takes ConvBN layers with their BatchNorm and ReLU")
        folded = [fold_into(layer[0].weight, layer[0].bias, layer[1]) for layer in layers]
        weight = torch.cat([w for w, _ in folded])
        self.out_channels = [len(w) for w, _ in folded]
        self.convs = nn.ModuleList()
        for b, share in enumerate(weight.split(list(branch_channels), 1)):  # each branch's input channels
            conv = nn.Conv2d(share.shape[1], len(weight), 1, bias=b == 0)
            conv.weight = nn.Parameter(share.clone(), requires_grad=False)
            if b == 0:
                conv.bias = nn.Parameter(torch.cat([bias for _, bias in folded]), requires_grad=False)
            self.convs.append(conv)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        size = feats[0].shape[-2:]
        lower = [F.interpolate(conv(f), size=size, mode="bilinear", align_corners=False)
                 for conv, f in zip(self.convs[1:], feats[1:])]
        for resized in lower[1:]:
            lower[0] += resized
        y = conv_bn_relu(self.convs[0], None, feats[0], residual=lower[0] if lower else None)
        return y.split(self.out_channels, 1)
