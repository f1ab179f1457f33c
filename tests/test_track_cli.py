"""Track ids and smoothing through the CLI on the shipped real clip, and the HOG person source."""
from __future__ import annotations

import json

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from meshcli.cli import app
from meshcli.types import Frame, Person
from meshcli.smpl import SMPLModel

from conftest import REPO, real_clip, write_video

CLIP = REPO / "examples" / "multi_person_demo.mp4"
FRAMES, SHRINK = 16, 2  # the first frames at half size: the whole clip takes minutes on 2 CPU cores
# the two people of the clip (x0, y0, x1, y1 at full size), as HOG finds them in its first frame
LEFT, RIGHT = np.array([0.0, 210, 500, 1360]), np.array([600.0, 310, 1080, 1400])


def meshcli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory):
    """The clip, and a boxes file whose people are listed in a different order frame by frame."""
    folder = tmp_path_factory.mktemp("shuffled")
    clip = real_clip(folder / "people.mp4", FRAMES, width=1080 // SHRINK)
    rng = np.random.default_rng(0)
    frames, who = {}, {}
    for k in range(FRAMES):
        drift = np.array([4.0, 0, 4, 0]) * k  # they move a little, differently, frame by frame
        boxes = {"left": (LEFT + drift) / SHRINK, "right": (RIGHT - drift) / SHRINK}
        order = ["left", "right"] if rng.random() < 0.5 else ["right", "left"]
        frames[str(k)] = [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in (boxes[n] for n in order)]
        who[k] = order
    assert len({tuple(o) for o in who.values()}) == 2, "the shuffle must actually reorder some frames"
    path = folder / "boxes.json"
    path.write_text(json.dumps({"frames": frames, "format": "xywh"}))
    return clip, path, who


@pytest.fixture(scope="module", params=["offline", "oneeuro"])
def body_run(request, shuffled, fake_smpl, tmp_path_factory):
    clip, boxes, who = shuffled
    out = tmp_path_factory.mktemp(f"body-{request.param}")
    run = meshcli("body", clip, "--method", "hmr", "--boxes", boxes, "--smpl", fake_smpl, "--random-weights",
                  "--renderer", "wireframe", "--smooth", request.param, "--save-vertices", "--out", out, "--quiet")
    assert run.exit_code == 0, run.output
    return np.load(out / "people.npz"), who, fake_smpl


def test_track_ids_follow_the_boxes_not_their_list_position(body_run):
    npz, _, _ = body_run
    ids = {}
    for box, tid in zip(npz["bbox"], npz["track_id"]):
        name = "left" if box[0] < 200 else "right"
        ids.setdefault(name, set()).add(int(tid))
    assert npz["track_id"].dtype == np.int32
    assert len(ids["left"]) == 1 and len(ids["right"]) == 1 and ids["left"] != ids["right"]
    assert len(npz["frame_index"]) == 2 * FRAMES


def test_smoothed_parameters_are_valid_and_the_rest_follows_from_them(body_run):
    npz, _, smpl_path = body_run
    for key in ("global_orient", "body_pose", "betas", "cam", "cam_t", "joints3d", "joints2d", "vertices"):
        assert npz[f"{key}_raw"].shape == npz[key].shape, key
    assert not np.allclose(npz["body_pose"], npz["body_pose_raw"])
    angles = np.linalg.norm(np.concatenate([npz["global_orient"], npz["body_pose"]], 1).reshape(-1, 3), axis=1)
    assert np.isfinite(angles).all() and angles.max() <= np.pi + 1e-5  # axis-angle of proper rotations
    smpl = SMPLModel.from_file(smpl_path)
    pose = torch.from_numpy(np.concatenate([npz["global_orient"], npz["body_pose"]], 1))
    body = smpl(torch.from_numpy(npz["betas"]), pose)
    np.testing.assert_allclose(npz["vertices"], body.vertices.numpy(), atol=1e-5)
    cocoplus = torch.einsum("jv,bvc->bjc", smpl.cocoplus_regressor, body.vertices)  # HMR's joints
    np.testing.assert_allclose(npz["joints3d"], cocoplus.numpy(), atol=1e-5)


def test_smoothed_joints_accelerate_less_than_raw(body_run):
    npz, _, _ = body_run

    def accel(key):
        total = 0.0
        for tid in np.unique(npz["track_id"]):
            seq = npz[key][npz["track_id"] == tid]
            total += np.abs(np.diff(seq, 2, axis=0)).mean()
        return total

    assert accel("joints3d") < accel("joints3d_raw")
    assert accel("joints2d") < accel("joints2d_raw")


def test_i2l_smoothing_keeps_its_meshes_those_of_the_smoothed_outputs(shuffled, fake_smpl, tmp_path):
    clip, boxes, _ = shuffled
    run = meshcli("body", clip, "--method", "i2l", "--boxes", boxes, "--smpl", fake_smpl, "--random-weights",
                  "--stage", "param", "--no-annotate", "--smooth", "offline", "--save-vertices", "--out", tmp_path,
                  "--quiet")
    assert run.exit_code == 0, run.output
    npz = np.load(tmp_path / "people.npz")
    left = npz["bbox"][:, 0] < 200
    assert len(set(npz["track_id"][left])) == 1 and set(npz["track_id"][left]).isdisjoint(npz["track_id"][~left])
    for key in ("joints_img", "mesh_cam", "global_orient", "body_pose", "betas", "cam_t", "mesh_cam_param"):
        assert npz[f"{key}_raw"].shape == npz[key].shape and not np.array_equal(npz[key], npz[f"{key}_raw"]), key
    # the parameter mesh is SMPL's of the parameters moved by cam_t, raw and smoothed alike
    smpl = SMPLModel.from_file(fake_smpl)
    for raw in ("", "_raw"):
        pose = np.concatenate([npz[f"global_orient{raw}"], npz[f"body_pose{raw}"]], 1)
        body = smpl(torch.from_numpy(npz[f"betas{raw}"]), torch.from_numpy(pose)).vertices.numpy()
        np.testing.assert_allclose(npz[f"mesh_cam_param{raw}"], body + npz[f"cam_t{raw}"][:, None], atol=3e-4)

    def accel(key):
        return sum(np.abs(np.diff(npz[key][npz["track_id"] == t], 2, axis=0)).mean() for t in set(npz["track_id"]))

    for key in ("joints_img", "mesh_cam", "cam_t", "mesh_cam_param"):
        assert accel(key) < accel(f"{key}_raw"), key


def test_no_track_writes_no_track_ids(tmp_path):
    """(With tracking, pose's and hand's NPZs carry track_id: test_pose_cli and test_srn_inputs check it.)"""
    clip = write_video(tmp_path / "tiny.mp4", frames=2, size=(64, 48))
    run = meshcli("pose", clip, "--random-weights", "--no-flip", "--out", tmp_path / "pose", "--quiet",
                  "--no-annotate", "--no-track")
    assert run.exit_code == 0, run.output
    npz = np.load(tmp_path / "pose" / "tiny.npz")
    assert "track_id" not in npz and "keypoints" in npz
    folder = tmp_path / "depth"
    folder.mkdir()
    for k in range(2):
        np.save(folder / f"d{k}.npy", np.full((48, 64), 600.0, np.float32))
    run = meshcli("hand", folder, "--random-weights", "--intrinsics", "nyu", "--out", tmp_path / "hand",
                  "--quiet", "--no-annotate", "--no-track")
    assert run.exit_code == 0, run.output
    npz = np.load(tmp_path / "hand" / "depth.npz")
    assert "track_id" not in npz and npz["joints_xyz"].shape[0] == 2


def test_hog_finds_the_people_of_the_demo_clip():
    from meshcli.api import person_source

    source = person_source("hog")
    counts, sides = [], set()
    with av.open(str(CLIP)) as c:
        for k, frame in enumerate(c.decode(video=0)):
            if k % 12 == 0:
                people = source.people(Frame(frame.to_ndarray(format="rgb24"), k, f"clip#{k}"))
                counts.append(len(people))
                for p in people:
                    assert p.kind == "box" and (p.box[2:] - p.box[:2] > [300, 800]).all()  # whole people
                    sides.add("left" if (p.box[0] + p.box[2]) / 2 < 540 else "right")
    assert min(counts) >= 1 and sum(counts) >= 7 and sides == {"left", "right"}  # two people, most frames


def test_detect_every_runs_the_source_on_every_nth_frame_and_carries_people_between(tmp_path, fake_smpl):
    from meshcli.methods.hmr import HmrPredictor
    from meshcli.people import PersonSource
    from meshcli.pipeline import Pipeline

    class Counted(PersonSource):
        name = "counted"

        def __init__(self):
            self.frames = []

        def people(self, frame):
            self.frames.append(frame.index)
            return [Person(np.array([8.0, 4, 40, 44]), "box")]

    source = Counted()
    predictor = HmrPredictor(None, smpl=fake_smpl, people=source, renderer="wireframe", detect_every=3)
    clip = write_video(tmp_path / "walk.mp4", frames=8, size=(64, 48))
    summary = Pipeline(predictor, tmp_path / "out", batch_size=4, annotate=False).run([str(clip)])
    assert not summary.failures
    assert source.frames == [0, 3, 6]
    npz = np.load(tmp_path / "out" / "walk.npz")
    assert list(npz["frame_index"]) == list(range(8))  # one person in every frame
    for k in range(1, 8):
        if k % 3:  # carried: the box of the joints the frame before put the person at
            joints = npz["joints2d"][k - 1]
            np.testing.assert_allclose(npz["bbox"][k], np.r_[joints.min(0), joints.max(0)], rtol=1e-6)
        else:
            np.testing.assert_array_equal(npz["bbox"][k], [8, 4, 40, 44])


def test_detect_every_skips_the_network_detector_between_detections(tmp_path, fake_smpl, monkeypatch):
    import dataclasses

    import meshcli
    from meshcli import records
    from meshcli.methods import dekr

    monkeypatch.setattr(dekr, "record_for", lambda m, v: dataclasses.replace(records.record_for(m, v), input_size=128))
    seen = []
    preprocess = dekr.DekrPredictor.preprocess
    monkeypatch.setattr(dekr.DekrPredictor, "preprocess", lambda self, frame: seen.append(frame.index)
                        or preprocess(self, frame))
    predictor = meshcli.load("hmr", smpl=fake_smpl, detector="dekr", random_weights=True, detect_every=3,
                             renderer="wireframe")
    clip = write_video(tmp_path / "walk.mp4", frames=7, size=(96, 64))
    summary = meshcli.run(predictor, clip, tmp_path / "out", batch_size=4, annotate=False)
    assert not summary.failures and summary.times.seconds["detect"] > 0
    assert seen == [0, 3, 6]
