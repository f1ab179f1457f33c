"""SPIN from its official checkpoint format: parity with SPIN's demo step by step and through the CLI.

``fixtures/spin/expected_subset.npz`` is ``../shared/parity/spin/expected.npz`` with every
array kept except two subsets: ``vertices_every20_i = vertices_i[::20]`` and
``input_rows16_i = input_i[:, ::16]``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from smplx.lbs import batch_rodrigues
from typer.testing import CliRunner

from meshcli.people import OpenPoseJson, WholeFrame, choose_people
from meshcli.cli import app
from meshcli.errors import MeshcliError
from meshcli.io.sources import read_rgb
from meshcli.methods import spin
from meshcli.types import Frame

from conftest import FIXTURES

CASE = FIXTURES / "spin"
DATA = FIXTURES / "data" / "hmr_demo"
INFO = json.loads((CASE / "case.json").read_text())
TOL = INFO["tolerance_atol"]
EXPECTED = np.load(CASE / "expected_subset.npz")
# README table: the crop box of each input
CORNERS = {0: ([-21, 0], [135, 156]), 1: ([177, 27], [711, 562])}


def inputs():
    for item in INFO["inputs"]:
        yield item["i"], DATA / item["image"].split("/")[-1], CASE / item["openpose"] if item["openpose"] else None


@pytest.mark.parametrize("i,image_path,json_path", list(inputs()))
def test_crop_and_network_input_match_the_demo(i, image_path, json_path):
    image = read_rgb(image_path)
    f = Frame(image, 0, image_path.name)
    if json_path is None:
        (person,) = WholeFrame().people(f)
    else:
        (person,) = choose_people(OpenPoseJson(json_path).people(f), spin.SpinPredictor.openpose_choice)
    centre, scale = spin.crop_parameters(person, image.shape[:2])
    np.testing.assert_allclose(centre, EXPECTED[f"center_{i}"], rtol=0, atol=TOL["center"])
    assert abs(scale - EXPECTED[f"scale_{i}"]) <= TOL["scale"]
    ul, br = spin.crop_corners(centre, scale)
    assert (ul.tolist(), br.tolist()) == CORNERS[i]
    crop = spin.crop_image(image, ul, br)
    np.testing.assert_array_equal(crop, EXPECTED[f"crop_uint8_{i}"])
    np.testing.assert_allclose(spin.normalise(crop)[:, ::16], EXPECTED[f"input_rows16_{i}"], rtol=0,
                               atol=TOL["input"])


def readme_crop(image, ul, br, size=224):
    """The README's words as code: float64 zero canvas, byte-scale over its range, Pillow bilinear."""
    from PIL import Image

    h, w = image.shape[:2]
    box = np.zeros((br[1] - ul[1], br[0] - ul[0], 3))
    x0, x1, y0, y1 = max(0, ul[0]), min(w, br[0]), max(0, ul[1]), min(h, br[1])
    if x1 > x0 and y1 > y0:
        box[y0 - ul[1]:y1 - ul[1], x0 - ul[0]:x1 - ul[0]] = image[y0:y1, x0:x1]
    lo, hi = box.min(), box.max()
    scaled = (((box - lo) * (255.0 / (hi - lo if hi > lo else 1.0))).clip(0, 255) + 0.5).astype(np.uint8)
    return np.asarray(Image.fromarray(scaled).resize((size, size), Image.BILINEAR))


def test_crop_byte_scaling_edge_cases():
    rng = np.random.default_rng(0)
    image = rng.integers(40, 90, (50, 70, 3)).astype(np.uint8)  # low contrast: the stretch matters
    flat = np.full((50, 70, 3), 77, np.uint8)
    for img, ul, br in ((image, (10, 5), (40, 45)), (image, (-20, -10), (30, 60)), (image, (100, 100), (130, 160)),
                        (flat, (5, 5), (20, 20)), (flat, (-5, 5), (20, 21))):
        ul, br = np.array(ul), np.array(br)
        np.testing.assert_array_equal(spin.crop_image(img, ul, br), readme_crop(img, ul, br), err_msg=str((ul, br)))


@pytest.fixture(scope="module")
def setup(parity_checkpoints, fake_smpl):
    return parity_checkpoints("spin", name="model_checkpoint.pt"), fake_smpl


