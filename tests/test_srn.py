"""SRN parity with the official code, step by step, on the fixture checkpoint (official format).

The expected arrays (tests/fixtures/srn-hands17-nyu-*/expected.npz, copied from
../shared/parity without the full depth frames) are what RenFeiTemp/SRN computed.
Intermediate arrays are compared in the official working frame (mirrored for
the realtime case); final joints after converting the official outputs into
the input image's own frame: u -> 639 - u when mirrored, x, y, z the pinhole
back-projection of (u, v, d), y down.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from meshcli.checkpoints import load_state_dict_strict
from meshcli.errors import MeshcliError
from meshcli.methods import srn
from meshcli.types import Frame

from conftest import FIXTURES, make_checkpoint, need_shared

NYU = FIXTURES / "data" / "nyu"
CASES = ("srn-hands17-nyu-centre", "srn-hands17-nyu-auto")


@pytest.fixture(scope="session")
def srn_checkpoint(tmp_path_factory) -> Path:
    """The fixture checkpoint in the official format, named as the released file."""
    parity = need_shared()
    out = tmp_path_factory.mktemp("srn") / "offset_000_240.pth"
    return make_checkpoint(parity / CASES[0] / "spec.json", out)


def case_files(case: str) -> tuple[dict, dict]:
    folder = FIXTURES / case
    return json.loads((folder / "case.json").read_text()), dict(np.load(folder / "expected.npz"))


def nyu_depth_u16() -> np.ndarray:
    """The auto case's 16-bit PNG content, rebuilt from the NYU frame (B + 256*G, lossless)."""
    bgr = cv2.imread(str(NYU / "depth_1_0000001.png"))
    return bgr[:, :, 0].astype(np.uint16) + bgr[:, :, 1].astype(np.uint16) * 256


def case_predictor(case: str, checkpoint: Path, tmp_path: Path) -> tuple[srn.SrnPredictor, Path]:
    """The predictor and input file for a case, set up as the issue's command lines."""
    cfg, _ = case_files(case)
    k = cfg["intrinsics"]
    intrinsics = f"{k['fx']},{k['fy']},{k['cx']},{k['cy']}"
    if cfg["centre"]["source"] == "file":
        pred = srn.SrnPredictor(checkpoint, intrinsics=intrinsics, depth_format="nyu",
                                centres=NYU / "center_test_refined.txt", centres_format="nyu",
                                cube=cfg["cube_mm"][0], mirror=cfg["flip"]["horizontal_image_flip"])
        return pred, NYU / "depth_1_0000001.png"
    path = tmp_path / "DEPTH16.png"
    cv2.imwrite(str(path), nyu_depth_u16())
    pred = srn.SrnPredictor(checkpoint, intrinsics=intrinsics, centre="auto", cube=cfg["cube_mm"][0],
                            mirror=cfg["flip"]["horizontal_image_flip"])
    return pred, path


def to_image_frame(uvd: np.ndarray, mirrored: bool, width: int = 640) -> np.ndarray:
    out = np.asarray(uvd, np.float64).copy()
    if mirrored:
        out[..., 0] = (width - 1) - out[..., 0]
    return out


def check(name: str, got, want, tol: dict, key: str | None = None) -> float:
    err = float(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)).max())
    atol = tol[key or name]["atol"]
    assert np.asarray(got).shape == np.asarray(want).shape, name
    assert err <= atol, f"{name}: max error {err:.3g} > {atol}"
    return err


@pytest.mark.parametrize("case", CASES)
def test_parity_step_by_step(case, srn_checkpoint, tmp_path):
    cfg, exp = case_files(case)
    tol = cfg["tolerance"]
    mirrored = cfg["flip"]["horizontal_image_flip"]
    pred, path = case_predictor(case, srn_checkpoint, tmp_path)
    depth = pred.read_image(path)
    # Both decodings of the frame give the same millimetres (README step 1).
    assert depth.dtype == np.float32 and np.array_equal(depth, nyu_depth_u16().astype(np.float32))

    item = pred.preprocess(Frame(depth, 0, path.name))
    assert item.status == "ok"
    check("centre_uvd", item.centre_uvd, exp["centre_uvd"], tol)
    assert item.centre_depth == pytest.approx(float(exp["centre_depth_for_norm"]), abs=0)
    check("crop_mm", item.crop_mm, exp["crop_mm"], tol)
    check("M", item.M, exp["M"], tol)
    check("input", item.input[None], exp["input"], tol)

    x = torch.from_numpy(item.input[None])
    with torch.no_grad():
        stages, maps = pred.model(x)
        maps.append(srn.offset_maps(stages[-1], x, pred.model.map_size))  # computed, not consumed, officially
    assert len(stages) == 3 and len(maps) == 3
    for k in range(3):
        check(f"stage_{k}", stages[k], exp[f"stage_{k}"], tol, "stage_k")
        check(f"feature_{k}", maps[k], exp[f"feature_{k}"], tol, "feature_k")

    # Final joints through the predictor's own path, in the input image's frame.
    result = pred([Frame(depth, 0, path.name)])[0]
    assert result.info["status"] == "ok"
    want_uvd = to_image_frame(exp["joints_uvd"], mirrored)
    check("joints_uvd", result.rows["joints_uvd"][0], want_uvd, tol)
    check("joints_xyz", result.rows["joints_xyz"][0], srn.back_project(want_uvd, pred.intrinsics), tol)
    want_centre = srn.back_project(to_image_frame(exp["centre_uvd"], mirrored), pred.intrinsics)
    check("centre_xyz", result.rows["centre_xyz"][0], want_centre, tol)

    # The official xyz differ only by frame convention: y up (NYU) / mirrored x (realtime).
    official = exp["joints_xyz"].astype(np.float64)
    ours = srn.back_project(exp["joints_uvd"], pred.intrinsics)
    ours[:, 1] *= cfg["flip"]["y_sign"]
    assert np.abs(ours - official).max() < 1e-3


