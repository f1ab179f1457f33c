"""Deformable 2D convolution (one offset group) that runs without compiled ops.

The semantics are those of torchvision's ``deform_conv2d``: for output pixel
``(y, x)`` and kernel tap ``k = i * kw + j`` the input is sampled at

    (y * stride - pad + i * dilation + dy_k,  x * stride - pad + j * dilation + dx_k)

where ``offset[:, 2k]`` is ``dy_k`` and ``offset[:, 2k + 1]`` is ``dx_k``,
with bilinear interpolation that reads 0 outside the image. On CUDA the
compiled torchvision kernel is used when it imports; everywhere else (and
always on CPU, where this build of torchvision has no working ops) the
pure-torch path below computes the same thing, chunked over output rows so
that the sampled columns stay within a fixed memory budget.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

# Upper bound for the im2col buffer of one chunk (float32 elements x 4 bytes).
_COLUMN_BUDGET_BYTES = 16 << 20

_compiled = None  # torchvision.ops.deform_conv2d once looked up, False if unavailable


def _compiled_kernel():
    global _compiled
    if _compiled is None:
        try:
            from torchvision.ops import deform_conv2d as kernel  # needs torchvision's compiled ops
            _compiled = kernel
        except Exception:  # ImportError, or RuntimeError from a CPU-only / mismatched build
            _compiled = False
    return _compiled or None


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None = None, stride: int = 1, padding: int = 0,
                  dilation: int = 1) -> torch.Tensor:
    """Deformable convolution of ``x`` (N,C,H,W) with ``offset`` (N,2*kh*kw,Ho,Wo)."""
    kh, kw = weight.shape[-2:]
    if offset.shape[1] != 2 * kh * kw:
        raise ValueError(f"offset has {offset.shape[1]} channels; one offset group of a "
                         f"{kh}x{kw} kernel needs {2 * kh * kw}")
    if x.is_cuda:
        kernel = _compiled_kernel()
        if kernel is not None:
            try:
                return kernel(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation)
            except torch.OutOfMemoryError:
                raise
            except (RuntimeError, NotImplementedError):  # torchvision built without CUDA kernels
                global _compiled
                _compiled = False
    return deform_conv2d_torch(x, offset, weight, bias, stride, padding, dilation)


def deform_conv2d_torch(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor | None = None, stride: int = 1, padding: int = 0,
                        dilation: int = 1, budget_bytes: int = _COLUMN_BUDGET_BYTES) -> torch.Tensor:
    """Pure-torch deformable convolution: bilinear im2col by ``grid_sample``, then one matmul per chunk.

    ``grid_sample`` (zeros padding) reads each of the four neighbours outside
    the image as 0, exactly the sampling rule of torchvision's kernel; going
    through normalised coordinates costs about 1e-5 px of position. Its
    output *is* the im2col matrix (channel-major, then tap). Each chunk's
    product covers the whole batch in one batched matmul (as fast as one
    matmul per sample written in place, measured on DEKR's forward).
    """
    n = x.shape[0]
    out_ch, _, kh, kw = weight.shape
    wo = offset.shape[-1]
    w2d = weight.reshape(out_ch, -1)
    chunks = _columns(x, offset, kh, kw, stride, padding, dilation, budget_bytes)
    out = torch.cat([torch.matmul(w2d, cols).view(n, out_ch, r1 - r0, wo) for r0, r1, cols in chunks], 2)
    return out if bias is None else out.add_(bias[None, :, None, None])


def _columns(x: torch.Tensor, offset: torch.Tensor, kh: int, kw: int, stride: int, padding: int,
             dilation: int, budget_bytes: int) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(first row, end row, im2col matrix (N, C*kh*kw, rows*Wo)) per chunk of output rows."""
    n, c, h, w = x.shape
    ho, wo = offset.shape[-2:]
    taps = kh * kw
    # Positions in grid_sample's [-1, 1] units (align_corners=False: -1 is the left edge of pixel 0):
    # p -> (2p + 1) / size - 1, so each tap's base position and its offset scale separately.
    ys = torch.arange(ho, device=x.device, dtype=x.dtype) * stride - padding
    xs = torch.arange(wo, device=x.device, dtype=x.dtype) * stride - padding
    tap_y = (torch.arange(kh, device=x.device, dtype=x.dtype) * dilation).repeat_interleave(kw)
    tap_x = (torch.arange(kw, device=x.device, dtype=x.dtype) * dilation).repeat(kh)
    base_y = (2 * (ys[None, :, None] + tap_y[:, None, None]) + 1) / h - 1  # (taps, Ho, 1)
    base_x = (2 * (xs[None, None, :] + tap_x[:, None, None]) + 1) / w - 1  # (taps, 1, Wo)
    rows_per_chunk = max(1, budget_bytes // (x.element_size() * n * (c + 2) * taps * wo))
    for r0 in range(0, ho, rows_per_chunk):
        r1 = min(ho, r0 + rows_per_chunk)
        off = offset[:, :, r0:r1].unflatten(1, (taps, 2))  # (N, taps, dy|dx, rows, Wo)
        grid = torch.stack([base_x + off[:, :, 1] * (2 / w), base_y[:, r0:r1] + off[:, :, 0] * (2 / h)], -1)
        cols = F.grid_sample(x, grid.flatten(1, 2), mode="bilinear",
                             padding_mode="zeros", align_corners=False)  # (N, C, taps*rows, Wo)
        yield r0, r1, cols.flatten(2).unflatten(2, (taps, -1)).flatten(1, 2)  # (N, C*taps, rows*Wo)


class DeformConv2d(nn.Module):
    """Drop-in for torchvision.ops.DeformConv2d (one offset group): same parameter names."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 0, dilation: int = 1, bias: bool = True):
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation)
