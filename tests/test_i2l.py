"""I2L-MeshNet against the official code's outputs (parity case ``i2l-body-coco``), step by step.

The snapshot (590 MB, official layout) and the stand-in SMPL model are written at test
time from ../shared/parity. The expected arrays are a subset of the case's
expected.npz (tests/fixtures/i2l-body-coco/expected_subset.npz): 300 of the 6890
vertices (``vertex_index``), every 4th crop pixel and feature channel/pixel of the
64-channel maps, every 16th channel of the 2048-channel maps; everything else whole.
Tolerances are the case's (case.json ``tolerance``).
"""
from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, need_shared
from typer.testing import CliRunner

from meshcli import smpl
from meshcli.types import Person
from meshcli.cli import app
from meshcli.errors import MeshcliError
from meshcli.io.sources import read_rgb
from meshcli.methods import i2l
from meshcli.types import Frame
from meshcli.methods.body import BodyFrame

CASE_DIR = FIXTURES / "i2l-body-coco"
CASE = json.loads((CASE_DIR / "case.json").read_text())
IMAGES = CASE["images"]
CFG = i2l.VARIANTS["body"]


@pytest.fixture(scope="module")
def expected():
    with np.load(CASE_DIR / "expected_subset.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="session")
def i2l_files(parity_checkpoints, fake_smpl):
    return parity_checkpoints("i2l-body-coco", name="snapshot_8.pth.tar"), fake_smpl


@pytest.fixture(scope="module")
def predictor(i2l_files):
    snapshot, smpl = i2l_files
    return i2l.I2LPredictor(snapshot, smpl=smpl, bbox=IMAGES[0]["bbox_xywh"], save_vertices=True,
                            renderer="wireframe")  # the OpenCV painter: no GL set-up in tests


def image_path(i: int) -> Path:
    return (need_shared() / "i2l-body-coco" / IMAGES[i]["path"]).resolve()


def image(i: int) -> np.ndarray:
    return read_rgb(image_path(i))


def expected_joints_img(expected, i: int) -> np.ndarray:
    """The demo's mapping of the lixel mesh, applied to the official PoseNet joints."""
    lix = expected[f"joint_coord_img_{i}"]
    uv = (expected[f"inv_trans_{i}"] @ np.c_[lix[:, :2] / 64 * 256, np.ones(len(lix))].T).T
    return np.c_[uv, (lix[:, 2] / 64 * 2 - 1) * 1.0 + CASE["root_depth_m"]]


def close(actual, wanted, atol: float, what: str) -> None:
    actual, wanted = np.asarray(actual), np.asarray(wanted)
    assert actual.shape == wanted.shape, f"{what}: shape {actual.shape} != {wanted.shape}"
    err = float(np.abs(actual.astype(np.float64) - wanted).max()) if actual.size else 0.0
    assert err <= atol, f"{what}: max abs error {err:.3g} > {atol:g}"


# ----------------------------------------------------------------------------- crop


@pytest.mark.parametrize("i", [0, 1])
def test_crop_matrix_and_network_input(i, expected):
    img = image(i)
    h, w = img.shape[:2]
    assert [h, w] == IMAGES[i]["image_hw"]
    square = i2l.crop_region(IMAGES[i]["bbox_xywh"], w, h)
    np.testing.assert_array_equal(square, expected[f"bbox_processed_{i}"])
    trans, inv_trans = i2l.crop_transforms(square, CFG["input_size"])
    np.testing.assert_array_equal(trans, expected[f"trans_{i}"])
    np.testing.assert_array_equal(inv_trans, expected[f"inv_trans_{i}"])
    crop = i2l.crop_input(img, trans, CFG["input_size"])
    assert crop.shape == (3, 256, 256) and crop.dtype == np.float32
    close(crop[None, :, ::4, ::4], expected[f"input_{i}"], 1e-6, "input")


def test_bbox_sanitiser_edge_cases():
    # The official rule: the top-left is clipped without shortening the box (it shifts),
    # the far side is clipped to the image, each side loses one pixel; then squared, x1.25.
    np.testing.assert_array_equal(i2l.crop_region([-10, -10, 31, 11], 100, 100), [-3.75, -13.75, 37.5, 37.5])
    np.testing.assert_array_equal(i2l.crop_region([90, 0, 20, 20], 100, 100), [82.625, -2.375, 23.75, 23.75])
    assert i2l.crop_region([200, 10, 30, 30], 100, 100) is None  # right of the image
    assert i2l.crop_region([10, 10, 0, 30], 100, 100) is None  # no area


# ----------------------------------------------------------------------------- network


@pytest.fixture(scope="module")
def network_run(predictor):
    """The lixel stage on both crops, with the official intermediate outputs captured by hooks."""
    net = predictor.net
    inputs = []
    for i in (0, 1):
        img = image(i)
        square = i2l.crop_region(IMAGES[i]["bbox_xywh"], img.shape[1], img.shape[0])
        inputs.append(i2l.crop_input(img, i2l.crop_transforms(square, CFG["input_size"])[0], CFG["input_size"]))
    seen = {}
    hooks = [net.pose_backbone.layer1.register_forward_pre_hook(lambda m, a: seen.update(shared_img_feat=a[0]))]
    for name, module in (("pose_backbone_out", net.pose_backbone.layer4), ("joint_hm_logits", net.pose_net),
                         ("pose2feat_out", net.pose2feat), ("mesh_backbone_out", net.mesh_backbone.layer4),
                         ("mesh_hm_logits", net.mesh_net)):
        hooks.append(module.register_forward_hook(lambda m, a, out, name=name: seen.update({name: out})))
    try:
        with torch.no_grad():
            joints, vertices = net(torch.from_numpy(np.stack(inputs)))
    finally:
        for h in hooks:
            h.remove()
    seen = {k: v.numpy() for k, v in seen.items()}
    seen.update(joint_coord_img=joints.numpy(), mesh_coord_img=vertices.numpy())
    return seen


@pytest.mark.parametrize("i", [0, 1])
def test_network_step_by_step(i, network_run, expected):
    out = {k: v[i] for k, v in network_run.items()}
    v = expected["vertex_index"]
    close(out["shared_img_feat"][None, ::4, ::4, ::4], expected[f"shared_img_feat_{i}"], 5e-5, "early feature")
    close(out["pose_backbone_out"][None, ::16], expected[f"pose_backbone_out_{i}"], 5e-5, "pose backbone")
    close(out["joint_hm_logits"], expected[f"joint_hm_logits_{i}"], 5e-4, "PoseNet logits")
    close(out["joint_coord_img"], expected[f"joint_coord_img_{i}"], 5e-3, "PoseNet joints (lixel)")
    close(out["pose2feat_out"][None, ::4, ::4, ::4], expected[f"pose2feat_out_{i}"], 5e-5, "Pose2Feat")
    close(out["mesh_backbone_out"][None, ::16], expected[f"mesh_backbone_out_{i}"], 5e-5, "mesh backbone")
    close(out["mesh_hm_logits"][:, v], expected[f"mesh_hm_logits_{i}"], 5e-4, "MeshNet logits")
    close(out["mesh_coord_img"][v], expected[f"mesh_coord_img_{i}"], 5e-3, "MeshNet vertices (lixel)")


@pytest.mark.parametrize("i", [0, 1])
def test_lixel_mesh_to_image_and_camera(i, predictor, network_run, expected):
    v = expected["vertex_index"]
    focal, principal = predictor.camera(tuple(IMAGES[i]["image_hw"]))
    assert principal == tuple(IMAGES[i]["princpt"]) and focal == (1500, 1500)
    cam = i2l.to_camera(network_run["joint_coord_img"][i], network_run["mesh_coord_img"][i],
                        expected[f"inv_trans_{i}"], predictor.root_row, focal, principal,
                        CASE["root_depth_m"], CFG)
    close(cam["root_img"], expected[f"root_img_{i}"], 2e-3, "root (image)")
    close(cam["root_cam"], expected[f"root_cam_{i}"], 1e-5, "root (camera)")
    close(cam["mesh_img"][v], expected[f"mesh_img_{i}"], 5e-2, "lixel mesh (image)")
    close(cam["mesh_cam"][v], expected[f"mesh_cam_{i}"], 5e-4, "lixel mesh (camera)")
    close(cam["joints_img"], expected_joints_img(expected, i), 5e-2, "joints (image)")


# ----------------------------------------------------------------------------- param stage


def check_param(out: i2l.ParamOutput, expected, prefix: str, suffix: str) -> None:
    v = expected["vertex_index"]
    close(out.pose6d[0], expected[f"{prefix}pose6d{suffix}"], 5e-4, "6-D rotations")
    close(out.rotmat[0], expected[f"{prefix}rotmat{suffix}"], 1e-4, "rotation matrices")
    close(out.pose[0], expected[f"{prefix}pose_param{suffix}"], 1e-4, "axis-angle pose")
    close(out.betas[0], expected[f"{prefix}shape_param{suffix}"], 2e-4, "betas")
    close(out.vertices[0][v], expected[f"{prefix}smpl_verts{suffix}"], 2e-4, "SMPL vertices")
    close(out.mesh[0][v], expected[f"{prefix}mesh_coord_cam{suffix}"], 2e-4, "root-relative param mesh")


def run_param(predictor, joints: np.ndarray) -> i2l.ParamOutput:
    with torch.no_grad():
        out = i2l.param_stage(predictor.net.param_regressor, predictor.smpl, predictor.joint_regressor,
                              torch.from_numpy(joints)[None])
    return i2l.ParamOutput(*(t.numpy() for t in vars(out).values()))


def test_param_stage_probe(predictor, expected):
    check_param(run_param(predictor, expected["probe_input"]), expected, "probe_", "")


@pytest.mark.parametrize("i", [0, 1])
def test_param_stage(i, predictor, network_run, expected):
    joints = torch.from_numpy(network_run["mesh_coord_img"][i:i + 1])
    regressed = (predictor.joint_regressor @ joints)[0].numpy()
    close(regressed, expected[f"joint_img_from_mesh_{i}"], 5e-3, "joints from the lixel mesh")
    check_param(run_param(predictor, expected[f"joint_img_from_mesh_{i}"]), expected, "", f"_{i}")


def test_axis_angle_matches_torchgeometry_cases():
    # Rotations by pi about each axis and a generic one exercise all four quaternion cases.
    aa = torch.tensor([[np.pi, 0, 0], [0, np.pi, 0], [0, 0, np.pi], [0.3, -0.2, 0.5], [0, 0, 0]], dtype=torch.float64)
    angle = aa.norm(dim=1, keepdim=True)
    k = torch.where(angle > 0, aa / angle.clamp_min(1e-12), torch.zeros_like(aa))
    kx = torch.zeros(len(aa), 3, 3, dtype=torch.float64)
    kx[:, 0, 1], kx[:, 0, 2], kx[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    kx = kx - kx.transpose(1, 2)
    r = torch.eye(3, dtype=torch.float64) + torch.sin(angle)[..., None] * kx \
        + (1 - torch.cos(angle))[..., None] * kx @ kx
    back = smpl.rotmat_to_axis_angle(r)
    # a rotation by pi about a is the same as about -a
    for got, want in zip(back, aa):
        assert torch.allclose(got, want, atol=1e-6) or torch.allclose(got, -want, atol=1e-6)


# ----------------------------------------------------------------------------- predictor


def test_stage_chooses_the_overlay_mesh(predictor, network_run):
    img = image(0)
    x, y, w, h = IMAGES[0]["bbox_xywh"]
    person = Person(np.array([x, y, x + w, y + h]), "box")
    frame = BodyFrame(0, img.shape[:2], [person], [predictor.crop(img, person)])
    mesh = torch.from_numpy(network_run["mesh_coord_img"][:1])
    with torch.no_grad():
        param = i2l.param_stage(predictor.net.param_regressor, predictor.smpl, predictor.joint_regressor,
                                predictor.joint_regressor @ mesh)
    raw = {"joint_coord_img": network_run["joint_coord_img"][:1], "mesh_coord_img": mesh.numpy(),
           "pose": param.pose.numpy(), "betas": param.betas.numpy(), "mesh_coord_cam": param.mesh.numpy(),
           "pelvis": param.pelvis.numpy()}
    lixel = predictor.postprocess(frame, raw)
    assert set(lixel.rows) == set(predictor.empty_rows()) == {
        "bbox", "principal_point", "joints_img", "global_orient", "body_pose", "betas", "cam_t", "mesh_cam",
        "mesh_cam_param"}
    # cam_t carries SMPL's own mesh to the parameter mesh (export places the body with it)
    np.testing.assert_allclose(param.vertices[0].numpy() + lixel.rows["cam_t"][0], lixel.rows["mesh_cam_param"][0],
                               atol=1e-5)
    h, w = img.shape[:2]
    np.testing.assert_array_equal(lixel.rows["principal_point"], [[w / 2, h / 2]])  # the centre used, stored
    np.testing.assert_array_equal(lixel.vertices, lixel.rows["mesh_cam"])
    param_predictor = copy.copy(predictor)
    param_predictor.stage = "param"
    np.testing.assert_array_equal(param_predictor.postprocess(frame, raw).vertices, lixel.rows["mesh_cam_param"])
    overlay = predictor.annotate(img, lixel)
    assert overlay.shape == img.shape and (overlay != img).any()


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize("i", [0, 1])
def test_cli_parity(i, i2l_files, expected, tmp_path):
    """The issue's command line (plus --save-vertices for the meshes) gives the official numbers."""
    snapshot, smpl = i2l_files
    x, y, w, h = IMAGES[i]["bbox_xywh"]
    run = CliRunner().invoke(app, ["body", str(image_path(i)), "--method", "i2l", "--weights", str(snapshot),
                                   "--smpl", str(smpl), "--bbox", f"{x},{y},{w},{h}", "--save-vertices",
                                   "--save-mesh", "--out", str(tmp_path), "--quiet"])
    assert run.exit_code == 0, run.output
    with np.load(tmp_path / f"{image_path(i).stem}.npz") as npz:
        out = {k: npz[k] for k in npz.files}
    v = expected["vertex_index"]
    np.testing.assert_array_equal(out["frame_index"], [0])
    np.testing.assert_array_equal(out["bbox"], [[x, y, x + w, y + h]])
    close(out["joints_img"][0], expected_joints_img(expected, i), 5e-2, "joints_img")
    close(out["mesh_cam"][0][v], expected[f"mesh_cam_{i}"], 5e-4, "mesh_cam")
    close(np.r_[out["global_orient"][0], out["body_pose"][0]], expected[f"pose_param_{i}"], 1e-4, "pose")
    close(out["betas"][0], expected[f"shape_param_{i}"], 2e-4, "betas")
    close(out["mesh_cam_param"][0][v], expected[f"mesh_cam_param_{i}"], 2e-4, "mesh_cam_param")
    assert out["stage"] == "lixel" and out["param_stage"] and out["root_depth"] == CASE["root_depth_m"]
    assert (tmp_path / image_path(i).name).is_file()  # the overlay
    obj = (tmp_path / f"{image_path(i).stem}_meshes" / f"{image_path(i).stem}_00.obj").read_text().splitlines()
    obj_vertices = np.array([line.split()[1:] for line in obj if line.startswith("v ")], np.float64)
    close(obj_vertices, out["mesh_cam"][0], 1e-6, "OBJ of the lixel mesh")


def test_cli_refuses_i2l_options_elsewhere(tmp_path):
    run = CliRunner().invoke(app, ["body", str(tmp_path), "--method", "hmr", "--random-weights",
                                   "--bbox", "1,2,3,4"])
    assert run.exit_code != 0 and "--bbox only apply to --method i2l" in run.output


# ----------------------------------------------------------------------------- strict loading


@pytest.fixture(scope="module")
def small_snapshots(tmp_path_factory):
    """Snapshots with every official key and shape but one stored value per tensor (tiny files)."""
    parity = need_shared()
    spec = json.loads((parity / "i2l-body-coco" / "spec.json").read_text())
    full = {}
    for t in spec["tensors"]:
        dtype = torch.int64 if t["dtype"] == "int64" else torch.float32
        # BatchNorm variances at their initial 1, as in an untrained head; everything else 0
        value = torch.tensor(1.0 if t["name"].endswith("running_var") else 0, dtype=dtype)
        full["module." + t["name"]] = value.expand(t["shape"])  # stride 0: one stored value
    out = tmp_path_factory.mktemp("i2l-keys")

    def write(name: str, network: dict) -> Path:
        torch.save({"epoch": 8, "network": network, "optimizer": {"state": {}, "param_groups": []}}, out / name)
        return out / name

    missing = dict(full)
    del missing["module.mesh_net.conv_z_2.0.bias"]
    extra = dict(full, **{"module.mesh_net.conv_w.0.weight": torch.zeros(3)})
    hand = dict(full, **{"module.human_model_layer.th_hands_mean": torch.zeros(1, 45)})
    no_smpl = {k: v for k, v in full.items() if ".human_model_layer." not in k}
    return {"full": write("full.pth.tar", full), "missing": write("missing.pth.tar", missing),
            "extra": write("extra.pth.tar", extra), "hand": write("hand.pth.tar", hand),
            "no_smpl": write("no_smpl.pth.tar", no_smpl)}


def test_snapshot_keys_are_checked_strictly(small_snapshots, i2l_files):
    i2l.validate_checkpoint(small_snapshots["full"], "body")
    i2l.validate_checkpoint(small_snapshots["no_smpl"], "body")  # SMPL comes from --smpl
    for name, key in (("missing", "module.mesh_net.conv_z_2.0.bias"), ("extra", "module.mesh_net.conv_w.0.weight"),
                      ("hand", "module.human_model_layer.th_hands_mean")):
        with pytest.raises(MeshcliError, match=key.replace(".", r"\.")):
            i2l.validate_checkpoint(small_snapshots[name], "body")
    # the predictor loads through the same checks
    with pytest.raises(MeshcliError, match=r"module\.mesh_net\.conv_z_2\.0\.bias"):
        i2l.I2LPredictor(small_snapshots["missing"], smpl=i2l_files[1])


def test_untrained_param_head_is_reported(small_snapshots, i2l_files):
    # BatchNorm statistics at their initial values: a lixel-stage snapshot
    with pytest.raises(MeshcliError, match="parameter head .* untrained"):
        i2l.I2LPredictor(small_snapshots["full"], smpl=i2l_files[1], stage="param")
    lixel = i2l.I2LPredictor(small_snapshots["full"], smpl=i2l_files[1], bbox="10,10,50,80")
    assert not lixel.param_trained
    rows = lixel([Frame(np.zeros((120, 100, 3), np.uint8), 0, "black.png")])[0].rows
    assert set(rows) == {"bbox", "principal_point", "joints_img"}


def test_not_a_snapshot(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(MeshcliError, match="no 'network' entry"):
        i2l.validate_checkpoint(path, "body")
    with open(tmp_path / "evil.pth", "wb") as fh:
        pickle.dump({"network": print}, fh, protocol=2)
    with pytest.raises(MeshcliError):
        i2l.validate_checkpoint(tmp_path / "evil.pth", "body")
