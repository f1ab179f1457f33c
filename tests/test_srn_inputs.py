"""SRN's inputs and options with untrained weights: depth decodings, intrinsics, hand centres, mirror,
frames without a hand, joint order, batching, drawing, and bad or mixed inputs through the CLI."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from meshcli.cli import app
from meshcli.errors import MeshcliError
from meshcli.io.depth import read_depth
from meshcli.methods import srn
from meshcli.types import Frame

from conftest import FIXTURES

NYU = FIXTURES / "data" / "nyu"
NYU_K = srn.INTRINSICS["nyu"]


@pytest.fixture(scope="module")
def model() -> srn.SRN:
    torch.manual_seed(0)
    return srn.SrnPredictor(None).model


def predictor(model, **options) -> srn.SrnPredictor:
    """A predictor around the shared untrained network (building one costs ~0.5 s)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(srn, "build_model", lambda variant: model)
        return srn.SrnPredictor(None, **{"intrinsics": "nyu", **options})


def scene(h: int = 480, w: int = 640, hand_mm: float = 600.0) -> np.ndarray:
    """A wall at 1.5 m with a sloped 'hand' block at ``hand_mm``, columns 200..279, rows 150..249."""
    depth = np.full((h, w), 1500, np.float32)
    depth[150:250, 200:280] = hand_mm + np.arange(80, dtype=np.float32) * 0.5
    depth[:, :8] = 0  # a strip of invalid pixels, as sensors have
    return depth


# ---------------------------------------------------------------- depth decoding

def test_depth_decodings(model, tmp_path):
    raw = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 17 % 4000).astype(np.uint16)
    for name in ("d.png", "d.tif"):
        cv2.imwrite(str(tmp_path / name), raw)
        assert np.array_equal(read_depth(tmp_path / name), raw.astype(np.float32))
    metres = raw.astype(np.float32) / 1000
    cv2.imwrite(str(tmp_path / "m.tiff"), metres)
    np.testing.assert_allclose(read_depth(tmp_path / "m.tiff", scale=1000), raw, atol=1e-3)
    np.save(tmp_path / "d.npy", raw.astype(np.float64)[:, :, None])
    assert np.array_equal(read_depth(tmp_path / "d.npy"), raw.astype(np.float32))
    half = read_depth(tmp_path / "d.png", scale=0.5)
    assert half.dtype == np.float32 and np.array_equal(half, raw.astype(np.float32) * 0.5)

    bgr = cv2.imread(str(NYU / "depth_1_0000001.png"))
    nyu = read_depth(NYU / "depth_1_0000001.png", "nyu")
    assert np.array_equal(nyu, bgr[:, :, 0] + bgr[:, :, 1].astype(np.float32) * 256)
    assert nyu.min() == 731 and nyu.max() == 2001  # the values the fixture README gives

    assert np.array_equal(predictor(model, depth_format="nyu").read_image(NYU / "depth_1_0000001.png"), nyu)
    assert np.array_equal(predictor(model, depth_scale=0.5).read_image(tmp_path / "d.png"), half)


def test_bad_depth_files_say_what_is_wrong(tmp_path):
    cv2.imwrite(str(tmp_path / "grey8.png"), np.full((20, 30), 90, np.uint8))
    with pytest.raises(MeshcliError, match="grey8.png: is an 8-bit image, not 16-bit depth"):
        read_depth(tmp_path / "grey8.png")
    cv2.imwrite(str(tmp_path / "photo.png"), np.full((20, 30, 3), 90, np.uint8))
    with pytest.raises(MeshcliError, match="3-channel uint8 colour image.*--depth-format nyu"):
        read_depth(tmp_path / "photo.png")
    with pytest.raises(MeshcliError, match="red channel is not 0"):
        read_depth(tmp_path / "photo.png", "nyu")
    cv2.imwrite(str(tmp_path / "u16.png"), np.full((20, 30), 900, np.uint16))
    with pytest.raises(MeshcliError, match="not a NYU colour-encoded depth PNG"):
        read_depth(tmp_path / "u16.png", "nyu")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(MeshcliError, match="corrupt.png: cannot be decoded as an image"):
        read_depth(tmp_path / "corrupt.png")
    truncated = (NYU / "depth_1_0000001.png").read_bytes()[:300]
    (tmp_path / "truncated.png").write_bytes(truncated)
    with pytest.raises(MeshcliError, match="cannot be decoded"):
        read_depth(tmp_path / "truncated.png", "nyu")
    np.save(tmp_path / "cube.npy", np.zeros((4, 5, 6)))
    with pytest.raises(MeshcliError, match=r"shape \(4, 5, 6\), not an HxW depth map"):
        read_depth(tmp_path / "cube.npy")
    with pytest.raises(MeshcliError, match="unknown depth format"):
        read_depth(tmp_path / "u16.png", "kinect")


