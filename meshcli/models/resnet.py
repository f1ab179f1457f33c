"""ResNet-50 (He et al., 2016) in torchvision's layout, without importing torchvision.

Module and parameter names are torchvision's (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc`` ...), so official
checkpoints of methods built on ``torchvision.models.resnetXX`` map onto it
key for key. Post-activation units; the stride of a stage sits in its first
unit, on the 3x3 convolution of a bottleneck (torchvision >= 0.2, "ResNet
v1.5"). BatchNorm eps 1e-5.

The trunk only (SPIN and I2L-MeshNet put their own heads on it): no ``fc``;
``forward`` returns the pooled features. ``BasicBlock`` serves HRNet and SRN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .inference import conv_bn_relu


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
        y = conv_bn_relu(self.conv1, self.bn1, x)
        return conv_bn_relu(self.conv2, self.bn2, y, residual=x if self.downsample is None else self.downsample(x))


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
        y = conv_bn_relu(self.conv2, self.bn2, conv_bn_relu(self.conv1, self.bn1, x))
        return conv_bn_relu(self.conv3, self.bn3, y, residual=x if self.downsample is None else self.downsample(x))


UNITS = (3, 4, 6, 3)  # bottleneck units per stage of ResNet-50


class ResNet(nn.Module):
    """``torchvision.models.resnet50``'s module tree without its ``fc`` classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (n, width) in enumerate(zip(UNITS, (64, 128, 256, 512)), start=1):
            stride = 1 if i == 1 else 2
            cout = width * Bottleneck.expansion
            down = None
            if stride != 1 or cin != cout:
                down = nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
            layers = [Bottleneck(cin, width, stride, down)]
            layers += [Bottleneck(cout, width) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            cin = cout
        self.num_features = cin

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> the max-pooled stem output (N, 64, H/4, W/4)."""
        return F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, padding=1)

    def stages(self, x: torch.Tensor) -> torch.Tensor:
        """Stem output (N, 64, h, w) -> the layer4 map (N, 2048, h/8, w/8)."""
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> pooled layer4 features (N, 2048)."""
        return self.stages(self.stem(x)).mean(dim=(2, 3))