def test_checkpoint_is_loaded_strictly(srn_checkpoint, tmp_path):
    srn.validate_checkpoint(srn_checkpoint, "hands17")
    state = srn.torch_load(srn_checkpoint, srn.tensor_bytes(srn.build_model("hands17")))
    assert len(state) == 306 and list(state)[:1] == ["pre.0.weight"]
    model = srn.build_model("hands17")
    # Old torch wrote BatchNorm's num_batches_tracked as shape [1]: accepted.
    old = {k: (v.reshape(1) if k.endswith("num_batches_tracked") else v) for k, v in state.items()}
    load_state_dict_strict(model, old, srn_checkpoint, "SRN model")
    assert torch.equal(model.fcs[2].bias, state["fcs.2.bias"])

    missing = {k: v for k, v in state.items() if k != "features.1.0.0.downsample.0.weight"}
    with pytest.raises(MeshcliError, match="features.1.0.0.downsample.0.weight"):
        load_state_dict_strict(model, missing, srn_checkpoint, "SRN model")
    wrong = dict(state, **{"fcs.0.weight": torch.zeros(42, 512)})  # a 14-joint head
    with pytest.raises(MeshcliError, match=r"fcs.0.weight \(42, 512\)"):
        load_state_dict_strict(model, wrong, srn_checkpoint, "SRN model")

    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {"a": torch.zeros(1)}}, wrapped)
    with pytest.raises(MeshcliError, match="plain state dict"):
        srn.validate_checkpoint(wrapped, "hands17")


def cli_command(case: str, checkpoint: Path, tmp_path: Path) -> tuple[list[str], Path]:
    """The issue's Done-when command line for a case, and the NPZ it writes."""
    out = tmp_path / "out"
    if case == "srn-hands17-nyu-centre":
        for name in ("depth_1_0000001.png", "center_test_refined.txt"):
            (tmp_path / name).write_bytes((NYU / name).read_bytes())
        line = (f"hand depth_1_0000001.png --method srn --weights {checkpoint} --depth-format nyu "
                f"--intrinsics 588.03,587.07,320,240 --centres center_test_refined.txt --centres-format nyu "
                f"--cube 250 --no-mirror --out {out}")
        return line.split(), out / "depth_1_0000001.npz"
    cv2.imwrite(str(tmp_path / "DEPTH16.png"), nyu_depth_u16())
    line = (f"hand DEPTH16.png --method srn --weights {checkpoint} --intrinsics 588.03,587.07,320,240 "
            f"--centre auto --cube 250 --mirror --out {out}")
    return line.split(), out / "DEPTH16.npz"


@pytest.mark.parametrize("case", CASES)
def test_parity_through_the_cli(case, srn_checkpoint, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from meshcli.cli import app

    cfg, exp = case_files(case)
    tol = cfg["tolerance"]
    args, npz_path = cli_command(case, srn_checkpoint, tmp_path)
    monkeypatch.chdir(tmp_path)
    run = CliRunner().invoke(app, args)
    assert run.exit_code == 0, run.output
    npz = np.load(npz_path)
    want_uvd = to_image_frame(exp["joints_uvd"], cfg["flip"]["horizontal_image_flip"])
    assert npz["joints_uvd"].shape == (1, 21, 3) and list(npz["frame_index"]) == [0]
    check("joints_uvd", npz["joints_uvd"][0], want_uvd, tol)
    check("joints_xyz", npz["joints_xyz"][0], srn.back_project(want_uvd, srn.INTRINSICS["nyu"]), tol)
    assert list(npz["joint_names"]) == cfg["joint_order"]["names"]
    assert list(npz["frame_status"]) == ["ok"] and not bool(npz["untrained"])
    assert npz["weights"] == "offset_000_240.pth" and str(npz["files"][0]) == Path(args[1]).name
    assert (npz_path.with_suffix(".png")).is_file()  # the annotated frame
