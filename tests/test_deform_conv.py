"""meshcli.ops.deform_conv against a direct, loop-by-loop reference of torchvision's definition."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from meshcli.ops import DeformConv2d, deform_conv2d
from meshcli.ops.deform_conv import deform_conv2d_torch


def sample(image: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """Bilinear value of (C,H,W) ``image`` at (y, x): 0 beyond one pixel outside, outside neighbours 0."""
    c, h, w = image.shape
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return image.new_zeros(c)
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    value = image.new_zeros(c)
    for yy, xx, weight in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                           (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        if 0 <= yy < h and 0 <= xx < w:
            value = value + weight * image[:, yy, xx]
    return value


def reference(x, offset, weight, bias=None, stride=1, padding=0, dilation=1):
    n, _, _, _ = x.shape
    out_ch, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    out = x.new_zeros(n, out_ch, ho, wo)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                for i in range(kh):
                    for j in range(kw):
                        k = i * kw + j
                        y = oy * stride - padding + i * dilation + float(offset[b, 2 * k, oy, ox])
                        xx = ox * stride - padding + j * dilation + float(offset[b, 2 * k + 1, oy, ox])
                        out[b, :, oy, ox] += weight[:, :, i, j] @ sample(x[b], y, xx)
    if bias is not None:
        out += bias[:, None, None]
    return out


def make(seed, n=2, c=3, h=6, w=7, out_ch=4, k=3, stride=1, padding=1, dilation=1, kind="fractional",
         dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    weight = torch.randn(out_ch, c, k, k, generator=g, dtype=dtype)
    ho = (h + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    shape = (n, 2 * k * k, ho, wo)
    if kind == "integer":
        offset = torch.randint(-3, 4, shape, generator=g).to(dtype)
    elif kind == "fractional":
        offset = 2.5 * torch.randn(shape, generator=g, dtype=dtype)
    else:  # far outside, and straddling the border by less than one pixel
        offset = torch.where(torch.rand(shape, generator=g) < 0.5,
                             20 * torch.randn(shape, generator=g, dtype=dtype),
                             torch.full(shape, -1.0 + 1e-3, dtype=dtype) * torch.randint(-1, 2, shape, generator=g))
        offset[:, :, 0, 0] = -(h + 5)  # every tap of this pixel above the image: reads 0
    return x, offset, weight


@pytest.mark.parametrize("kind", ["integer", "fractional", "outside"])
@pytest.mark.parametrize("geometry", [dict(), dict(stride=2, padding=2, dilation=2), dict(k=1, padding=0)])
def test_matches_reference(kind, geometry):
    x, offset, weight = make(1, kind=kind, **geometry)
    bias = torch.randn(weight.shape[0], dtype=x.dtype)
    args = {k: v for k, v in geometry.items() if k != "k"}
    want = reference(x, offset, weight, bias, **{"stride": 1, "padding": 1, "dilation": 1, **args})
    got = deform_conv2d(x, offset, weight, bias, **{"stride": 1, "padding": 1, "dilation": 1, **args})
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_float32_within_rounding_and_far_outside_is_zero():
    x, offset, weight = make(2, kind="outside", dtype=torch.float32)
    got = deform_conv2d(x, offset, weight, padding=1)
    want = reference(x.double(), offset.double(), weight.double(), padding=1)
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    assert torch.all(got[:, :, 0, 0] == 0)


def test_zero_offsets_equal_a_plain_convolution():
    x, offset, weight = make(3)
    got = deform_conv2d(x, torch.zeros_like(offset), weight, padding=1)
    torch.testing.assert_close(got, F.conv2d(x, weight, padding=1), rtol=1e-12, atol=1e-12)


def test_row_chunks_give_the_same_result():
    x, offset, weight = make(4, h=9, w=11)
    whole = deform_conv2d_torch(x, offset, weight, padding=1)
    one_row_at_a_time = deform_conv2d_torch(x, offset, weight, padding=1, budget_bytes=1)
    torch.testing.assert_close(one_row_at_a_time, whole, rtol=1e-12, atol=1e-12)


def test_module_has_torchvision_parameter_names():
    conv = DeformConv2d(5, 6, 3, padding=1, bias=False)
    assert list(conv.state_dict()) == ["weight"]
    assert list(DeformConv2d(5, 6, 3, padding=1).state_dict()) == ["weight", "bias"]
    x = torch.randn(1, 5, 4, 4)
    assert conv(x, torch.zeros(1, 18, 4, 4)).shape == (1, 6, 4, 4)


def test_wrong_offset_channels_are_refused():
    x, offset, weight = make(5)
    with pytest.raises(ValueError, match="one offset group"):
        deform_conv2d(x, offset[:, :4], weight, padding=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (compiled torchvision kernel)")
def test_cuda_matches_pure_torch():
    x, offset, weight = make(6, c=8, h=20, w=24, out_ch=8, dtype=torch.float32)
    cpu = deform_conv2d_torch(x, offset, weight, padding=1)
    gpu = deform_conv2d(x.cuda(), offset.cuda(), weight.cuda(), padding=1).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)
