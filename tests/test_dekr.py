"""DEKR (meshcli.methods.dekr) step by step against the official HRNet/DEKR outputs.

Each parity case runs its COCO images once (module-scoped; image 0 only for the
plain case, whose four images the CLI test covers) through the
predictor's own preprocess / infer / postprocess; a forward hook records the
network's inputs and raw outputs on the way, so the step checks below compare
what the pipeline really computed. Limits are those of the case's case.json.

tests/fixtures/<case>/expected.npz holds the official per-image arrays whole
and the big image-0 tensors cropped to rows (``crop_input_rows`` of the
network input, ``crop_grid_rows`` of the outputs): ``input_0_crop``,
``heatmap_0_crop`` ... in dekr-w32-coco-ctrbias, and only the centre channel
(``heatmap_0_center_crop``, ...) in dekr-w32-coco, whose input and offsets are
the same as the sibling case's. The images are tests/fixtures/data/coco/.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from meshcli import records
from meshcli.errors import MeshcliError
from meshcli.io.sinks import coco_results
from meshcli.methods import dekr
from meshcli.types import Frame, FrameResult

from conftest import FIXTURES
from joint_scores import LIMIT, dense_heatmap, joint_score_error, record_heatmaps

CASES = ("dekr-w32-coco", "dekr-w32-coco-ctrbias")


def case_info(case: str) -> dict:
    return json.loads((FIXTURES / case / "case.json").read_text())


def read_rgb(path: Path) -> np.ndarray:
    """As the official dataset reads images: EXIF orientation ignored, BGR -> RGB."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return np.ascontiguousarray(image[:, :, ::-1])


@pytest.fixture(scope="module", params=CASES)
def run(request, parity_checkpoints):
    """One pass of the case's images through the predictor, with the network inputs recorded."""
    case = request.param
    pose_file = parity_checkpoints(case)
    rescore_file = parity_checkpoints(case, "rescore_spec.json")
    predictor = dekr.DekrPredictor(pose_file, "w32-coco", rescore_weights=rescore_file)
    batches = []  # what the network was given; the pipeline reads its offset head at the centre peaks only
    monkeypatch = pytest.MonkeyPatch()
    heatmaps = record_heatmaps(monkeypatch)
    heads = predictor.heads
    monkeypatch.setattr(predictor, "heads", lambda x: batches.append(x.clone()) or heads(x))
    images = [FIXTURES / "data" / "coco" / Path(item["path"]).name for item in case_info(case)["inputs"]]
    if case == "dekr-w32-coco":
        # Its network differs from ctrbias's only in the centre bias, and the CLI test runs all four
        # images end to end: image 0 is enough here (keeps the suite fast on CPU).
        images = images[:1]
    prepared = [predictor.preprocess(Frame(read_rgb(p), i, p.name)) for i, p in enumerate(images)]
    raws = predictor.infer(prepared)
    monkeypatch.undo()
    results = [predictor.postprocess(p, r) for p, r in zip(prepared, raws)]
    plain = dekr.DekrPredictor(pose_file, "w32-coco", rescore=False)
    results_norescore = [plain.postprocess(p, r) for p, r in zip(prepared, raws)]
    expected = np.load(FIXTURES / case / "expected.npz")
    return {"case": case, "predictor": predictor, "prepared": prepared, "raws": raws, "batches": batches,
            "results": results, "results_norescore": results_norescore, "expected": expected,
            "heatmaps": heatmaps}


def image0_batch(run) -> torch.Tensor:
    """The network input of image 0 (the only image 832 px wide) and its mirror image."""
    (batch,) = [b for b in run["batches"] if b.shape[-1] == 832]
    return batch


def test_resize_geometry_and_warp_matrix(run):
    e = run["expected"]
    for i, p in enumerate(run["prepared"]):
        assert p.base_size == tuple(e[f"base_size_{i}"])
        np.testing.assert_array_equal(p.center, e[f"center_{i}"])
        np.testing.assert_allclose(p.scale, e[f"scale_{i}"], rtol=1e-12)
        np.testing.assert_array_equal(p.warp_matrix, e[f"warp_matrix_{i}"])
        assert p.inputs[0].shape == (3, e[f"base_size_{i}"][1], e[f"base_size_{i}"][0])


