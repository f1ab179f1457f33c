"""Inference forms of networks (meshcli.models.inference, DEKR's FusedAdaptBlock) compute what the originals do."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from meshcli.methods import dekr
from meshcli.models import inference
from meshcli.models.hrnet import HRNet
from meshcli.models.inference import fold_batchnorm, for_inference


def randomise_batchnorms(model: nn.Module, seed: int) -> None:
    """Statistics and affine parameters far from the identity, so a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(c, generator=g))
            m.bias.data.copy_(torch.randn(c, generator=g))


def test_folding_removes_every_batchnorm_and_keeps_the_output():
    torch.manual_seed(0)
    net = HRNet(width=8, stage_modules=(1, 1, 1), num_blocks=1).eval()
    randomise_batchnorms(net, 1)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want = net(x)
        got = for_inference(net, torch.device("cpu"))(x.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert all(not p.requires_grad for p in net.parameters())
    assert net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_folding_leaves_a_batchnorm_that_follows_no_convolution():
    seq = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)).eval()
    fold_batchnorm(seq)
    assert isinstance(seq[1], nn.BatchNorm2d) and isinstance(seq[3], nn.Identity)


def test_fused_adapt_block_equals_the_official_block():
    torch.manual_seed(2)
    block = dekr.AdaptBlock(15).eval()
    randomise_batchnorms(block, 3)
    for conv in (block.transform_matrix_conv, block.translation_conv):
        nn.init.normal_(conv.weight, std=0.3)  # offsets of a few pixels, reaching across the border
        nn.init.normal_(conv.bias, std=0.5)
    x = torch.randn(2, 15, 20, 28)
    with torch.no_grad():
        want = block(x)
        fused = dekr.FusedAdaptBlock(block)
        got = fused(x)
        got_nhwc = fused(x.contiguous(memory_format=torch.channels_last))
    assert float(want.abs().mean()) > 0.1
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_nhwc, want, rtol=1e-4, atol=1e-4)


def test_dekr_inference_form_equals_the_official_network():
    """inference_form, then for_inference: the same outputs as the official modules, offsets reaching outside."""
    torch.manual_seed(5)
    net = dekr.DekrNet(8, 3).eval()
    randomise_batchnorms(net.transition_offset, 6)
    randomise_batchnorms(net.transition_heatmap, 30)
    for k, block in enumerate(m for m in net.modules() if isinstance(m, dekr.AdaptBlock)):
        randomise_batchnorms(block, 7 + k)
        for conv in (block.transform_matrix_conv, block.translation_conv):
            nn.init.normal_(conv.weight, std=0.3)
            nn.init.normal_(conv.bias, std=2.0)  # translations of a few grid cells, across the 16x24 border
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want = net(x)
        fused = for_inference(net.inference_form(), torch.device("cpu"))
        got = fused(x.contiguous(memory_format=torch.channels_last))
    assert float(want[1].abs().mean()) > 0.1
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("translation", [2.0, 1e4])  # a few grid cells across the border; far outside the grid
def test_point_offset_head_equals_the_dense_head_where_it_is_read(translation):
    torch.manual_seed(8)
    net = dekr.DekrNet(8, 3).eval()
    randomise_batchnorms(net, 9)
    for block in (m for m in net.modules() if isinstance(m, dekr.AdaptBlock)):
        nn.init.normal_(block.transform_matrix_conv.weight, std=0.3)
        nn.init.normal_(block.translation_conv.bias, std=translation)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want = net(x)[1]  # the official modules, every pixel: (2, 6, 16, 24)
        fused = for_inference(net.inference_form(), torch.device("cpu"))
        _, features = fused.heads(x.contiguous(memory_format=torch.channels_last))
        image, row, column = (t.flatten() for t in torch.meshgrid(
            torch.arange(2), torch.arange(16), torch.arange(24), indexing="ij"))  # 768 pixels: three passes
        every = fused.point_offsets(features, image, row, column)
        some = torch.tensor([700, 3, 3, 0, 767, 400, 23])  # any order, repeats, the grid's corners
        picked = fused.point_offsets(features, image[some], row[some], column[some])
        none = fused.point_offsets(features, image[:0], row[:0], column[:0])
    assert float(want.abs().mean()) > 0.1
    torch.testing.assert_close(every, want.permute(0, 2, 3, 1).flatten(0, 2), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(picked, every[some], rtol=1e-5, atol=1e-6)
    assert none.shape == (0, 6)


def test_dekr_predictor_runs_the_inference_form():
    predictor = dekr.DekrPredictor(None, "w32-coco", rescore=False)
    model = predictor.model
    assert not any(isinstance(m, (nn.BatchNorm2d, dekr.AdaptBlock)) for m in model.modules())
    assert sum(isinstance(m, dekr.FusedAdaptBlock) for m in model.modules()) == 2 * 17
    assert model.branchwise_transitions is not None and not hasattr(model, "transition_offset")
    assert all(not p.requires_grad for p in model.parameters())


def test_folded_convolutions_run_with_their_add_and_relu_inside(monkeypatch):
    op = inference._CONV_POINTWISE
    if op is None:
        pytest.skip("this torch build has no oneDNN")
    calls = []

    class Counting:
        def __call__(self, *args):
            calls.append(args[-3])  # the post-op: relu or none
            return op(*args)

        def binary(self, *args):
            calls.append(f"add+{args[-3]}")
            return op.binary(*args)

    torch.manual_seed(4)
    net = HRNet(width=8, stage_modules=(1, 1, 1), num_blocks=1).eval()
    randomise_batchnorms(net, 5)
    x = torch.randn(1, 3, 64, 64)
    monkeypatch.setattr(inference, "_CONV_POINTWISE", Counting())
    with torch.no_grad():
        want = net(x)
        assert not calls  # BatchNorms not folded yet: the plain modules run
        got = for_inference(net, torch.device("cpu"))(x.contiguous(memory_format=torch.channels_last))
    assert calls.count("add+relu") == 4 + 2 + 3 + 4  # every residual unit: layer1, then one per branch and stage
    assert "relu" in calls and "none" in calls  # stem and transitions; the fuse layers' strided convs
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_branchwise_transitions_equal_convolving_the_concatenated_branches():
    torch.manual_seed(6)
    net = dekr.DekrNet(8, 17).eval()
    randomise_batchnorms(net, 7)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        want = net(x)
        got = net.fuse_transitions()(x)
    assert not hasattr(net, "transition_heatmap") and not hasattr(net, "transition_offset")
    assert float(want[1].abs().mean()) > 0.01
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
