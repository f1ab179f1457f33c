"""HMR from the official TF checkpoint: parity with the official demo step by step, and bad checkpoints.

``fixtures/hmr-tf/expected_subset.npz`` is ``../shared/parity/hmr-tf/expected.npz`` with
every array kept except two subsets: ``verts_every20_i = verts_i[::20]`` and
``input_rows16_i = input_i[::16]``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from meshcli.people import OpenPoseJson, WholeFrame, choose_people
from meshcli.errors import MeshcliError
from meshcli.io.sources import read_rgb
from meshcli.methods import hmr
from meshcli.types import Frame

from conftest import FIXTURES

CASE = FIXTURES / "hmr-tf"
DATA = FIXTURES / "data" / "hmr_demo"
INFO = json.loads((CASE / "case.json").read_text())
TOL = INFO["tolerance_atol"]
EXPECTED = np.load(CASE / "expected_subset.npz")


def inputs():
    """(index, image path, OpenPose JSON or None) of the case's four inputs."""
    for item in INFO["inputs"]:
        json_path = DATA / item["json"].split("/")[-1] if item["json"] else None
        yield item["i"], DATA / item["image"].split("/")[-1], json_path


def people(image, json_path, name):
    f = Frame(image, 0, name)
    if json_path is None:
        return WholeFrame().people(f)
    return choose_people(OpenPoseJson(json_path).people(f), hmr.HmrPredictor.openpose_choice)


@pytest.mark.parametrize("i,image_path,json_path", list(inputs()))
def test_crop_and_network_input_match_the_demo(i, image_path, json_path):
    image = read_rgb(image_path)
    assert list(image.shape) == EXPECTED[f"img_shape_{i}"].tolist()
    (person,) = people(image, json_path, image_path.name)
    scale, centre = hmr.crop_parameters(person, image.shape[:2])
    crop, start = hmr.crop_image(image, scale, centre)
    assert scale == EXPECTED[f"scale_{i}"]
    assert start.tolist() == EXPECTED[f"start_pt_{i}"].tolist()
    np.testing.assert_array_equal(crop, EXPECTED[f"crop_uint8_{i}"])
    x = hmr.normalise(crop).transpose(1, 2, 0)
    np.testing.assert_allclose(x[::16], EXPECTED[f"input_rows16_{i}"], rtol=0, atol=TOL["input"])


def test_small_person_in_a_large_frame_is_sampled_directly():
    """Past MAX_SCALED_PIXELS the crop is sampled without scaling the whole frame: same crop to
    interpolation precision (a 5 px box in the 1023 px frame would otherwise scale it 30x)."""
    image = read_rgb(DATA / "random.jpg")
    centre = np.array([600.0, 450.0])
    exact, start = hmr.crop_image(image, 2.5, centre)
    direct, start_direct = hmr.crop_image(image, 2.5, centre, max_scaled_pixels=0)
    assert start.tolist() == start_direct.tolist()
    diff = np.abs(exact.astype(int) - direct)
    assert diff.max() <= 4 and diff.mean() < 0.5
    (person,) = WholeFrame().people(Frame(image, 0, "random.jpg"))
    person.box = np.array([600.0, 450.0, 603.0, 454.0])  # 5 px diagonal
    person.kind = "box"
    crop, _ = hmr.crop_image(image, *hmr.crop_parameters(person, image.shape[:2]))
    assert crop.shape == (224, 224, 3)


@pytest.fixture(scope="module")
def checkpoint(parity_checkpoints):
    return parity_checkpoints("hmr-tf", name="model.ckpt-667589")


@pytest.fixture(scope="module")
def predictor(checkpoint, fake_smpl):
    return hmr.HmrPredictor(checkpoint, smpl=fake_smpl)