def test_crop_equals_cutting_and_resizing_the_window():
    """The crop reads only OpenCV's nearest-neighbour picks; it must equal cut + clamp + cv2.resize."""
    rng = np.random.default_rng(0)
    depth = rng.integers(0, 2000, (480, 640)).astype(np.float32)
    for _ in range(200):
        x0, y0 = int(rng.integers(-300, 600)), int(rng.integers(-300, 450))
        wb = int(rng.integers(2, 700))
        hb = max(2, wb + int(rng.integers(-2, 3))) if rng.random() < 0.7 else int(rng.integers(wb // 3 + 2, 3 * wb))
        z0 = float(rng.uniform(200, 1500))
        window = (x0, x0 + wb, y0, y0 + hb, z0, z0 + 250)
        cut = np.zeros((hb, wb), np.float32)
        ys, xs = slice(max(y0, 0), min(y0 + hb, 480)), slice(max(x0, 0), min(x0 + wb, 640))
        if ys.stop > ys.start and xs.stop > xs.start:
            cut[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = depth[ys, xs]
        near, far = np.float32(z0), np.float32(z0 + 250)
        cut[(cut != 0) & (cut < near)] = near
        cut[cut > far] = 0
        tw, th = (128, hb * 128 // wb) if wb > hb else (wb * 128 // hb, 128)
        want = np.zeros((128, 128), np.float32)
        ox, oy = (128 - tw) // 2, (128 - th) // 2
        want[oy:oy + th, ox:ox + tw] = cv2.resize(cut, (tw, th), interpolation=cv2.INTER_NEAREST)
        crop, m = srn.crop_hand(depth, window, 128)
        assert np.array_equal(crop, want), window
        np.testing.assert_allclose(m @ [x0, y0, 1], [ox, oy, 1], atol=1e-9)


# ---------------------------------------------------------------- intrinsics

def test_intrinsics_forms(tmp_path):
    assert srn.parse_intrinsics("nyu") == (588.03, 587.07, 320.0, 240.0)
    assert srn.parse_intrinsics("Kinect2") == (363.9, 363.9, 255.4, 206.3)
    assert srn.parse_intrinsics("sr300") == (615.866, 615.866, 316.584, 228.38)
    assert srn.parse_intrinsics("588.03, 587.07,320,240") == srn.INTRINSICS["nyu"]
    assert srn.parse_intrinsics([500, 501, 319.5, 239.5]) == (500.0, 501.0, 319.5, 239.5)
    (tmp_path / "cam.json").write_text(json.dumps({"fx": 500, "fy": 501, "cx": 319.5, "cy": 239.5}))
    assert srn.parse_intrinsics(str(tmp_path / "cam.json")) == (500.0, 501.0, 319.5, 239.5)
    (tmp_path / "list.json").write_text("[500, 501, 319.5, 239.5]")
    assert srn.parse_intrinsics(tmp_path / "list.json") == (500.0, 501.0, 319.5, 239.5)
    (tmp_path / "partial.json").write_text('{"fx": 500, "fy": 501}')
    with pytest.raises(MeshcliError, match="partial.json: intrinsics file lacks cx, cy"):
        srn.parse_intrinsics(tmp_path / "partial.json")
    for bad in ("588,587,320", "fx,fy,cx,cy", "-1,1,0,0"):
        with pytest.raises(MeshcliError, match="intrinsics"):
            srn.parse_intrinsics(bad)
    with pytest.raises(MeshcliError, match="intrinsics file not found"):
        srn.parse_intrinsics(str(tmp_path / "nope.json"))
    assert srn.VARIANTS["hands17"]["intrinsics"] == "sr300"  # the default: HANDS2017's camera


# ---------------------------------------------------------------- hand centres

def reference_auto_centre(depth: np.ndarray) -> tuple[float, float, float]:
    """The fixture README's step 2 in plain numpy, for comparison."""
    near = np.sort(depth.reshape(-1))[:300].mean()
    sel = (depth >= near) & (depth <= near + 100)
    h, w = depth.shape
    cols, rows = np.meshgrid(np.linspace(0, w, w), np.linspace(0, h, h))
    return cols[sel].mean(), rows[sel].mean(), float(depth[sel].mean())


def test_auto_centre_is_the_realtime_heuristic(model):
    rng = np.random.default_rng(1)
    depth = scene() + rng.integers(0, 30, (480, 640)).astype(np.float32)
    depth[depth < 30] = 0
    filled = np.where(depth == 0, depth.max(), depth)
    assert tuple(srn.auto_centre(filled)) == reference_auto_centre(filled)
    result = predictor(model, centre="auto", mirror=False)([Frame(depth, 0, "a")])[0]
    u, v, d = srn.project(result.rows["centre_xyz"][0], NYU_K)
    assert 200 <= u < 280 and 150 <= v < 250 and 600 <= d < 700
    assert np.isfinite(result.rows["joints_xyz"]).all() and result.info["status"] == "ok"


def test_centre_from_file_and_fixed(model, tmp_path):
    rows = np.array([[-40.0, -25.0, 640.0], [-35.0, -20.0, 650.0]])
    np.savetxt(tmp_path / "xyz.txt", rows)
    (tmp_path / "nyu.txt").write_text("\n".join(f"{x},{-y},{z}  # y up" for x, y, z in rows) + "\n\n")
    frames = [Frame(scene(), 0, "a.png"), Frame(scene(hand_mm=610), 1, "b.png")]
    for path, fmt in ((tmp_path / "xyz.txt", "xyz"), (tmp_path / "nyu.txt", "nyu")):
        results = predictor(model, centres=path, centres_format=fmt, mirror=True)(frames)
        got = np.concatenate([r.rows["centre_xyz"] for r in results])
        np.testing.assert_allclose(got, rows, atol=1e-3)  # only the float32 rounding of the projected centre
    fixed = predictor(model, centre="-40,-25,640")([frames[1]])[0]
    np.testing.assert_allclose(fixed.rows["centre_xyz"][0], rows[0], atol=1e-3)

    one_row = predictor(model, centres=tmp_path / "xyz.txt")
    with pytest.raises(MeshcliError, match="xyz.txt: has 2 centre row.*frame 2"):
        one_row.preprocess(Frame(scene(), 2, "c.png"))
    with pytest.raises(MeshcliError, match="both --centre"):
        predictor(model, centre="1,2,600", centres=tmp_path / "xyz.txt")
    (tmp_path / "bad.txt").write_text("1 2 3\n4 5\n")
    with pytest.raises(MeshcliError, match="bad.txt: line 2 is not 3 numbers"):
        srn.parse_centres_file(tmp_path / "bad.txt")
    for bad in ("1,2", "1,2,-5", "left"):
        with pytest.raises(MeshcliError, match="--centre"):
            srn.parse_centre(bad)


def test_frames_without_a_hand_get_a_status_not_a_crash(model, tmp_path):
    empty = Frame(np.zeros((480, 640), np.float32), 0, "empty.png")
    good = Frame(scene(), 1, "good.png")
    auto = predictor(model)
    results = auto([empty, good])
    assert results[0].info["status"] == "no hand in range: the frame has no valid depth"
    assert np.isnan(results[0].rows["joints_xyz"]).all() and np.isnan(results[0].rows["joints_uvd"]).all()
    assert results[0].rows["joints_xyz"].shape == (1, 21, 3)
    assert results[1].info["status"] == "ok"
    alone = auto([good])[0]
    np.testing.assert_allclose(results[1].rows["joints_uvd"], alone.rows["joints_uvd"], atol=1e-4)

    nothing_there = predictor(model, centre="0,0,300")([good])[0]  # a cube 300 mm away: only air
    assert nothing_there.info["status"] == "no hand in range: no depth within the cube around the centre"
    assert np.isnan(nothing_there.rows["joints_uvd"]).all()
    np.testing.assert_allclose(nothing_there.rows["centre_xyz"][0], [0, 0, 300], atol=1e-3)
    (tmp_path / "c.txt").write_text("0 0 0\n")
    behind = predictor(model, centres=tmp_path / "c.txt")([Frame(scene(), 0, "a")])[0]
    assert behind.info["status"].startswith("no hand in range: centre")
    off_image = predictor(model, centre="5000,0,600")([good])[0]
    assert off_image.info["status"] == "no hand in range: the hand cube lies outside the image"
    metres = predictor(model)([Frame(scene() / 1000, 0, "m.npy")])[0]  # depth in m without --depth-scale 1000
    assert "is the depth in mm? (see --depth-scale)" in metres.info["status"]


# ---------------------------------------------------------------- mirror, order, batching

def test_mirror_reports_joints_in_the_input_frame(model):
    depth = scene()
    mirrored = predictor(model, mirror=True)([Frame(depth, 0, "a")])[0]
    plain = predictor(model, mirror=False)([Frame(np.ascontiguousarray(depth[:, ::-1]), 0, "a")])[0]
    a, b = mirrored.rows["joints_uvd"][0], plain.rows["joints_uvd"][0]
    np.testing.assert_array_equal(a[:, 0], 639 - b[:, 0])  # the same network input, read back unmirrored
    np.testing.assert_array_equal(a[:, 1:], b[:, 1:])
    xyz = srn.back_project(a, NYU_K)
    np.testing.assert_allclose(mirrored.rows["joints_xyz"][0], xyz, atol=1e-3)
    np.testing.assert_allclose(np.sign(xyz[:, 1]), np.sign(a[:, 1] - NYU_K[3]))


def test_msra_order_and_names(model):
    frame = Frame(scene(), 0, "a")
    hands17 = predictor(model)([frame])[0]
    msra_pred = predictor(model, order="msra")
    msra = msra_pred([frame])[0]
    order = list(srn.HANDS17_TO_MSRA)
    np.testing.assert_array_equal(msra.rows["joints_xyz"][0], hands17.rows["joints_xyz"][0][order])
    names = list(msra_pred.metadata()["joint_names"])
    assert names[:5] == ["Wrist", "IMCP", "IPIP", "IDIP", "ITIP"] and names[17:] == ["TMCP", "TPIP", "TDIP", "TTIP"]
    with pytest.raises(MeshcliError, match="unknown --order"):
        predictor(model, order="nyu")


def test_batch_equals_one_by_one(model):
    frames = [Frame(scene(), 0, "a"), Frame(scene(240, 320, 650), 1, "b"), Frame(scene(hand_mm=560), 2, "c")]
    pred = predictor(model)
    together = pred(frames)
    for frame, res in zip(frames, together):
        alone = pred([frame])[0]
        np.testing.assert_allclose(res.rows["joints_uvd"], alone.rows["joints_uvd"], atol=1e-3)


def test_annotate_draws_skeleton_and_3d_view(model):
    depth = scene()
    pred = predictor(model)
    result = pred([Frame(depth, 0, "a")])[0]
    image = pred.annotate(depth, result)
    assert image.shape == (480, 640, 3) and image.dtype == np.uint8
    base = srn.colourise_depth(depth, float(result.rows["centre_xyz"][0, 2]), pred.cube)
    changed = (image != base).any(-1)
    u, v = np.round(result.rows["joints_uvd"][0, 0, :2]).astype(int)
    assert changed[v, u]  # the wrist is drawn where joints_uvd says
    side = 480 // 3
    assert changed[:side, 640 - side:].mean() > 0.2  # the 3D inset, top right
    nothing = pred([Frame(np.zeros((480, 640), np.float32), 0, "z")])[0]
    assert pred.annotate(np.zeros((480, 640), np.float32), nothing).any()  # the status is written


def test_random_weights_on_synthetic_frames_for_bench():
    pred = srn.SrnPredictor(None)  # all defaults: sr300 intrinsics, auto centre, mirror
    results = pred([Frame(scene(), i, f"{i}.png") for i in range(3)])
    assert all(r.info["status"] == "ok" and np.isfinite(r.rows["joints_xyz"]).all() for r in results)
    meta = pred.metadata()
    assert meta["untrained"] and meta["weights"] == "untrained (random weights)" and meta["mirror"]


# ---------------------------------------------------------------- through the CLI

def test_cli_mixed_folder_and_frame_without_hand(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "f01.png"), scene().astype(np.uint16))
    np.save(folder / "f02.npy", scene(hand_mm=620))
    cv2.imwrite(str(folder / "f03.png"), np.zeros((480, 640), np.uint16))  # nothing in view
    cv2.imwrite(str(folder / "f04.png"), np.full((480, 640), 90, np.uint8))  # 8-bit
    (folder / "f05.png").write_bytes(b"not a png at all")
    (folder / "f06.jpg").write_bytes(b"jpeg is not a depth format")
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["hand", str(folder), "--random-weights", "--intrinsics", "nyu",
                                   "--depth-scale", "1", "--out", str(out), "--batch-size", "2", "--quiet"])
    assert run.exit_code == 1, run.output
    assert "f04.png: is an 8-bit image" in run.output and "f05.png: cannot be decoded" in run.output
    assert "2 input(s) or file(s) failed" in run.output
    npz = np.load(out / "frames.npz")
    assert list(npz["files"]) == ["f01.png", "f02.npy", "f03.png"]
    assert npz["joints_xyz"].shape == (3, 21, 3) and list(npz["frame_index"]) == [0, 1, 2]
    np.testing.assert_array_equal(npz["track_id"], np.zeros(3, np.int32))  # a folder: one hand, one track
    assert list(npz["frame_status"][:1]) == ["ok"]
    assert npz["frame_status"][2] == "no hand in range: the frame has no valid depth"
    assert np.isnan(npz["joints_xyz"][2]).all() and np.isfinite(npz["joints_xyz"][0]).all()
    assert npz["frame_status"][1] == "ok"
    assert str(npz["joint_names"][0]) == "Wrist" and bool(npz["untrained"])
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["f01.png", "f02.npy.png", "f03.png"]


def test_cli_bad_options_are_one_line_errors(tmp_path):
    cv2.imwrite(str(tmp_path / "d.png"), scene().astype(np.uint16))
    for args, message in ((["--intrinsics", "1,2"], "cannot read intrinsics"),
                          (["--depth-format", "kinect"], "unknown --depth-format"),
                          (["--method", "dekr"], "--method dekr is not a hand method"),
                          (["--centres", str(tmp_path / "none.txt")], "centres file not found")):
        run = CliRunner().invoke(app, ["hand", str(tmp_path / "d.png"), "--random-weights", "--out",
                                       str(tmp_path / "o"), *args])
        assert run.exit_code == 2 and message in run.output, (args, run.output)


def test_centre_rows_follow_the_files_when_one_is_unreadable(model, tmp_path):
    """A corrupt file in a folder is skipped, and later frames still take their own centre row."""
    from meshcli.pipeline import Pipeline

    folder = tmp_path / "seq"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"{k}.png"), scene().astype(np.uint16))
    (folder / "1.png").write_bytes(b"\x89PNG broken")
    rows = np.array([[-40.0, -25.0, 640.0], [-35.0, -20.0, 650.0], [-30.0, -15.0, 660.0]])
    np.savetxt(tmp_path / "xyz.txt", rows)
    summary = Pipeline(predictor(model, centres=tmp_path / "xyz.txt"), tmp_path / "out", annotate=False).run(
        [str(folder)])
    assert ["1.png" in f.line() for f in summary.failures] == [True]
    npz = np.load(tmp_path / "out" / "seq.npz")
    assert list(npz["files"]) == ["0.png", "2.png"]
    np.testing.assert_allclose(npz["centre_xyz"], rows[[0, 2]], atol=1e-3)


