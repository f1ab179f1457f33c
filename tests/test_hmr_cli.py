"""`meshcli body --method hmr` end to end: parity through the CLI, a real video, and setup errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from meshcli.cli import app

from conftest import FIXTURES, SHARED, video_facts

CASE = FIXTURES / "hmr-tf"
DATA = FIXTURES / "data" / "hmr_demo"
INFO = json.loads((CASE / "case.json").read_text())
TOL = INFO["tolerance_atol"]
EXPECTED = np.load(CASE / "expected_subset.npz")


def meshcli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def setup(parity_checkpoints, fake_smpl):
    return parity_checkpoints("hmr-tf", name="model.ckpt-667589"), fake_smpl


def test_parity_through_the_cli(setup, tmp_path):
    ckpt, smpl = setup
    images = {item["i"]: DATA / item["image"].split("/")[-1] for item in INFO["inputs"]}
    common = ["--method", "hmr", "--weights", ckpt, "--smpl", smpl, "--save-vertices", "--out", tmp_path, "-q"]
    run = meshcli("body", images[0], images[1], images[2], *common, "--detector", "full")
    assert run.exit_code == 0, run.output
    run = meshcli("body", images[3], *common, "--openpose", DATA / "random_keypoints.json", "--save-mesh")
    assert run.exit_code == 0, run.output
    for i, image in images.items():
        npz = np.load(tmp_path / f"{image.stem}.npz")
        assert npz["frame_index"].tolist() == [0] and npz["method"] == "hmr" and not npz["untrained"]
        theta = EXPECTED[f"theta_{i}"][-1]
        for key, want, tol in (("cam", theta[:3], "cam"), ("global_orient", theta[3:6], "theta"),
                               ("body_pose", theta[6:75], "theta"), ("betas", theta[75:], "theta"),
                               ("joints3d", EXPECTED[f"joints3d_{i}"], "joints3d"),
                               ("joints2d", EXPECTED[f"joints2d_img_{i}"], "joints2d_img")):
            np.testing.assert_allclose(npz[key][0], want, rtol=0, atol=TOL[tol], err_msg=f"{key} of input {i}")
        np.testing.assert_allclose(npz["vertices"][0][::20], EXPECTED[f"verts_every20_{i}"], rtol=0,
                                   atol=TOL["verts"], err_msg=f"vertices of input {i}")
        assert (tmp_path / image.name).is_file()  # the mesh overlay
    npz = np.load(tmp_path / "random.npz")
    assert npz["detector"] == "openpose"
    # --save-mesh: the person's mesh at its cam_t, SMPL's faces
    lines = (tmp_path / "random_meshes" / "random_00.obj").read_text().splitlines()
    v = np.array([[float(x) for x in line.split()[1:]] for line in lines if line.startswith("v ")])
    assert v.shape == (6890, 3) and sum(line.startswith("f ") for line in lines) == 13776
    np.testing.assert_allclose(v, npz["vertices"][0] + npz["cam_t"][0], atol=2e-6)


def test_real_video_keeps_every_frame(setup, tmp_path):
    """Stand-in (random) weights on a real video; people from a boxes file in a few frames only.

    (Boxes are small: the stand-in SMPL's faces join random vertices, so its mesh is a cloud of
    large triangles that software OpenGL is slow to fill at full-HD.)
    """
    ckpt, smpl = setup
    video = SHARED / "data" / "video" / "single_person_demo.mp4"
    facts = video_facts(video)
    last = facts["frames"] - 1
    frames = {"0": [[900, 400, 60, 120], [300, 900, 40, 80, 0.5]], "1": [], "20": [[880, 420, 60, 120]],
              f"single_person_demo.mp4#{last}": [[860, 420, 60, 120]]}
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"frames": frames}))
    run = meshcli("body", video, "--method", "hmr", "--random-weights", "--smpl", smpl, "--boxes", boxes,
                  "--out", tmp_path, "--batch-size", "16", "-q")
    assert run.exit_code == 0, run.output
    out = video_facts(tmp_path / "single_person_demo.mp4")
    assert out["frames"] == facts["frames"] and out["fps"] == facts["fps"]
    npz = np.load(tmp_path / "single_person_demo.npz")
    assert npz["frame_index"].tolist() == [0, 0, 20, last] and npz["num_frames"] == facts["frames"]
    assert npz["untrained"] and npz["detector"] == "boxes"
    np.testing.assert_allclose(npz["bbox"][:2], [[900, 400, 960, 520], [300, 900, 340, 980]])
    np.testing.assert_allclose(npz["score"], [1.0, 0.5, 1.0, 1.0])
    assert npz["joints2d"].shape == (4, 19, 2) and "vertices" not in npz.files


def test_setup_errors_come_before_any_frame(setup, tmp_path, monkeypatch):
    ckpt, smpl = setup
    image = DATA / "im1954.jpg"
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "empty-store"))
    run = meshcli("body", image, "--method", "hmr", "--weights", ckpt, "--detector", "full", "--out", tmp_path)
    assert run.exit_code != 0
    assert "SMPL body model is not set up" in run.output and "meshcli weights import smpl" in run.output

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.ckpt-667589.index").write_bytes(ckpt.with_name("model.ckpt-667589.index").read_bytes())
    (broken / "model.ckpt-667589.data-00000-of-00001").write_bytes(b"\0" * 1000)
    run = meshcli("body", image, "--method", "hmr", "--weights", broken / "model.ckpt-667589", "--smpl", smpl,
                  "--detector", "full", "--out", tmp_path / "out")
    assert run.exit_code != 0 and "data shard is truncated" in " ".join(run.output.split())
    assert not (tmp_path / "out").exists()

    run = meshcli("body", image, "--method", "hmr", "--random-weights", "--smpl", smpl, "--detector", "full",
                  "--openpose", DATA / "random_keypoints.json", "--out", tmp_path / "out")
    assert run.exit_code != 0 and "give only one of --detector, --openpose, --boxes" in " ".join(run.output.split())


def test_imported_checkpoint_and_smpl_are_used_from_the_store(setup, tmp_path, monkeypatch):
    """`weights import hmr` converts the TF checkpoint once; `weights import smpl` stores a clean npz."""
    ckpt, smpl = setup
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
    assert meshcli("weights", "import", "hmr", ckpt).exit_code == 0
    assert meshcli("weights", "import", "smpl", smpl).exit_code == 0
    stored = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert stored == ["hmr_model.ckpt-667589.pth", "hmr_model.ckpt-667589.pth.provenance.json",
                      "smpl_neutral.npz", "smpl_neutral.npz.provenance.json"]
    image = DATA / INFO["inputs"][0]["image"].split("/")[-1]
    run = meshcli("body", image, "--method", "hmr", "--detector", "full", "--renderer", "wireframe", "-q",
                  "--out", tmp_path)
    assert run.exit_code == 0, run.output
    npz = np.load(tmp_path / f"{image.stem}.npz")
    assert str(npz["renderer"]) == "wireframe" and (tmp_path / image.name).is_file()
    theta = EXPECTED["theta_0"][-1]
    np.testing.assert_allclose(npz["betas"][0], theta[75:], rtol=0, atol=TOL["theta"])
    assert str(npz["weights"]) == "hmr_model.ckpt-667589.pth"


def test_fetch_takes_checkpoint_and_smpl_from_the_models_archive(setup, tmp_path, monkeypatch):
    """`meshcli weights fetch hmr` against a loopback server holding a models.tar.gz laid out as HMR's."""
    import functools
    import http.server
    import tarfile
    import threading

    from meshcli import records

    ckpt, smpl = setup
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "models.tar.gz", "w") as tar:  # uncompressed: quicker, read the same way
        for f in ckpt.parent.glob(ckpt.name + ".*"):
            tar.add(f, arcname=f"models/{f.name}")
        tar.add(smpl, arcname="models/neutral_smpl_with_cocoplus_reg.pkl")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        entry = records.record("hmr")
        local = records.WeightsRecord(**{**entry.__dict__, "url": f"http://127.0.0.1:{server.server_port}/models.tar.gz"})
        known = records.manifest()
        monkeypatch.setattr(records, "manifest", lambda: {**known, "hmr": local})
        monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
        run = meshcli("weights", "fetch", "hmr")
        assert run.exit_code == 0, run.output
    finally:
        server.shutdown()
    assert (tmp_path / "store" / "hmr_model.ckpt-667589.pth").is_file()
    assert (tmp_path / "store" / "smpl_neutral.npz").is_file()


def test_import_takes_the_models_archive_as_downloaded(setup, tmp_path, monkeypatch):
    """`meshcli weights import hmr models.tar.gz`: the checkpoint and its SMPL, from the gzipped archive."""
    import tarfile

    ckpt, smpl = setup
    archive = tmp_path / "models.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in ckpt.parent.glob(ckpt.name + ".*"):
            tar.add(f, arcname=f"models/{f.name}")
        tar.add(smpl, arcname="models/neutral_smpl_with_cocoplus_reg.pkl")
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
    run = meshcli("weights", "import", "hmr", str(archive))
    assert run.exit_code == 0, run.output
    assert (tmp_path / "store" / "hmr_model.ckpt-667589.pth").is_file()
    assert (tmp_path / "store" / "smpl_neutral.npz").is_file()