def test_network_input_and_flipped_input(run):
    e = run["expected"]
    if "input_0_crop" not in e:
        pytest.skip("this case stores no network input (it is the same as dekr-w32-coco-ctrbias's)")
    r0, r1 = e["crop_input_rows"]
    batch = image0_batch(run)
    assert batch.shape == (2, 3, 512, 832)  # the plain and the mirrored pass in one batch
    np.testing.assert_allclose(batch[:1, :, r0:r1].numpy(), e["input_0_crop"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(run["prepared"][0].inputs[0].numpy(), batch[0].numpy())
    mirrored = batch[0].flip(-1)
    np.testing.assert_array_equal(batch[1, :, :, :-3].numpy(), mirrored[:, :, 3:].numpy())
    np.testing.assert_array_equal(batch[1, :, :, -3:].numpy(), mirrored[:, :, -3:].numpy())


def offset_errors(got: np.ndarray, want: np.ndarray) -> dict:
    d = np.abs(got - want)
    return {"p99": float(np.percentile(d, 99)), "p99.9": float(np.percentile(d, 99.9)), "max": float(d.max())}


def test_raw_network_outputs(run):
    e = run["expected"]
    g0, g1 = e["crop_grid_rows"]
    with torch.inference_mode():  # the whole network: its dense offset map, and the heatmaps the pipeline used
        heat, offset = run["predictor"].model(image0_batch(run))
    assert heat.shape == (2, 18, 128, 208) and offset.shape == (2, 34, 128, 208)
    channels = slice(None) if "heatmap_0_crop" in e else slice(17, 18)  # the plain case keeps the centre channel
    suffix = "_crop" if "heatmap_0_crop" in e else "_center_crop"
    errors = {}
    for b, name in enumerate(("heatmap_0", "heatmap_flip_0")):
        d = np.abs(heat[b:b + 1, channels, g0:g1].numpy() - e[name + suffix]).max()
        errors[name] = float(d)
        assert d <= 0.01, f"{name} differs by {d}"
    for b, name in enumerate(("offset_0", "offset_flip_0")):
        if name + "_crop" in e:
            errors[name] = err = offset_errors(offset[b:b + 1, :, g0:g1].numpy(), e[name + "_crop"])
            assert err["p99"] <= 0.05 and err["p99.9"] <= 0.2 and err["max"] <= 10, (name, err)
    print(run["case"], errors)


def test_proposals(run):
    e = run["expected"]
    for i, raw in enumerate(run["raws"]):
        want = e[f"proposals_{i}"]
        assert raw.counts == list(e[f"proposal_counts_{i}"])
        assert raw.proposals.shape == want.shape
        got = raw.proposals.numpy()
        if len(want):
            assert np.abs(got[..., :2] - want[..., :2]).max() <= 2.0
            assert np.abs(got[..., 2] - want[..., 2]).max() <= 0.002


def check_poses(got: np.ndarray, want: np.ndarray, run: dict, i: int, label: str) -> dict:
    assert got.shape == want.shape, f"{label}: {len(got)} people, official {len(want)}"
    assert got.dtype == np.float32
    if not len(want):
        return {}
    xy = float(np.abs(got[..., :2] - want[..., :2]).max())
    joint, boundary = joint_score_error(got, want, run["expected"][f"poses_inputres_{i}"], run["heatmaps"][i])
    assert xy <= 2.0, f"{label}: joints differ by {xy} px"
    assert joint <= LIMIT, f"{label}: joint scores differ by {joint} of the largest"
    return {"xy_px": xy, "joint_rel": joint, "boundary_joints": boundary}


def test_pose_nms_in_input_pixels(run):
    for i, raw in enumerate(run["raws"]):
        check_poses(run["predictor"].pose_nms(raw), run["expected"][f"poses_inputres_{i}"], run, i, f"image {i}")


def test_final_people_with_rescoring(run):
    e = run["expected"]
    errors = {}
    for i, result in enumerate(run["results"]):
        kp, scores = result.rows["keypoints"], result.rows["scores"]
        errors[i] = check_poses(kp, e[f"poses_{i}"], run, i, f"image {i}")
        assert scores.shape == e[f"scores_{i}"].shape and scores.dtype == np.float32
        if len(scores):
            # Features of the official poses: the function itself, apart from the pose differences
            # (within check_poses' limits) that another CPU's rounding brings.
            features = dekr.rescore_features(e[f"poses_{i}"], run["predictor"].skeleton)
            np.testing.assert_allclose(features, e[f"rescore_features_{i}"], rtol=0.002, atol=1e-4)
            np.testing.assert_allclose(scores, e[f"scores_{i}"], rtol=0.005)
            errors[i]["score_rel"] = float(np.abs(scores / e[f"scores_{i}"] - 1).max())
    print(run["case"], errors)


def test_final_people_without_rescoring(run):
    e = run["expected"]
    for i, result in enumerate(run["results_norescore"]):
        check_poses(result.rows["keypoints"], e[f"poses_norescore_{i}"], run, i, f"image {i}")
        np.testing.assert_allclose(result.rows["scores"], e[f"scores_norescore_{i}"], rtol=0.002)


def test_rows_boxes_and_coco_results(run):
    for i, result in enumerate(run["results"]):
        kp, bbox = result.rows["keypoints"], result.rows["bbox"]
        assert set(result.rows) == {"keypoints", "scores", "bbox"}
        assert bbox.shape == (len(kp), 4) and bbox.dtype == np.float32
        if len(kp):
            np.testing.assert_array_equal(bbox[:, :2], kp[..., :2].min(1))
            np.testing.assert_array_equal(bbox[:, 2:], kp[..., :2].max(1))
        records = coco_results(result, image_id=785 + i)
        assert len(records) == len(kp)
        for rec, person, score, box in zip(records, kp, result.rows["scores"], bbox):
            assert rec["image_id"] == 785 + i and rec["category_id"] == 1
            np.testing.assert_allclose(np.reshape(rec["keypoints"], (17, 3)), person, rtol=1e-7)
            assert rec["score"] == pytest.approx(float(score))
            np.testing.assert_allclose(rec["bbox"], [box[0], box[1], box[2] - box[0], box[3] - box[1]], rtol=1e-6)
        json.dumps(records)


def test_equal_sizes_share_one_batch(run):
    widths = sorted((b.shape[-1], len(b)) for b in run["batches"])
    if len(run["prepared"]) == 4:
        assert widths == [(768, 4), (832, 2), (896, 2)]  # images 1 and 2 are both 768 x 512
    else:
        assert widths == [(832, 2)]  # one image: its plain and mirrored pass together


def test_metadata_names_joints_and_weights(run):
    meta = run["predictor"].metadata()
    assert list(meta["joint_names"]) == case_info(run["case"])["settings"]["joint_order"]
    assert meta["method"] == "dekr" and meta["variant"] == "w32-coco" and not meta["untrained"]
    assert meta["rescored"] and meta["rescore_weights"] == "rescore_spec.pth"
    assert meta["nms_threshold"] == 0.05 and list(meta["scales"]) == [1.0]


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_of_another_variant_is_refused(parity_checkpoints):
    path = parity_checkpoints("dekr-w32-coco")
    dekr.validate_checkpoint(path, "w32-coco")
    for variant in ("w48-coco", "w32-crowdpose"):
        with pytest.raises(MeshcliError) as err:
            dekr.validate_checkpoint(path, variant)
        line = str(err.value)
        assert "\n" not in line and str(path) in line and "does not match" in line
    assert "transition1.0.0.weight" in str(pytest.raises(MeshcliError, dekr.validate_checkpoint, path, "w48-coco").value)
    assert "transition_offset.0.weight" in str(pytest.raises(MeshcliError, dekr.validate_checkpoint, path,
                                                             "w32-crowdpose").value)


def test_checkpoint_with_a_key_removed_is_refused(parity_checkpoints, tmp_path):
    state = torch.load(parity_checkpoints("dekr-w32-coco"), weights_only=True)
    del state["offset_feature_layers.3.1.regular_matrix"]
    path = tmp_path / "cut.pth"
    torch.save(state, path)
    with pytest.raises(MeshcliError, match=r"missing key.*offset_feature_layers\.3\.1\.regular_matrix"):
        dekr.DekrPredictor(path, "w32-coco", rescore=False)


def test_rescoring_net_is_loaded_strictly(parity_checkpoints, tmp_path):
    path = parity_checkpoints("dekr-w32-coco", "rescore_spec.json")
    dekr.validate_checkpoint(path, "rescore-coco")
    with pytest.raises(MeshcliError, match=r"l1\.weight \(256, 74\) \(expected \(256, 59\)\)"):
        dekr.validate_checkpoint(path, "rescore-crowdpose")
    state = torch.load(path, weights_only=True)
    del state["l3.bias"]  # the official loader (strict=False) would leave it random
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(MeshcliError, match=r"missing key.*l3\.bias"):
        dekr.validate_checkpoint(tmp_path / "cut.pth", "rescore-coco")


def test_pose_weights_without_rescoring_weights_ask_for_them(parity_checkpoints):
    with pytest.raises(MeshcliError, match="--rescore-weights final_rescore_coco_kpt.pth or --no-rescore"):
        dekr.DekrPredictor(parity_checkpoints("dekr-w32-coco"), "w32-coco")


# ----------------------------------------------------------------------------- variants and options


@pytest.mark.parametrize("variant, width, joints, size", [
    ("w32-coco", 32, 17, 512), ("w48-coco", 48, 17, 640), ("w32-crowdpose", 32, 14, 512),
    ("w48-crowdpose", 48, 14, 640)])
def test_variant_architectures(variant, width, joints, size):
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in dekr.build_network(variant).state_dict().items()}
        rescore = dekr.build_rescore_net(variant)
    assert shapes["transition1.0.0.weight"] == (width, 256, 3, 3)
    assert shapes["transition_heatmap.0.weight"] == (width, 15 * width, 1, 1)
    assert shapes["head_heatmap.1.weight"] == (joints + 1, width, 1, 1)
    assert shapes["transition_offset.0.weight"] == (15 * joints, 15 * width, 1, 1)
    assert f"offset_final_layer.{joints - 1}.weight" in shapes and f"offset_final_layer.{joints}.weight" not in shapes
    assert rescore.l1.in_features == (74 if joints == 17 else 59)
    cfg = dekr.VARIANTS[variant]
    record = records.record_for("dekr", variant)  # the predictor reads its weights record
    assert record.input_size == size and len(record.joint_names) == joints
    flip = cfg["flip_index"]
    assert sorted(flip) == list(range(joints)) and all(flip[flip[j]] == j for j in range(joints))


def test_w32_state_dict_names_are_the_official_ones():
    spec = Path(__file__).resolve().parents[1].parent / "shared" / "parity" / "dekr-w32-coco" / "spec.json"
    if not spec.is_file():
        pytest.skip("../shared/parity not present: parity fixtures live there")
    official = [(t["name"], tuple(t["shape"])) for t in json.loads(spec.read_text())["tensors"]]
    with torch.device("meta"):
        ours = [(k, tuple(v.shape)) for k, v in dekr.build_network("w32-coco").state_dict().items()]
    assert ours == official


def test_options_and_their_official_defaults():
    path = None  # untrained: the options do not depend on the weights
    single = dekr.DekrPredictor(path, rescore=False)
    assert single.variant == "w32-coco" and single.flip and single.scales == [1.0]
    assert (single.nms_threshold, single.center_threshold, single.max_people) == (0.05, 0.01, 30)
    multi = dekr.DekrPredictor(path, scales=(0.5, 1, 2), rescore=False)
    assert multi.scales == [2.0, 1.0, 0.5] and multi.nms_threshold == 0.15
    assert dekr.DekrPredictor(path, scales=(1, 2), nms_threshold=0.1, rescore=False).nms_threshold == 0.1
    for bad in ((0.5, 2), (1, 1), (1, -2)):
        with pytest.raises(MeshcliError, match="--scales"):
            dekr.DekrPredictor(path, scales=bad, rescore=False)
    with pytest.raises(MeshcliError, match="unknown --variant .* for dekr"):
        dekr.DekrPredictor(path, "w64-coco")


# ----------------------------------------------------------------------------- pipeline pieces


def test_multiscale_scores_are_normalised_to_scale_one():
    """Scale 2's centre scores become score / its max * scale 1's max * DECREASE before pose NMS."""
    predictor = dekr.DekrPredictor(None, scales=(1, 2), rescore=False)
    spread = torch.rand(17, 2, generator=torch.Generator().manual_seed(0)) * 100
    people = torch.stack([spread + 500 * k for k in range(3)])  # far apart: NMS keeps all, in order
    centre = torch.tensor([4.0, 2.0, 3.0])[:, None, None].expand(3, 17, 1)
    proposals = torch.cat([people, centre], 2)  # scale 2 (processed first): person 0; scale 1: persons 1, 2
    poses = predictor.pose_nms(dekr.DekrRaw(proposals, [1, 2], torch.full((3, 17), 0.5)))
    np.testing.assert_allclose(poses[..., :2], people.numpy())
    want = np.array([[4.0 / 4.0 * 3.0 * 0.9], [2.0], [3.0]]) * 0.5
    np.testing.assert_allclose(poses[:, :, 2], np.broadcast_to(want, (3, 17)), rtol=1e-6)


def test_pose_nms_keeps_the_best_of_a_cover_set_in_pick_order():
    base = torch.rand(17, 2, generator=torch.Generator().manual_seed(1)) * 100
    coords = torch.stack([base, base + 0.5, base + 300])  # 0 and 1 overlap; 2 is elsewhere
    heat_score = torch.tensor([0.2, 0.9, 0.1])
    assert dekr.nms_keep(coords, heat_score, 0.05, 8) == [1, 2]


def test_heatmap_upsampling_maps_grid_to_input_pixels():
    grid = torch.arange(12.0).reshape(1, 3, 4)
    up = dense_heatmap([(grid, 4.0)])
    assert up.shape == (1, 12, 16)
    np.testing.assert_allclose(up[0, ::4, ::4].numpy(), grid[0].numpy())  # input pixel 4k reads grid k
    np.testing.assert_allclose(up[0, :, 12:].numpy(), up[0, :, 12:13].expand(12, 4).numpy())
    np.testing.assert_allclose(up[0, 2, 2].item(), (0.5 * (0 + 4) + 0.5 * (1 + 5)) / 2)  # between four cells
    assert dekr.upsampled_size(torch.zeros(1, 6, 8), 2.0) == (12, 16)
    assert dekr.upsampled_size(torch.zeros(1, 2, 2), 8.0) == (16, 16)
    two_scales = dense_heatmap([(grid, 4.0), (torch.zeros(1, 6, 8), 2.0)])
    np.testing.assert_allclose(two_scales.numpy(), up.numpy() / 2)  # the scales are averaged


def test_portrait_geometry():
    size, center, scale = dekr.resize_geometry((500, 333), 512, 1.0)
    assert size == (512, 768) and tuple(center) == (167, 250)  # width 512, height rounded up to 64
    np.testing.assert_allclose(scale, [333 / 200, 768 / 512 * 333 / 200])
    m = dekr.affine_matrix(center, scale, size)
    np.testing.assert_allclose(m @ [167, 250, 1], [256, 384], atol=1e-4)  # centre -> middle of the input
    np.testing.assert_allclose(m[:, :2], np.eye(2) * 512 / 333, rtol=1e-6, atol=1e-9)
    inverse = dekr.affine_matrix(center, scale, size, inverse=True)
    np.testing.assert_allclose(inverse @ [256, 384, 1], [167, 250], atol=1e-4)


def test_scales_that_break_the_hrnet_grid_are_refused():
    predictor = dekr.DekrPredictor(None, scales=(1, 0.75), rescore=False)
    image = np.zeros((425, 640, 3), np.uint8)  # scale 0.75 -> 624 x 384: 624 is not a multiple of 32
    with pytest.raises(MeshcliError, match="multiples of 32"):
        predictor.preprocess(Frame(image, 0, "x.jpg"))


def test_annotation_draws_people_above_the_threshold():
    predictor = dekr.DekrPredictor(None, rescore=True)
    assert predictor.weights.untrained and predictor.metadata()["untrained"]
    image = np.zeros((200, 300, 3), np.uint8)
    kp = np.zeros((2, 17, 3), np.float32)
    kp[:, :, 0] = np.linspace(100, 250, 17)
    kp[:, :, 1] = [[120] * 17, [160] * 17]
    bbox = np.concatenate([kp[..., :2].min(1), kp[..., :2].max(1)], 1)
    result = FrameResult(0, {"keypoints": kp, "scores": np.array([0.9, 0.1], np.float32), "bbox": bbox})
    out = predictor.annotate(image, result)
    assert not image.any()  # the input is untouched
    assert out[120, 100:250].any() and out[160, 110:240].any()  # untrained: everyone found is drawn
    predictor.person_thr = dekr.PERSON_THR  # what trained weights draw by default (--person-thr)
    out = predictor.annotate(image, result)
    assert out[120, 100:250].any() and not out[160, 110:240].any()  # person 1 scores below the draw threshold
