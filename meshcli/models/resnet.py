"""ResNet (He et al., 2016) in torchvision's layout, without importing torchvision.

Module and parameter names are torchvision's (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc`` ...), so official
checkpoints of methods built on ``torchvision.models.resnetXX`` map onto it
key for key. Post-activation units; the stride of a stage sits in its first
unit, on the 3x3 convolution of a bottleneck (torchvision >= 0.2, "ResNet
v1.5"). BatchNorm eps 1e-5.

``ResNet(..., num_classes=None)`` has no ``fc`` and ``forward`` returns the
pooled features; ``forward_features`` returns the last feature map for
methods that put their own heads on it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, width * 4)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


ARCHS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """torchvision-layout ResNet; ``ResNet(50)`` is ``resnet50``'s module tree."""

    def __init__(self, depth: int = 50, num_classes: int | None = 1000):
        super().__init__()
        if depth not in ARCHS:
            raise ValueError(f"ResNet depth {depth} is not one of {sorted(ARCHS)}")
        block, units = ARCHS[depth]
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (n, width) in enumerate(zip(units, (64, 128, 256, 512)), start=1):
            stride = 1 if i == 1 else 2
            cout = width * block.expansion
            down = None
            if stride != 1 or cin != cout:
                down = nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
            layers = [block(cin, width, stride, down)]
            layers += [block(cout, width) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            cin = cout
        self.num_features = cin
        self.fc = nn.Linear(cin, num_classes) if num_classes else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,H,W) -> the layer4 map (N, C, H/32, W/32)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 3, 2, padding=1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x).mean(dim=(2, 3))
        return x if self.fc is None else self.fc(x)