def test_network_smpl_and_image_outputs_match_the_demo(predictor):
    """All four inputs through one batch: features, every IEF iteration, SMPL, joints, cameras."""
    prepared = []
    for i, image_path, json_path in inputs():
        predictor.source = WholeFrame() if json_path is None else OpenPoseJson(json_path)
        prepared.append(predictor.preprocess(Frame(read_rgb(image_path), i, image_path.name)))
    raws = predictor.infer(prepared)
    # The network pieces on the same batch: encoder features and every IEF iteration, and SMPL's own joints.
    with torch.no_grad():
        features, thetas = predictor.net(torch.from_numpy(np.stack([p.crops[0].input for p in prepared])))
        smpl_joints = predictor.smpl(thetas[:, -1, 75:], thetas[:, -1, 3:75]).joints
    for k, ((i, _, _), prep, raw) in enumerate(zip(inputs(), prepared, raws)):
        (crop,) = prep.crops
        # normalise() is one-to-one on uint8 pixels: equal inputs mean the demo's crop exactly
        np.testing.assert_array_equal(crop.input, hmr.normalise(EXPECTED[f"crop_uint8_{i}"]))
        result = predictor.postprocess(prep, raw)
        rows = result.rows
        theta = EXPECTED[f"theta_{i}"]

        def close(got, key, want=None, tol=None):
            want = EXPECTED[key] if want is None else want
            np.testing.assert_allclose(got, want, rtol=0, atol=TOL[tol or key.rsplit("_", 1)[0]], err_msg=key)

        close(features[k].numpy(), f"feat_{i}")
        close(thetas[k].numpy(), f"theta_{i}")
        close(rows["cam"][0], f"cam_{i}")
        close(rows["global_orient"][0], f"theta_{i}", theta[-1, 3:6])
        close(rows["body_pose"][0], f"theta_{i}", theta[-1, 6:75])
        close(rows["betas"][0], f"theta_{i}", theta[-1, 75:])
        close(result.vertices[0][::20], f"verts_every20_{i}", tol="verts")
        close(rows["joints3d"][0], f"joints3d_{i}")
        close(smpl_joints[k].numpy(), f"smpl_joints24_{i}")
        close(rows["joints2d"][0], f"joints2d_img_{i}")
        render = EXPECTED[f"cam_for_render_{i}"]  # the demo renderer's [f, cx, cy] in image pixels
        close(rows["focal_length"][0], f"cam_for_render_{i}", np.full(2, render[0]))
        close(rows["principal_point"][0], f"cam_for_render_{i}", render[1:])
        s, tx, ty = theta[-1, :3]
        np.testing.assert_allclose(rows["cam_t"][0], [tx, ty, 500 / (112 * s)], rtol=1e-6)


def test_converted_file_is_the_same_network(checkpoint, predictor, tmp_path):
    out = tmp_path / "hmr.pth"
    provenance = hmr.convert_checkpoint(f"{checkpoint}.index", out)
    names = [f["name"] for f in provenance["files"]]
    assert names == ["model.ckpt-667589.index", "model.ckpt-667589.data-00000-of-00001"]
    data = checkpoint.parent / names[1]
    assert provenance["files"][1]["size"] == data.stat().st_size
    stored = torch.load(out, weights_only=True)
    assert stored["provenance"] == provenance
    hmr.validate_checkpoint(out)
    converted = hmr.load_weights(out, hmr.tensor_bytes(predictor.net))
    reference = predictor.net.state_dict()
    assert set(converted) == set(reference)
    for key, value in reference.items():
        assert torch.equal(converted[key], value.cpu()), key


def test_truncated_shard_fails_before_any_frame(checkpoint, fake_smpl, tmp_path):
    prefix = tmp_path / "model.ckpt-667589"
    (tmp_path / "model.ckpt-667589.index").write_bytes(checkpoint.with_name("model.ckpt-667589.index").read_bytes())
    data = checkpoint.with_name("model.ckpt-667589.data-00000-of-00001").read_bytes()
    (tmp_path / "model.ckpt-667589.data-00000-of-00001").write_bytes(data[: len(data) // 3])
    with pytest.raises(MeshcliError, match=r"model\.ckpt-667589\.data-00000-of-00001: data shard is truncated"):
        hmr.HmrPredictor(prefix, smpl=fake_smpl)


def test_missing_and_misshaped_variables_are_named(tfbundle, tmp_path):
    # (the parity checkpoint holds SMPL variables the network does not read: extra ones are ignored)
    tfbundle.write_bundle({"mean_param": np.zeros((1, 85), np.float32)}, tmp_path / "a" / "model.ckpt-1")
    with pytest.raises(MeshcliError, match=r"model\.ckpt-1\.index: variable 'resnet_v2_50/conv1/weights' is missing"):
        hmr.validate_checkpoint(tmp_path / "a" / "model.ckpt-1")
    tfbundle.write_bundle({"resnet_v2_50/conv1/weights": np.zeros((7, 7, 3, 32), np.float32)},
                          tmp_path / "b" / "model.ckpt-1")
    with pytest.raises(MeshcliError, match=r"'resnet_v2_50/conv1/weights' has shape \[7, 7, 3, 32\]"):
        hmr.validate_checkpoint(tmp_path / "b" / "model.ckpt-1")


def test_random_weights_run_is_stamped_untrained(fake_smpl):
    p = hmr.HmrPredictor(None, smpl=fake_smpl, save_vertices=True)
    image = read_rgb(DATA / "im1954.jpg")
    (result,) = p([Frame(image, 0, "im1954.jpg")])
    assert p.metadata()["untrained"] and p.metadata()["weights"].startswith("untrained")
    rows = result.rows
    assert rows["vertices"].shape == (1, 6890, 3) and rows["joints2d"].shape == (1, 19, 2)
    assert set(rows) == set(p.empty_rows())
    assert all(rows[k].dtype == v.dtype for k, v in p.empty_rows().items())
