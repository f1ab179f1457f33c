"""The NPZ schema: README's tables, meshcli.schema and what every command writes agree; meshcli.read loads them."""
from __future__ import annotations

import dataclasses
import json
import re

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import meshcli
from meshcli import records
from meshcli.cli import app
from meshcli.errors import MeshcliError
from meshcli.methods import dekr
from meshcli.schema import KEYS, SCHEMA_VERSION, keys_for

from conftest import REPO, write_video

ROW = re.compile(r"^\| `([a-z0-9_]+)` \| (row|frame|input) \| ([^|]+) \| ([^|]+) \|$")


def test_readme_tables_are_the_schema():
    section = (REPO / "README.md").read_text().split("### Outputs of every command\n", 1)[1].split("\n## ", 1)[0]
    documented = [m.groups() for m in map(ROW.match, section.splitlines()) if m]
    assert documented == [(k.name, k.kind, k.shape.strip(), k.meaning.strip()) for k in KEYS]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, fake_smpl):
    """The NPZ of every command (untrained, small inputs): group -> path."""
    tmp = tmp_path_factory.mktemp("schema")
    video = write_video(tmp / "clip.mp4", frames=2, size=(96, 64))
    depth = tmp / "depth.png"
    cv2.imwrite(str(depth), np.full((120, 160), 600, np.uint16))
    boxes = tmp / "boxes.json"
    boxes.write_text(json.dumps({"frames": {"0": [[10, 5, 40, 50], [50, 10, 30, 40]]}}))
    runs = {
        "pose": ["pose", str(video), "--scales", "1"],
        "body": ["body", str(video), "--method", "hmr", "--boxes", str(boxes), "--save-vertices",
                 "--renderer", "wireframe", "--smpl", str(fake_smpl)],
        "i2l": ["body", str(video), "--method", "i2l", "--bbox", "10,5,40,50", "--save-vertices",
                "--renderer", "wireframe", "--smpl", str(fake_smpl)],
        "hand": ["hand", str(depth), "--centre", "0,0,600", "--intrinsics", "200,200,80,60"],
    }
    out = {}
    with pytest.MonkeyPatch.context() as patch:  # a small DEKR input keeps the pose run fast
        patch.setattr(dekr, "record_for", lambda m, v: dataclasses.replace(records.record_for(m, v), input_size=128))
        for group, args in runs.items():
            run = CliRunner().invoke(app, [*args, "--random-weights", "--out", str(tmp / group), "-q"])
            assert run.exit_code == 0, (group, run.output)
            out[group] = next((tmp / group).glob("*.npz"))
    return out


@pytest.mark.parametrize("group", ["pose", "body", "i2l", "hand"])
def test_every_key_written_is_documented(outputs, group):
    known = keys_for(group)
    with np.load(outputs[group]) as npz:
        arrays = {k: npz[k] for k in npz.files}
    assert set(arrays) <= set(known), set(arrays) - set(known)
    assert int(arrays["schema_version"]) == SCHEMA_VERSION
    assert all(len(v) == len(arrays["frame_index"]) for k, v in arrays.items() if known[k].kind == "row")


DTYPE_KINDS = {"str": "U", "int": "i", "float": "f"}  # a type word of the schema naming a kind, not a dtype


@pytest.mark.parametrize("group", ["pose", "body", "i2l", "hand"])
def test_every_key_written_has_the_documented_dtype(outputs, group):
    known = keys_for(group)
    with np.load(outputs[group]) as npz:
        written = {k: npz[k].dtype for k in npz.files}
    wrong = {}
    for key, dtype in written.items():
        documented = known[key].shape.split()[-1]
        kind = DTYPE_KINDS.get(documented)
        if (dtype.kind != kind) if kind else (dtype.name != documented):
            wrong[key] = f"{dtype.name}, documented {documented}"
    assert not wrong, wrong


def test_read_gives_frames_typed_per_task(outputs):
    pose = meshcli.read(outputs["pose"])
    assert pose.method == "dekr" and len(pose) == 2 and pose.meta["untrained"]
    assert [type(r).__name__ for r in pose] == ["PoseResult", "PoseResult"]
    assert pose[1].keypoints.shape[1:] == (17, 3)
    body = meshcli.read(outputs["body"])
    first, second = body[0], body[1]
    assert first.num_people == 2 and second.num_people == 0  # the boxes file lists people in frame 0 only
    assert first.vertices.shape == (2, 6890, 3) and body.meta["detector"] == "boxes"
    hand = meshcli.read(outputs["hand"])
    assert type(hand[0]).__name__ == "HandResult" and hand[0].status == "ok"
    with pytest.raises(MeshcliError, match="no track_id"):
        hand.track(0)


def test_tracks_are_read_by_track_id(outputs, tmp_path):
    with np.load(outputs["body"]) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["track_id"] = np.array([7, 3])
    np.savez(tmp_path / "tracked.npz", **arrays)
    results = meshcli.read(tmp_path / "tracked.npz")
    assert results.track_ids.tolist() == [3, 7]
    np.testing.assert_array_equal(results.track(7)["bbox"], arrays["bbox"][:1])
    with pytest.raises(MeshcliError, match="no track 5"):
        results.track(5)


def test_read_refuses_what_meshcli_did_not_write(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(MeshcliError, match="not a meshcli NPZ"):
        meshcli.read(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(MeshcliError, match="not a readable NPZ"):
        meshcli.read(tmp_path / "text.npz")
