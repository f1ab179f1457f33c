"""The Python API: meshcli.load(...).predict(...), meshcli.run, and the registry and records behind them."""
from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys

import numpy as np
import pytest

import meshcli
from meshcli import records
from meshcli.errors import MeshcliError
from meshcli.methods import METHODS, dekr
from meshcli.people import DekrPeople, FixedBox, WholeFrame
from meshcli.smpl import SMPL_JOINT_NAMES

from conftest import REPO, write_video


@pytest.fixture()
def small_dekr(monkeypatch):
    """DEKR at a 128 px input: the same code path, a fraction of the time."""
    monkeypatch.setattr(dekr, "record_for", lambda m, v: dataclasses.replace(records.record_for(m, v), input_size=128))


def test_import_meshcli_loads_no_torch():
    code = "import sys, meshcli; meshcli.__version__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dekr_predict_gives_a_pose_result_per_image(small_dekr):
    predictor = meshcli.load("dekr", random_weights=True, device="cpu")
    image = np.zeros((96, 128, 3), np.uint8)
    result = predictor.predict(image)
    assert type(result).__name__ == "PoseResult"
    assert result.keypoints.shape[1:] == (17, 3) and len(result.scores) == len(result.boxes) == result.num_people
    rows = result.to_rows()
    assert set(rows) == {"frame_index", "keypoints", "scores", "bbox"} and len(rows["frame_index"]) == result.num_people
    assert result.plot().shape == image.shape
    assert [type(r).__name__ for r in predictor.predict([image])] == ["PoseResult"]  # a list gives a list


def test_body_predict_with_a_stand_in_smpl(fake_smpl):
    predictor = meshcli.load("hmr", random_weights=True, device="cpu", smpl=fake_smpl, detector="full",
                             renderer="wireframe")
    assert predictor.renderer_used is None  # made at the first drawing, not when loading
    image = np.full((120, 90, 3), 40, np.uint8)
    result = predictor.predict(image)
    assert type(result).__name__ == "BodyResult" and result.num_people == 1
    assert result.body_pose.shape == (1, 69) and result.betas.shape == (1, 10) and result.joints2d.shape == (1, 19, 2)
    np.testing.assert_array_equal(result.boxes, [[0, 0, 90, 120]])
    assert result.plot().shape == image.shape and predictor.renderer_used.backend == "wireframe"
    assert predictor.joint_names == records.record("hmr").joint_names  # the predictor reads its weights record


def test_i2l_predict_with_a_fixed_box(fake_smpl):
    predictor = meshcli.load("i2l", random_weights=True, device="cpu", smpl=fake_smpl, bbox="10,20,40,60")
    assert isinstance(predictor.source, FixedBox)
    result = predictor.predict(np.zeros((100, 80, 3), np.uint8))
    assert type(result).__name__ == "BodyResult" and result.rows["joints_img"].shape == (1, 29, 3)


def test_srn_predict_on_a_depth_map():
    predictor = meshcli.load("srn", random_weights=True, device="cpu", intrinsics="200,200,80,60", centre="0,0,500")
    depth = np.full((120, 160), 500.0, np.float32)
    result = predictor.predict(depth)
    assert type(result).__name__ == "HandResult" and result.joints_xyz.shape == (1, 21, 3)
    assert result.status == "ok" and np.isfinite(result.joints_uvd).all()


def test_body_detector_is_untrained_with_random_weights(fake_smpl, small_dekr, tmp_path, monkeypatch):
    """--random-weights covers the detector: no DEKR weights are needed, and the detector runs in batches."""
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path))  # an empty store
    predictor = meshcli.load("spin", random_weights=True, device="cpu", smpl=fake_smpl, detector="dekr")
    assert isinstance(predictor.detector, DekrPeople) and predictor.detector.network.weights.untrained
    results = predictor.predict([np.zeros((64, 96, 3), np.uint8)] * 2)
    assert len(results) == 2 and all(type(r).__name__ == "BodyResult" for r in results)


def test_run_writes_what_the_cli_writes(fake_smpl, tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=3)
    summary = meshcli.run("hmr", [video], tmp_path / "out", random_weights=True, device="cpu", smpl=fake_smpl,
                          detector="full", renderer="wireframe", batch_size=2)
    assert isinstance(summary, meshcli.RunSummary) and not summary.failures
    assert {p.name for p in summary.written} == {"clip.npz", "clip.mp4"} and summary.times.frames == 3


def test_load_errors_are_the_cli_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path))
    with pytest.raises(MeshcliError, match="meshcli weights import dekr-w32-coco"):
        meshcli.load("dekr")
    with pytest.raises(MeshcliError, match="unknown --variant w99 for dekr"):
        meshcli.load("dekr", "w99", random_weights=True)
    with pytest.raises(MeshcliError, match="is not a method meshcli knows"):
        meshcli.load("vibe")
    with pytest.raises(MeshcliError, match="--focal only apply to --method i2l"):
        meshcli.load("spin", random_weights=True, focal=1000)
    with pytest.raises(MeshcliError, match="--detector and --boxes both choose the people"):
        meshcli.load("hmr", random_weights=True, detector="full", boxes=tmp_path / "b.json")
    with pytest.raises(MeshcliError, match="unknown --renderer"):
        meshcli.load("spin", random_weights=True, detector="full", renderer="vulkan")
    with pytest.raises(MeshcliError, match="--scales"):
        meshcli.load("dekr", random_weights=True, scales="1,x")
    with pytest.raises(MeshcliError, match="srn takes HxW depth maps in mm, not a uint8 array of shape"):
        meshcli.load("srn", random_weights=True, device="cpu").predict(np.zeros((8, 8, 3), np.uint8))


def test_a_missing_detector_checkpoint_never_advises_the_body_networks_weights(tmp_path, monkeypatch, fake_smpl):
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
    body_weights = tmp_path / "hmr.pth"  # the body network's file is given; only the detector's is missing
    body_weights.write_bytes(b"not read: the detector is checked first")
    with pytest.raises(MeshcliError) as err:
        meshcli.load("hmr", weights=body_weights, smpl=fake_smpl, detector="dekr")
    line = err.value.line()
    assert "--detector dekr" in line and "meshcli weights import dekr-w32-coco" in line and "--detector hog or full" in line
    assert "--weights" not in line


def test_default_person_source_follows_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path))
    from meshcli.api import person_source

    assert isinstance(person_source(), WholeFrame)  # no DEKR weights: the whole frame


def test_every_method_variant_has_one_weights_record():
    for name, spec in METHODS.items():
        architectures = importlib.import_module(spec.predictor.partition(":")[0]).VARIANTS
        assert spec.variants and spec.variants == tuple(architectures), name  # records and networks agree
        for variant in spec.variants:
            record = spec.record(variant)
            assert record.role == "network" and record.input_size and record.joint_names and record.normalisation
            assert (spec.validator is None) != (spec.converter is None)
    assert records.record("spin").joint_names == SMPL_JOINT_NAMES
    assert records.record("i2l-body").joint_names[:24] == SMPL_JOINT_NAMES
    assert {r.role for r in records.manifest().values()} == set(records.ROLES)
