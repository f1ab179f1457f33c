"""Turn a loaded network into its inference form: no autograd, BatchNorm folded, channels_last, and the
ReLU and residual add that follow a folded convolution run inside it.

Folding replaces each eval-mode ``BatchNorm2d`` that directly follows a
convolution by an identity and scales the convolution instead (computed in
float64, so the folded weights round once). ``channels_last`` (NHWC) is the
layout oneDNN's CPU convolutions run fastest in (and cuDNN's tensor cores):
measured 0.64-0.72x the wall time of NCHW on DEKR.

Once folded, a convolution followed by a ReLU, or by a residual add and a ReLU, runs as one oneDNN call
with the add and the ReLU as post-ops (``conv_bn_relu``): the separate passes each wrote a fresh full-size
tensor, which on HRNet's widest branch cost as much as the convolution itself (measured 0.5x the time of the
three separate calls, results bit-identical).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# oneDNN's convolution with post-ops (what torch.compile's CPU backend calls); absent in builds without oneDNN
_CONV_POINTWISE = getattr(torch.ops.mkldnn, "_convolution_pointwise", None) if torch.backends.mkldnn.is_available() \
    else None


def fold_into(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d
              ) -> tuple[nn.Parameter, nn.Parameter]:
    """(weight, bias) of a convolution (output channels first) followed by ``bn``, as one convolution."""
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * scale
    if bias is not None:
        shift = shift + bias.double() * scale
    folded = weight.double() * scale.view(-1, *([1] * (weight.dim() - 1)))
    return (nn.Parameter(folded.to(weight.dtype), requires_grad=False),
            nn.Parameter(shift.to(weight.dtype), requires_grad=False))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold BatchNorms into the convolution before them, in place; returns ``model``.

    A BatchNorm follows a convolution when it is the next child of an
    ``nn.Sequential`` or when they are siblings named ``conv<k>`` / ``bn<k>``
    (the ResNet/HRNet naming). Only for eval mode: the running statistics
    are baked in.
    """
    for parent in list(model.modules()):
        pairs = []
        if isinstance(parent, nn.Sequential):
            pairs = [(k - 1, k) for k in range(1, len(parent))]
        else:
            names = dict(parent.named_children())
            pairs = [("conv" + name[2:], name) for name in names if name.startswith("bn") and "conv" + name[2:] in names]
        for conv_key, bn_key in pairs:
            conv, bn = (parent[conv_key], parent[bn_key]) if isinstance(parent, nn.Sequential) else \
                (getattr(parent, conv_key), getattr(parent, bn_key))
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                conv.weight, conv.bias = fold_into(conv.weight, conv.bias, bn)
                if isinstance(parent, nn.Sequential):
                    parent[bn_key] = nn.Identity()
                else:
                    setattr(parent, bn_key, nn.Identity())
    return model


def for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """eval, no autograd, BatchNorm folded, on ``device`` in channels_last (feed it channels_last inputs).

    Without autograd, matmul no longer copies operands that require grad (measured 0.9x).
    """
    model = fold_batchnorm(model.eval().requires_grad_(False))
    return model.to(device, memory_format=torch.channels_last)


def _fusable(conv: nn.Conv2d, bn: nn.Module | None, x: torch.Tensor) -> bool:
    """Whether oneDNN can run ``conv`` with its post-ops here: BatchNorm folded (or none), CPU float32, no
    autograd, not traced."""
    return (_CONV_POINTWISE is not None and (bn is None or isinstance(bn, nn.Identity)) and x.device.type == "cpu"
            and x.dtype == torch.float32 and not torch.is_grad_enabled() and not torch.jit.is_tracing()
            and isinstance(conv.padding, tuple) and conv.padding_mode == "zeros")


def conv_bn_relu(conv: nn.Conv2d, bn: nn.Module | None, x: torch.Tensor, residual: torch.Tensor | None = None,
                 relu: bool = True) -> torch.Tensor:
    """``relu(bn(conv(x)) + residual)`` (the add and the ReLU optional): one oneDNN call once ``bn`` is folded.

    ``bn`` None: a convolution with no BatchNorm after it."""
    if _fusable(conv, bn, x):
        args = (conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        if residual is None:
            return _CONV_POINTWISE(x, *args, "relu" if relu else "none", [], "")
        return _CONV_POINTWISE.binary(x, residual, *args, "add", 1.0, "relu" if relu else None, [], "")
    y = conv(x) if bn is None else bn(conv(x))
    if residual is not None:
        y = y + residual
    return F.relu(y) if relu else y
