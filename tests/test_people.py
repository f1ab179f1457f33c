"""Person sources of the body methods: whole frame, OpenPose JSON, boxes JSON, DEKR."""
from __future__ import annotations

import json

import numpy as np
import pytest

from meshcli.people import BoxesJson, DekrPeople, OpenPoseJson, WholeFrame, keypoint_person
from meshcli.errors import MeshcliError
from meshcli.types import Frame, FrameResult, Person

from conftest import FIXTURES

KEYPOINTS = FIXTURES / "data" / "hmr_demo" / "random_keypoints.json"


def frame(name="im.jpg", index=0, h=40, w=60):
    return Frame(np.zeros((h, w, 3), np.uint8), index, name)


def test_whole_frame():
    (p,) = WholeFrame().people(frame(h=40, w=60))
    assert p.kind == "frame" and p.box.tolist() == [0, 0, 60, 40]


def test_keypoint_person_counts_confident_keypoints_only():
    kps = np.array([[10, 20, 0.9], [30, 5, 0.5], [500, 500, 0.2], [0, 0, 0.0]])
    p = keypoint_person(kps)
    assert p.kind == "keypoints" and p.box.tolist() == [10, 5, 30, 20]
    assert p.score == pytest.approx(0.7)
    assert keypoint_person(np.array([[1, 2, 0.1]])) is None


def test_openpose_file_gives_every_person_with_keypoints():
    people = OpenPoseJson(KEYPOINTS).people(frame("random.jpg"))
    data = json.loads(KEYPOINTS.read_text())["people"]
    assert len(people) == len(data) == 2
    kps = np.array(data[1]["pose_keypoints"]).reshape(-1, 3)
    vis = kps[kps[:, 2] > 0.2]
    np.testing.assert_allclose(people[1].box, [*vis[:, :2].min(0), *vis[:, :2].max(0)])
    assert people[1].score == pytest.approx(vis[:, 2].mean())
    assert people[1].score > people[0].score  # HMR's demo picks this one


def test_openpose_folder_per_image_and_per_video_frame(tmp_path):
    one = {"people": [{"pose_keypoints_2d": [1, 2, 0.9, 5, 9, 0.8]}]}
    two = {"people": [{"pose_keypoints_2d": [1, 2, 0.9, 5, 9, 0.8]}, {"pose_keypoints_2d": [0, 0, 0, 0, 0, 0]}]}
    (tmp_path / "a_keypoints.json").write_text(json.dumps(one))
    (tmp_path / "clip_000000000003_keypoints.json").write_text(json.dumps(two))
    source = OpenPoseJson(tmp_path)
    assert len(source.people(frame("a.png"))) == 1
    assert len(source.people(frame("clip.mp4#3", 3))) == 1  # the second person has no visible keypoint
    with pytest.raises(MeshcliError, match=r"clip_000000000004_keypoints\.json: no OpenPose JSON for frame"):
        source.people(frame("clip.mp4#4", 4))
    (tmp_path / "bad.json").write_text("{\"people\": [{}]}")
    with pytest.raises(MeshcliError, match="not an OpenPose keypoint JSON"):
        OpenPoseJson(tmp_path / "bad.json")
    with pytest.raises(MeshcliError, match="not found"):
        OpenPoseJson(tmp_path / "missing.json")


def test_boxes_json_by_name_and_index(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"frames": {"a.jpg": [[10, 20, 30, 40], [0, 0, 5, 5, 0.5]],
                                           "clip.mp4#2": [[1, 1, 2, 2]], "7": [[3, 3, 1, 1]]}}))
    source = BoxesJson(path)
    a = source.people(frame("a.jpg"))
    assert [p.box.tolist() for p in a] == [[10, 20, 40, 60], [0, 0, 5, 5]]
    assert [p.score for p in a] == [1.0, 0.5] and a[0].kind == "box"
    assert source.people(frame("clip.mp4#2", 2))[0].box.tolist() == [1, 1, 3, 3]
    assert source.people(frame("other.png", 7))[0].box.tolist() == [3, 3, 4, 4]
    assert source.people(frame("clip.mp4#5", 5)) == []  # not listed: nobody there

    path.write_text(json.dumps({"format": "xyxy", "frames": {"0": [[10, 20, 30, 40]]}}))
    assert BoxesJson(path).people(frame())[0].box.tolist() == [10, 20, 30, 40]
    path.write_text(json.dumps({"bbox": [1, 2, 3, 4]}))  # SPIN's demo format: every frame
    assert BoxesJson(path).people(frame("any", 9))[0].box.tolist() == [1, 2, 4, 6]
    for bad in ({"frames": {"0": [[1, 2, 3]]}}, {"frames": {"0": [[5, 5, 0, 3]]}}, {"format": "cxcy", "frames": {}},
                {"nothing": 1}):
        path.write_text(json.dumps(bad))
        with pytest.raises(MeshcliError, match="not a boxes JSON"):
            BoxesJson(path)


class StubDekr:
    """Stands in for DekrPredictor's three steps: fixed rows for every frame; records its batches."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def preprocess(self, frame, people=None):
        return frame.index

    def infer(self, prepared):
        self.batches.append(list(prepared))
        return prepared

    def postprocess(self, prepared, raw):
        kps = np.zeros((2, 17, 3), np.float32)
        kps[0, :, :2] = np.arange(34).reshape(17, 2)
        kps[1, :, :2] = 100 + np.arange(34).reshape(17, 2)
        kps[..., 2] = 0.05  # DEKR's joint values are not OpenPose-like confidences
        bbox = np.concatenate([kps[..., :2].min(1), kps[..., :2].max(1)], 1)
        return FrameResult(raw, {"keypoints": kps, "scores": np.array([0.9, 0.1], np.float32), "bbox": bbox})


def test_dekr_people_keeps_confident_people_with_all_joints():
    (p,) = DekrPeople(StubDekr()).people(frame())
    assert p.kind == "keypoints" and p.score == pytest.approx(0.9)
    assert p.box.tolist() == [0, 1, 32, 33]
    assert (p.keypoints[:, 2] == 1).all()


class EveryOtherFrame(DekrPeople):
    """The per-frame hook a tracker uses: the network runs on even frames, the others carry the last people."""

    def __init__(self, network):
        super().__init__(network)
        self.last: list = []

    def runs_on(self, frame):
        return frame.index % 2 == 0

    def people_in(self, result):
        self.last = super().people_in(result)
        return self.last

    def between(self, frame):
        return [Person(p.box + 1, "box") for p in self.last]


def test_network_source_runs_once_per_batch_and_only_where_the_hook_says():
    stub = StubDekr()
    source = EveryOtherFrame(stub)
    frames = [Frame(np.zeros((40, 60, 3), np.uint8), k, f"clip.mp4#{k}") for k in range(5)]
    found = source.find([source.prepare(f) for f in frames])
    assert stub.batches == [[0, 2, 4]]  # one device batch of the frames the network runs on
    assert [len(people) for people in found] == [1, 1, 1, 1, 1]
    assert [p[0].kind for p in found] == ["keypoints", "box", "keypoints", "box", "keypoints"]
    assert found[1][0].box.tolist() == [1, 2, 33, 34]  # carried from frame 0
