"""ResNet-v2 (pre-activation), as TF-slim's ``resnet_v2`` builds it.

This is the graph of TF-slim's ``resnet_v2_50`` with ``global_pool=True`` and
no logits, which HMR uses as its encoder. It differs from torchvision's
ResNet in ways that change every number:

- root: 7x7/2 convolution **with a bias**, no BatchNorm or ReLU before the
  max-pool (pre-activation: units normalise their own inputs);
- max-pool 3x3/2 with TF ``SAME`` padding, which on an even-sized map pads
  0 before and 1 after (padded cells never win the max);
- each unit: ``pre = relu(bn(x))``; residual branch 1x1 -> 3x3 -> 1x1 where the
  first two convolutions have BN+ReLU and no bias and the last has a bias;
  the shortcut is a biased 1x1 convolution of ``pre`` when the depth changes,
  else ``x`` itself, subsampled when the unit is strided;
- the stride of a block sits in its **last** unit (blocks 1-3), in the 3x3;
- after the last block ``relu(bn(x))`` ("postnorm") and a spatial mean;
- BatchNorm eps 1e-5 (HMR's arg scope; slim's default would be 1e-3).

``tf_variable_map`` gives the checkpoint filter: each PyTorch key with its
TF variable name and how to turn the TF array into the PyTorch one.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5

# units per block for the depths slim defines
DEPTHS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
WIDTHS = (64, 128, 256, 512)  # bottleneck width; unit output depth is 4x


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class BottleneckV2(nn.Module):
    """One pre-activation bottleneck unit (slim ``bottleneck_v2``)."""

    def __init__(self, in_depth: int, width: int, stride: int):
        super().__init__()
        depth = 4 * width
        self.stride = stride
        self.preact = _bn(in_depth)
        # slim's shortcut conv carries the unit's stride; in ResNet-v2-50 the
        # depth changes only in first units, which are never strided.
        self.shortcut = nn.Conv2d(in_depth, depth, 1, stride=stride) if in_depth != depth else None
        self.conv1 = nn.Conv2d(in_depth, width, 1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, depth, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.preact(x))
        if self.shortcut is not None:
            shortcut = self.shortcut(pre)
        else:
            # a 1x1 max-pool of stride s is plain subsampling
            shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        y = F.relu(self.bn1(self.conv1(pre)))
        y = F.relu(self.bn2(self.conv2(y)))
        return shortcut + self.conv3(y)


class ResNetV2(nn.Module):
    """Pre-activation ResNet trunk: image (N,3,H,W) -> pooled features (N, 2048)."""

    def __init__(self, depth: int = 50):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"ResNet-v2 depth {depth} is not one of {sorted(DEPTHS)}")
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        in_depth = 64
        for b, (units, width) in enumerate(zip(DEPTHS[depth], WIDTHS), start=1):
            last_stride = 2 if b < 4 else 1
            block = nn.Sequential(*(
                BottleneckV2(in_depth if u == 0 else 4 * width, width,
                             last_stride if u == units - 1 else 1)
                for u in range(units)))
            setattr(self, f"block{b}", block)
            in_depth = 4 * width
        self.postnorm = _bn(in_depth)
        self.num_features = in_depth

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The post-normalised map of the last block, (N, 2048, H/32, W/32)."""
        x = self.conv1(x)
        # TF SAME pooling pads 0 before / 1 after on this even-sized map.
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)
        x = self.block4(self.block3(self.block2(self.block1(x))))
        return F.relu(self.postnorm(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))


# ------------------------------------------------------------------ checkpoint filter

def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(3, 2, 0, 1)  # TF [kh, kw, in, out] -> torch [out, in, kh, kw]


def _same(w: np.ndarray) -> np.ndarray:
    return w


_BN_VARS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}


def tf_variable_map(model: ResNetV2, prefix: str = "", scope: str | None = None
                    ) -> Iterator[tuple[str, str, Callable[[np.ndarray], np.ndarray]]]:
    """Yield (PyTorch key, TF variable name, TF -> PyTorch array transform) for every tensor.

    ``prefix`` is the module's key prefix in the enclosing state dict;
    ``scope`` the TF variable scope (default ``resnet_v2_<depth>``).
    BatchNorm's ``num_batches_tracked`` has no TF counterpart and is skipped.
    """
    scope = scope or f"resnet_v2_{model.depth}"

    def bn(key: str, tf: str):
        for name, tf_name in _BN_VARS.items():
            yield f"{prefix}{key}.{name}", f"{scope}/{tf}/{tf_name}", _same

    yield f"{prefix}conv1.weight", f"{scope}/conv1/weights", _conv
    yield f"{prefix}conv1.bias", f"{scope}/conv1/biases", _same
    for b in range(1, 5):
        for u, unit in enumerate(getattr(model, f"block{b}")):
            key, tf = f"block{b}.{u}", f"block{b}/unit_{u + 1}/bottleneck_v2"
            yield from bn(f"{key}.preact", f"{tf}/preact")
            if unit.shortcut is not None:
                yield f"{prefix}{key}.shortcut.weight", f"{scope}/{tf}/shortcut/weights", _conv
                yield f"{prefix}{key}.shortcut.bias", f"{scope}/{tf}/shortcut/biases", _same
            for i in (1, 2):
                yield f"{prefix}{key}.conv{i}.weight", f"{scope}/{tf}/conv{i}/weights", _conv
                yield from bn(f"{key}.bn{i}", f"{tf}/conv{i}/BatchNorm")
            yield f"{prefix}{key}.conv3.weight", f"{scope}/{tf}/conv3/weights", _conv
            yield f"{prefix}{key}.conv3.bias", f"{scope}/{tf}/conv3/biases", _same
    yield from bn("postnorm", "postnorm")
