"""`meshcli pose --method dekr` end to end through the CLI: parity with the official DEKR, outputs, bad inputs."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from meshcli.cli import app

from conftest import FIXTURES, PARITY, REPO, need_shared, real_clip, video_facts
from joint_scores import LIMIT, joint_score_error, record_heatmaps

CASES = ("dekr-w32-coco", "dekr-w32-coco-ctrbias")


def meshcli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def case_images(case: str) -> list[Path]:
    info = json.loads((FIXTURES / case / "case.json").read_text())
    return [(PARITY / case / item["path"]).resolve() for item in info["inputs"]]


@pytest.fixture(scope="module", params=CASES)
def pose_run(request, parity_checkpoints, tmp_path_factory):
    """Both CLI runs of a case (with and without rescoring) over its four images in one command each."""
    case = request.param
    need_shared()
    ckpt = parity_checkpoints(case)
    rescore = parity_checkpoints(case, "rescore_spec.json")
    images = case_images(case)
    outs, heatmaps = {}, {}
    for mode, extra in (("rescore", ["--rescore-weights", rescore]), ("norescore", ["--no-rescore"])):
        out = tmp_path_factory.mktemp(f"{case}-{mode}")
        with pytest.MonkeyPatch.context() as monkeypatch:  # both runs sample the same heatmaps
            heatmaps[mode] = record_heatmaps(monkeypatch)
            run = meshcli("pose", *images, "--method", "dekr", "--variant", "w32-coco", "--weights", ckpt,
                          *extra, "--out", out, "--quiet")
        assert run.exit_code == 0, run.output
        assert len(heatmaps[mode]) == len(images)
        outs[mode] = out
    return case, images, outs, np.load(FIXTURES / case / "expected.npz"), heatmaps


def check_people(got_kp, got_scores, want_kp, want_scores, score_rtol, want_inputres, heatmap, label):
    assert got_kp.shape == want_kp.shape, f"{label}: {got_kp.shape[0]} people, official {want_kp.shape[0]}"
    if not len(want_kp):
        return {}
    xy = np.abs(got_kp[..., :2] - want_kp[..., :2]).max()
    joint, _ = joint_score_error(got_kp, want_kp, want_inputres, heatmap)
    assert xy <= 2.0, f"{label}: keypoints differ by {xy} px"
    assert joint <= LIMIT, f"{label}: joint scores differ by {joint} of the largest"
    np.testing.assert_allclose(got_scores, want_scores, rtol=score_rtol, err_msg=label)
    return {"xy_px": float(xy), "joint_rel": float(joint),
            "score_rel": float(np.max(np.abs(got_scores / want_scores - 1)))}


def test_cli_matches_official_dekr(pose_run):
    case, images, outs, expected, heatmaps = pose_run
    errors = {}
    for i, image in enumerate(images):
        for mode, (kp_key, sc_key, rtol) in {"rescore": ("poses", "scores", 0.005),
                                              "norescore": ("poses_norescore", "scores_norescore", 0.002)}.items():
            got = np.load(outs[mode] / f"{image.stem}.npz")
            errors[(i, mode)] = check_people(got["keypoints"], got["scores"], expected[f"{kp_key}_{i}"],
                                             expected[f"{sc_key}_{i}"], rtol, expected[f"poses_inputres_{i}"],
                                             heatmaps[mode][i], f"{case} image {i} {mode}")
            assert got["keypoints"].dtype == np.float32
            np.testing.assert_array_equal(got["frame_index"], np.zeros(len(got["keypoints"])))
    print(case, errors)


def test_onnxruntime_backend_matches_official_dekr(parity_checkpoints, tmp_path, monkeypatch):
    """--backend onnxruntime: the same parity with the official outputs; the exported graph is kept in the
    store and the next run loads it instead of exporting again."""
    pytest.importorskip("onnxruntime")
    from meshcli.models import onnx_backend

    case = "dekr-w32-coco-ctrbias"
    need_shared()
    ckpt, rescore = parity_checkpoints(case), parity_checkpoints(case, "rescore_spec.json")
    images, expected = case_images(case), np.load(FIXTURES / case / "expected.npz")
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
    args = ["--method", "dekr", "--variant", "w32-coco", "--weights", ckpt, "--rescore-weights", rescore,
            "--backend", "onnxruntime", "--quiet"]
    with pytest.MonkeyPatch.context() as recording:
        heatmaps = record_heatmaps(recording)
        run = meshcli("pose", *images, *args, "--out", tmp_path / "first")
    assert run.exit_code == 0, run.output
    for i, image in enumerate(images):
        got = np.load(tmp_path / "first" / f"{image.stem}.npz")
        assert str(got["backend"]) == "onnxruntime"
        check_people(got["keypoints"], got["scores"], expected[f"poses_{i}"], expected[f"scores_{i}"], 0.005,
                     expected[f"poses_inputres_{i}"], heatmaps[i], f"{case} image {i} onnxruntime")
    assert len(list((tmp_path / "store" / "onnx").glob("dekr-w32-coco-*.onnx"))) == 1

    def no_export(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_backend, "export", no_export)
    run = meshcli("pose", images[0], *args, "--out", tmp_path / "second")
    assert run.exit_code == 0, run.output
    np.testing.assert_array_equal(np.load(tmp_path / "second" / f"{images[0].stem}.npz")["keypoints"],
                                  np.load(tmp_path / "first" / f"{images[0].stem}.npz")["keypoints"])


def test_onnxruntime_backend_is_refused_with_one_line_where_it_cannot_run(monkeypatch):
    import sys

    import torch

    import meshcli
    from meshcli.errors import MeshcliError
    from meshcli.models.onnx_backend import check_backend

    with pytest.raises(MeshcliError, match="unknown --backend 'tensorrt'"):
        meshcli.load("dekr", random_weights=True, backend="tensorrt")
    with pytest.raises(MeshcliError, match="--backend onnxruntime runs on the CPU"):
        check_backend("onnxruntime", torch.device("cuda"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    with pytest.raises(MeshcliError, match=r'pip install "meshcli\[onnx\]"'):
        meshcli.load("dekr", random_weights=True, backend="onnxruntime")


def test_npz_and_coco_json_contents(pose_run):
    case, images, outs, expected, _ = pose_run
    for i, image in enumerate(images):
        got = np.load(outs["rescore"] / f"{image.stem}.npz")
        kp = got["keypoints"]
        assert str(got["method"]) == "dekr" and str(got["variant"]) == "w32-coco"
        assert list(got["joint_names"])[:3] == ["nose", "left_eye", "right_eye"] and len(got["joint_names"]) == 17
        assert str(got["weights"]) == "spec.pth" and re.fullmatch(r"[0-9a-f]{64}", str(got["weights_sha256"]))
        assert not bool(got["untrained"])
        h, w = got["image_size"]
        assert (h, w) == tuple(json.loads((FIXTURES / case / "case.json").read_text())["inputs"][i]["image_size_hw"])
        # the box encloses each person's keypoints
        if len(kp):
            np.testing.assert_allclose(got["bbox"][:, :2], kp[..., :2].min(1), atol=1e-3)
            np.testing.assert_allclose(got["bbox"][:, 2:], kp[..., :2].max(1), atol=1e-3)
        records = json.loads((outs["rescore"] / f"{image.stem}.coco.json").read_text())
        assert len(records) == len(kp)
        for rec, person, score in zip(records, kp, got["scores"]):
            assert rec["image_id"] == int(image.stem) and rec["category_id"] == 1
            flat = np.asarray(rec["keypoints"]).reshape(17, 3)
            np.testing.assert_allclose(flat[:, :2], person[:, :2], atol=1e-3)
            assert rec["score"] == pytest.approx(float(score), rel=1e-6)
        assert (outs["rescore"] / image.name).is_file()  # annotated image


def test_wrong_variant_checkpoint_is_refused_before_any_frame(parity_checkpoints, tmp_path):
    ckpt = parity_checkpoints("dekr-w32-coco")
    image = REPO / "examples" / "coco_000000000785.jpg"
    run = meshcli("pose", image, "--method", "dekr", "--variant", "w48-coco", "--weights", ckpt, "--no-rescore",
                  "--out", tmp_path / "out")
    assert run.exit_code != 0
    line = run.output.strip().splitlines()[-1]
    assert line.startswith("error:") and "spec.pth" in line and "does not match" in line
    assert not (tmp_path / "out").exists()


def test_missing_weights_are_reported_before_any_frame(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
    run = meshcli("pose", REPO / "examples" / "coco_000000000785.jpg", "--out", tmp_path / "out")
    assert run.exit_code != 0
    assert "pose_dekr_hrnetw32_coco.pth" in run.output and "meshcli weights import dekr-w32-coco" in run.output
    assert not (tmp_path / "out").exists()


def test_bad_inputs_fail_alone_through_the_cli(tmp_path):
    """Every kind of bad input in one batch: each one line naming the file; the good image still finishes."""
    import cv2

    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), np.full((48, 64, 3), 90, np.uint8))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("not a jpeg")
    folder = tmp_path / "no_images"
    folder.mkdir()
    (folder / "readme.txt").write_text("x")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes((REPO / "examples" / "multi_person_demo.mp4").read_bytes()[:60000])
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    run = meshcli("pose", missing, empty, text, folder, cut, good, "--random-weights", "--out", out)
    assert run.exit_code == 1
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    for bad in (missing, empty, text, folder, cut):
        assert sum(bad.name in line for line in errors) == 1, (bad, errors)
    assert "5 input(s) or file(s) failed" in run.output
    assert sorted(p.name for p in out.iterdir()) == ["good.coco.json", "good.jpg", "good.npz", "meshcli_run"]
    assert bool(np.load(out / "good.npz")["untrained"])


def test_readme_quick_start_main_job_runs_as_written(tmp_path):
    """The README's second Quick start line, run by the installed console script."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", readme, re.S).group(1).splitlines()
    assert len(block) == 3
    job = block[1].replace("--out meshcli_out", f"--out {tmp_path}")
    assert job != block[1], "the quick start should name its output folder"
    subprocess.run(job, shell=True, check=True, cwd=REPO)
    npz = np.load(tmp_path / "coco_000000000785.npz")
    assert bool(npz["untrained"]) and npz["keypoints"].shape[1:] == (17, 3)