def check(i, rows, vertices, rotmat=None):
    def close(got, key, tol=None):
        np.testing.assert_allclose(got, EXPECTED[key], rtol=0, atol=TOL[tol or key.rsplit("_", 1)[0]], err_msg=key)

    close(rows["betas"][0], f"pred_betas_{i}")
    close(rows["cam"][0], f"pred_camera_{i}")
    close(rows["cam_t"][0], f"cam_t_{i}")
    close(rows["joints3d"][0], f"smpl_joints24_{i}")
    close(vertices[::20], f"vertices_every20_{i}", "vertices")
    if rotmat is not None:
        close(rotmat, f"pred_rotmat_{i}")
    # the axis-angle rows describe the same rotations
    aa = np.concatenate([rows["global_orient"][0], rows["body_pose"][0]]).reshape(24, 3)
    r = batch_rodrigues(torch.from_numpy(aa).double()).numpy()
    np.testing.assert_allclose(r, EXPECTED[f"pred_rotmat_{i}"], rtol=0, atol=TOL["pred_rotmat"])

def test_network_and_smpl_match_the_demo(setup):
    ckpt, smpl = setup
    predictor = spin.SpinPredictor(ckpt, smpl=smpl)
    prepared = []
    for i, image_path, json_path in inputs():
        predictor.source = WholeFrame() if json_path is None else OpenPoseJson(json_path)
        prepared.append(predictor.preprocess(Frame(read_rgb(image_path), i, image_path.name)))
    with torch.no_grad():  # the network on the same batch, for its rotation matrices
        rotmats = predictor.net(torch.from_numpy(np.stack([p.crops[0].input for p in prepared])))[0]
    for k, ((i, _, _), prep, raw) in enumerate(zip(inputs(), prepared, predictor.infer(prepared))):  # one batch
        result = predictor.postprocess(prep, raw)
        check(i, result.rows, result.vertices[0], rotmats[k].numpy())
        # the image camera carries the crop camera: projecting with it lands where the crop projection maps
        rows = result.rows
        ul = prep.crops[0].region[:2]
        side = prep.crops[0].region[2:] - ul
        p = rows["joints3d"][0] + rows["cam_t"][0]
        crop_px = 5000 * p[:, :2] / p[:, 2:] + 112  # SPIN's crop camera, pixel edges at integers
        np.testing.assert_allclose(rows["joints2d"][0], ul + crop_px * side / 224 - 0.5, rtol=1e-9)


def test_parity_through_the_cli(setup, tmp_path):
    ckpt, smpl = setup
    images = {i: (path, js) for i, path, js in inputs()}
    common = ["--method", "spin", "--weights", ckpt, "--smpl", smpl, "--save-vertices", "--out", tmp_path, "-q"]
    for i, (path, js) in images.items():
        where = ["--detector", "full"] if js is None else ["--openpose", js]
        run = CliRunner().invoke(app, [str(a) for a in ("body", path, *common, *where)])
        assert run.exit_code == 0, run.output
        npz = np.load(tmp_path / f"{path.stem}.npz")
        assert npz["method"] == "spin" and npz["frame_index"].tolist() == [0]
        check(i, npz, npz["vertices"][0])


def test_checkpoint_format_errors(tmp_path):
    path = tmp_path / "model_checkpoint.pt"
    torch.save({"epoch": 3}, path)
    with pytest.raises(MeshcliError, match="not a SPIN checkpoint"):
        spin.validate_checkpoint(path)
    state = spin.SpinNet().state_dict()
    del state["decshape.bias"]
    torch.save({"model": state}, path)
    with pytest.raises(MeshcliError, match="missing key.*'decshape.bias'"):
        spin.validate_checkpoint(path)


def test_resnet_has_torchvision_layout():
    """meshcli.models.resnet (SPIN's and I2L's backbone) has resnet50's parameter and key counts less its fc."""
    from meshcli.models.resnet import ResNet

    with torch.device("meta"):
        net = ResNet()
    fc_params = 2048 * 1000 + 1000
    assert sum(p.numel() for p in net.parameters()) == 25_557_032 - fc_params and len(net.state_dict()) == 320 - 2