# ---------------------------------------------------------------- hostile depth (issue 9)

def test_nan_inf_and_negative_depth_are_invalid_pixels_counted_in_the_status(model):
    depth = scene()
    depth[10:20, 300:310] = np.nan
    depth[30, 30] = np.inf
    depth[40, 40] = -np.inf
    depth[50, 50:55] = -3
    [result] = predictor(model)([Frame(depth, 0, "d.npy")])
    status = result.info["status"]
    assert status.startswith("ok;") and "107 invalid depth pixel(s)" in status
    assert np.isfinite(result.rows["joints_xyz"]).all()
    [nothing] = predictor(model)([Frame(np.full((48, 64), np.nan, np.float32), 0, "nan.npy")])
    assert nothing.info["status"] == "no hand in range: the frame has no valid depth"


def test_a_frame_is_never_ok_with_non_finite_joints(model):
    p = predictor(model)
    prepared = p.preprocess(Frame(scene(), 0, "d.npy"))
    result = p.postprocess(prepared, np.full((21, 3), np.nan, np.float32))
    assert result.info["status"] != "ok" and "not finite" in result.info["status"]
    assert np.isnan(result.rows["joints_xyz"]).all()


def test_hostile_depth_options_and_files_are_one_line(model, tmp_path):
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 0), np.float32))
    with pytest.raises(MeshcliError, match="empty 0x0"):
        read_depth(empty)
    with pytest.raises(MeshcliError, match="--depth-scale 1e\\+40 must be a positive number up to"):
        predictor(model, depth_scale=1e40)
    centres = tmp_path / "centres.txt"
    centres.write_text("0 0 -5\n")
    p = predictor(model, centres=centres)
    status = p.preprocess(Frame(scene(), 0, "d.npy")).status
    assert "np.float64" not in status and "(0.0, 0.0, -5.0)" in status
