"""The GPU fast path: --half refused off CUDA, cuDNN autotuning on CUDA, pinned non-blocking batch copies."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import meshcli
from meshcli.cli import app
from meshcli.device import autocast, resolve_device, to_device
from meshcli.errors import MeshcliError

from conftest import FIXTURES, PARITY, REPO, need_shared

IMAGE = REPO / "examples" / "coco_000000000785.jpg"
REFUSAL = "--half runs the networks in fp16 on a CUDA GPU; this run is on cpu"


@pytest.mark.parametrize("command", [
    ["pose", IMAGE, "--method", "dekr"],
    ["body", IMAGE, "--method", "hmr", "--detector", "full"],
    ["bench", IMAGE, "--method", "dekr"],
])
def test_half_is_refused_on_the_cpu(tmp_path, command):
    out = ["--out", str(tmp_path)] if command[0] != "bench" else []
    run = CliRunner().invoke(app, [str(a) for a in command] + ["--half", "--device", "cpu", "--random-weights", *out])
    assert run.exit_code != 0
    lines = [line for line in run.output.splitlines() if line.strip()]
    assert len(lines) == 1 and REFUSAL in lines[0], run.output
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_half_is_refused_by_the_python_api():
    with pytest.raises(MeshcliError, match="--half runs the networks in fp16"):
        meshcli.load("srn", random_weights=True, device="cpu", half=True)


def test_without_half_networks_run_as_they_are():
    assert autocast(torch.device("cpu"), False).__class__.__name__ == "nullcontext"
    x = torch.ones(2, 2)
    with autocast(torch.device("cpu"), False):
        assert (x @ x).dtype == torch.float32


class CopyLog:
    """Records ``pin_memory`` and ``to`` on tensors (a CPU-only torch cannot really copy to CUDA)."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple] = []
        monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: self.calls.append(("pin_memory",)) or t)
        monkeypatch.setattr(torch.Tensor, "to", lambda t, *args, **kwargs: self.calls.append(("to", args, kwargs)) or t)


def test_batches_go_to_cuda_pinned_and_without_blocking(monkeypatch):
    log = CopyLog(monkeypatch)
    batch = torch.zeros(2, 3)
    assert to_device(batch, torch.device("cuda")) is batch
    assert log.calls == [("pin_memory",), ("to", (torch.device("cuda"),), {"non_blocking": True})]


def test_cpu_batches_are_not_pinned(monkeypatch):
    log = CopyLog(monkeypatch)
    to_device(torch.zeros(2, 3), torch.device("cpu"))
    assert log.calls == [("to", (torch.device("cpu"),), {})]


def test_body_crops_reach_the_network_through_the_copy_helper(monkeypatch, fake_smpl):
    from meshcli.methods import body

    predictor = meshcli.load("spin", random_weights=True, device="cpu", smpl=fake_smpl, detector="full")
    seen = []
    monkeypatch.setattr(body, "to_device", lambda batch, device: seen.append((batch.shape, device)) or batch)
    predictor.predict(np.zeros((64, 48, 3), np.uint8))
    assert seen == [((1, 3, 224, 224), torch.device("cpu"))]


def test_cudnn_autotunes_on_cuda_only(monkeypatch):
    # torch's backend flags live behind module __getattr__/__setattr__ hooks, which newer pytest's monkeypatch
    # cannot undo: saved and restored by hand
    flags = [(torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "allow_tf32"),
             (torch.backends.cuda.matmul, "allow_tf32")]
    saved = [getattr(owner, name) for owner, name in flags]
    try:
        torch.backends.cudnn.benchmark = False
        resolve_device("cpu")
        assert torch.backends.cudnn.benchmark is False
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        assert resolve_device("cuda") == torch.device("cuda")
        assert torch.backends.cudnn.benchmark is True
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        for (owner, name), value in zip(flags, saved):
            setattr(owner, name, value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: --half is fp16 autocast on CUDA")
def test_half_dekr_stays_near_float32_on_cuda(parity_checkpoints):
    """fp16 on the DEKR fixture: the same people as float32, keypoints within the fixtures' 2 px."""
    from meshcli.io.sources import read_rgb
    from meshcli.types import Frame

    need_shared()
    case = json.loads((FIXTURES / "dekr-w32-coco-ctrbias" / "case.json").read_text())
    image = read_rgb((PARITY / "dekr-w32-coco-ctrbias" / case["inputs"][0]["path"]).resolve())
    results = {}
    for half in (False, True):
        predictor = meshcli.load("dekr", "w32-coco", parity_checkpoints("dekr-w32-coco-ctrbias"), device="cuda",
                                 half=half, rescore=False)
        results[half] = predictor([Frame(image, 0, "image")])[0].rows["keypoints"]
    assert results[True].shape == results[False].shape
    error = np.abs(results[True][..., :2] - results[False][..., :2]).max()
    print(f"--half keypoints differ from float32 by at most {error:.3f} px")
    assert error <= 2.0


def test_standin_smpl_needs_no_shared_tools(tmp_path, body_smpl):
    """benchmarks/gpu.sh makes the body-like stand-in on a machine with this repository only."""
    from standin_body import write_standin_smpl

    from meshcli.smpl import SMPLModel

    alone, shared = (SMPLModel.from_file(p) for p in (write_standin_smpl(tmp_path / "smpl.pkl"), body_smpl))
    np.testing.assert_array_equal(alone.faces, shared.faces)
    for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights", "parents"):
        np.testing.assert_array_equal(getattr(alone.layer, name).numpy(), getattr(shared.layer, name).numpy(),
                                      err_msg=name)
    assert alone.cocoplus_regressor.shape == shared.cocoplus_regressor.shape