def test_real_video_end_to_end(tmp_path):
    """The first 8 frames of the shipped real clip."""
    src = real_clip(tmp_path / "people.mp4", 8)
    out = tmp_path / "out"
    run = meshcli("pose", src, "--random-weights", "--batch-size", "4", "--out", out)
    assert run.exit_code == 0, run.output
    assert video_facts(out / "people.mp4") == {"frames": 8, "fps": 12.0, "codec": "h264", "pix_fmt": "yuv420p",
                                               "audio": 0}
    npz = np.load(out / "people.npz")
    assert int(npz["num_frames"]) == 8 and float(npz["fps"]) == 12.0
    np.testing.assert_array_equal(npz["image_size"], [1920, 1080])
    assert set(npz["frame_index"]) <= set(range(8)) and (np.diff(npz["frame_index"]) >= 0).all()
    assert npz["track_id"].shape == npz["frame_index"].shape and npz["track_id"].dtype == np.int32  # a video
    assert (npz["track_id"] >= 0).all() and "keypoints_raw" not in npz  # smoothing is off by default
    records = json.loads((out / "people.coco.json").read_text())
    assert len(records) == len(npz["keypoints"]) and {r["image_id"] for r in records} <= set(range(8))


def test_missing_rescoring_net_names_the_file_and_the_way_out(parity_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
    run = meshcli("pose", REPO / "examples" / "coco_000000000785.jpg", "--weights",
                  parity_checkpoints("dekr-w32-coco"), "--out", tmp_path / "out")
    assert run.exit_code != 0
    assert "final_rescore_coco_kpt.pth" in run.output and "--no-rescore" in run.output
    assert not (tmp_path / "out").exists()
