"""`meshcli export`: a body NPZ made by `meshcli body` (stand-in SMPL, random weights, a real video) read back.

The exported glTF's skin and the BVH's channels are evaluated here, independently of the
exporter, and compared with smplx's SMPL forward (meshcli.smpl.SMPLModel) of the same parameters.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import torch
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from meshcli.cli import app
from meshcli.export.body_model import BodyModel, pose_rotations
from meshcli.types import file_sha256
from meshcli.io.smplfile import load_smpl
from meshcli.smpl import SMPL_JOINT_NAMES, SMPLModel

from conftest import REPO, synthetic_smpl

CLIP_TIMES_MS = [0, 100, 250, 290, 420]  # variable frame rate
Y_UP = np.diag([1.0, -1.0, -1.0])  # OpenCV camera -> y up
TOL_M = 1e-4


def meshcli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def oneline(run) -> str:
    return " ".join(run.output.split())


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Stand-in SMPL files, a short variable-rate re-encode of examples/multi_person_demo.mp4, and body NPZs."""
    import av

    root = tmp_path_factory.mktemp("export")
    # sparse: 6 influences per vertex (both JOINTS_n sets used, nothing dropped); dense: all 24
    sparse, dense = root / "sparse.npz", root / "dense.npz"
    np.savez(sparse, **synthetic_smpl(1, influences=6))
    np.savez(dense, **synthetic_smpl(1, influences=24))
    clip = root / "clip.mp4"
    with av.open(str(REPO / "examples" / "multi_person_demo.mp4")) as src, av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 192, 108, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for ms, frame in zip(CLIP_TIMES_MS, src.decode(video=0)):
            small = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.to_ndarray(format="rgb24")[::10, ::10]),
                                               format="rgb24")
            small.pts, small.time_base = ms, Fraction(1, 1000)
            for packet in stream.encode(small):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    common = ["--method", "hmr", "--random-weights", "--smpl", sparse, "--no-annotate", "--renderer", "wireframe",
              "-q"]
    run = meshcli("body", clip, *common, "--detector", "full", "--save-mesh", "--out", root / "one")
    assert run.exit_code == 0, run.output
    boxes = root / "boxes.json"
    boxes.write_text(json.dumps({"frames": {str(k): [[10, 10, 60, 90], [100, 15, 50, 80]] for k in range(5)}}))
    # untracked: the tests give it track ids of their own choosing (with_track_ids)
    run = meshcli("body", clip, *common, "--boxes", boxes, "--save-vertices", "--no-track", "--out", root / "two")
    assert run.exit_code == 0, run.output
    return {"root": root, "sparse": sparse, "dense": dense, "one": root / "one" / "clip.npz",
            "two": root / "two" / "clip.npz", "meshes": root / "one" / "clip_meshes"}


def smpl_reference(smpl: Path, npz: dict, rows) -> tuple[np.ndarray, np.ndarray]:
    """smplx's vertices and joints of the rows, shaped by their mean betas, placed by cam_t, y up."""
    model = SMPLModel.from_file(smpl, dtype=torch.float64)
    betas = torch.as_tensor(npz["betas"][rows].astype(np.float64).mean(0, keepdims=True))
    pose = torch.as_tensor(np.concatenate([npz["global_orient"][rows], npz["body_pose"][rows]], 1), dtype=torch.float64)
    out = model(betas, pose)
    shift = npz["cam_t"][rows][:, None]
    return (out.vertices.numpy() + shift) @ Y_UP.T, (out.joints.numpy() + shift) @ Y_UP.T


# ------------------------------------------------------------------ glTF read back


def accessor(doc: pygltflib.GLTF2, blob: bytes, index: int) -> np.ndarray:
    acc = doc.accessors[index]
    view = doc.bufferViews[acc.bufferView]
    dtype = {pygltflib.FLOAT: np.float32, pygltflib.UNSIGNED_BYTE: np.uint8,
             pygltflib.UNSIGNED_SHORT: np.uint16, pygltflib.UNSIGNED_INT: np.uint32}[acc.componentType]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc.type]
    start = view.byteOffset + (acc.byteOffset or 0)
    return np.frombuffer(blob, dtype, acc.count * width, start).reshape(acc.count, width).astype(np.float64)


def skinned_vertices(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(keyframe times, (K, V, 3) vertices) of a skinned, animated glTF as a viewer computes them."""
    doc = pygltflib.GLTF2().load(str(path))
    blob = doc.binary_blob() if path.suffix == ".glb" else (path.parent / doc.buffers[0].uri).read_bytes()
    (mesh_node,) = [n for n in doc.nodes if n.mesh is not None]
    primitive = doc.meshes[mesh_node.mesh].primitives[0]
    skin = doc.skins[mesh_node.skin]
    animation = doc.animations[0]
    times = accessor(doc, blob, animation.samplers[0].input)[:, 0]
    keyed = {}
    for channel in animation.channels:
        sampler = animation.samplers[channel.sampler]
        assert sampler.interpolation == "LINEAR"
        np.testing.assert_array_equal(accessor(doc, blob, sampler.input)[:, 0], times)
        keyed[channel.target.node, channel.target.path] = accessor(doc, blob, sampler.output)

    rest = accessor(doc, blob, primitive.attributes.POSITION)
    targets = np.stack([accessor(doc, blob, t["POSITION"]) for t in primitive.targets])
    influences = [(accessor(doc, blob, getattr(primitive.attributes, f"JOINTS_{k}")).astype(int),
                   accessor(doc, blob, getattr(primitive.attributes, f"WEIGHTS_{k}")))
                  for k in range(2) if getattr(primitive.attributes, f"JOINTS_{k}", None) is not None]
    inverse_bind = accessor(doc, blob, skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    parent = {c: i for i, n in enumerate(doc.nodes) for c in (n.children or [])}
    out = []
    for k in range(len(times)):
        world = {}
        for i, node in enumerate(doc.nodes):  # parents come first in this file; checked by the lookup
            local = np.eye(4)
            t = keyed.get((i, "translation"), [node.translation or [0, 0, 0]] * len(times))[k]
            q = keyed.get((i, "rotation"), [node.rotation or [0, 0, 0, 1]] * len(times))[k]
            local[:3, :3], local[:3, 3] = Rotation.from_quat(q).as_matrix(), t
            world[i] = world[parent[i]] @ local if i in parent else local
        weights = keyed[doc.nodes.index(mesh_node), "weights"].reshape(len(times), -1)[k]
        morphed = rest + np.einsum("t,tvc->vc", weights, targets)
        joint_matrices = np.stack([world[j] @ inverse_bind[n] for n, j in enumerate(skin.joints)])
        homogeneous = np.c_[morphed, np.ones(len(morphed))]
        posed = np.zeros_like(rest)
        for joints, w in influences:
            for slot in range(4):
                posed += w[:, slot, None] * np.einsum("vab,vb->va", joint_matrices[joints[:, slot]], homogeneous)[:, :3]
        out.append(posed)
    return times, np.stack(out)


def test_numpy_forward_is_smplx(made):
    arrays = load_smpl(made["sparse"])
    rng = np.random.default_rng(3)
    betas, aa = rng.normal(0, 1, 10), rng.normal(0, 0.6, (4, 72))
    mine = BodyModel(arrays)
    posed = mine.pose(mine.rest(betas), pose_rotations(aa[:, :3], aa[:, 3:]))
    ref = SMPLModel(arrays, dtype=torch.float64)(torch.as_tensor(betas[None]), torch.as_tensor(aa))
    # smplx's Rodrigues adds 1e-8 to every rotation vector: differences of that order remain
    np.testing.assert_allclose(posed.vertices, ref.vertices.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(posed.joints, ref.joints.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("fmt", ["glb", "gltf"])
def test_gltf_skin_is_the_smpl_forward(made, tmp_path, fmt):
    run = meshcli("export", made["one"], "--format", fmt, "--smpl", made["sparse"], "--out", tmp_path)
    assert run.exit_code == 0, run.output
    assert "truncat" not in run.output  # six influences: both JOINTS_n sets, nothing dropped
    written = tmp_path / f"clip_track0.{fmt}"
    times, vertices = skinned_vertices(written)
    npz = np.load(made["one"])
    # the video's own timestamps (variable rate), not frame index / fps
    np.testing.assert_allclose(npz["frame_time"], np.array(CLIP_TIMES_MS) / 1000, atol=1e-9)
    np.testing.assert_allclose(times, npz["frame_time"][npz["frame_index"]], atol=1e-6)
    want, _ = smpl_reference(made["sparse"], npz, np.arange(len(npz["frame_index"])))
    assert np.abs(vertices - want).max() < TOL_M
    # the pose correctives matter: without the morph targets the skin would be off
    assert np.abs(want - want.mean(1, keepdims=True)).max() > 0.1


def test_truncated_skin_error_is_measured_and_stated(made, tmp_path):
    """All 24 joints influence every vertex of the dense stand-in: 8 are kept, and the error is said."""
    run = meshcli("export", made["one"], "--smpl", made["dense"], "--out", tmp_path)
    assert run.exit_code == 0, run.output
    text = oneline(run)
    assert "not the SMPL file the NPZ was made with" in text and "6890 vertices have more than 8" in text
    stated_mm = float(text.split("moving vertices by up to ")[1].split(" mm")[0])
    doc = pygltflib.GLTF2().load(str(tmp_path / "clip_track0.glb"))
    assert doc.extras["meshcli"]["skin_truncation_error_m"] == pytest.approx(stated_mm / 1000, abs=1e-6)
    _, vertices = skinned_vertices(tmp_path / "clip_track0.glb")
    npz = np.load(made["one"])
    want, _ = smpl_reference(made["dense"], npz, np.arange(len(npz["frame_index"])))
    measured = np.linalg.norm(vertices - want, axis=-1).max()
    assert measured > 10 * TOL_M
    assert measured == pytest.approx(stated_mm / 1000, abs=2e-5)


# ------------------------------------------------------------------ BVH read back


def parse_bvh(text: str):
    """Joint names, parents, offsets, channel lists, frame time and the motion table of a BVH file."""
    tokens = text.split()
    names, parents, offsets, channels, stack = [], [], [], [], []
    i = tokens.index("HIERARCHY") + 1
    while tokens[i] != "MOTION":
        tok = tokens[i]
        if tok in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            i += 2
        elif tok == "End":  # End Site { OFFSET x y z }
            i += 8
        elif tok == "{":
            stack.append(len(names) - 1)
            i += 1
        elif tok == "}":
            stack.pop()
            i += 1
        elif tok == "OFFSET":
            offsets.append([float(v) for v in tokens[i + 1:i + 4]])
            i += 4
        elif tok == "CHANNELS":
            n = int(tokens[i + 1])
            channels.append(tokens[i + 2:i + 2 + n])
            i += 2 + n
        else:
            raise AssertionError(f"unexpected BVH token {tok}")
    count = int(tokens[tokens.index("Frames:") + 1])
    frame_time = float(tokens[tokens.index("Time:") + 1])
    values = np.array(tokens[tokens.index("Time:") + 2:], float).reshape(count, -1)
    return names, parents, np.array(offsets), channels, frame_time, values


def bvh_joint_positions(text: str) -> tuple[list[str], np.ndarray]:
    names, parents, offsets, channels, _, values = parse_bvh(text)
    axis = {"X": 0, "Y": 1, "Z": 2}
    positions = np.zeros((len(values), len(names), 3))
    for f, row in enumerate(values):
        world, col = [], 0
        for j, chans in enumerate(channels):
            local = np.eye(4)
            local[:3, 3] = offsets[j]
            for name in chans:
                v = row[col]
                col += 1
                if name.endswith("position"):
                    local[axis[name[0]], 3] += v
                else:  # rotations compose in the order listed
                    a = np.radians(v)
                    c, s = np.cos(a), np.sin(a)
                    k = axis[name[0]]
                    i1, i2 = (k + 1) % 3, (k + 2) % 3
                    r = np.eye(3)
                    r[i1, i1], r[i1, i2], r[i2, i1], r[i2, i2] = c, -s, s, c
                    local[:3, :3] = local[:3, :3] @ r
            world.append(world[parents[j]] @ local if parents[j] >= 0 else local)
            positions[f, j] = world[j][:3, 3]
    return names, positions


def test_bvh_forward_kinematics_is_the_smpl_chain(made, tmp_path):
    run = meshcli("export", made["one"], "--format", "bvh", "--smpl", made["sparse"], "--out", tmp_path)
    assert run.exit_code == 0, run.output
    text = (tmp_path / "clip_track0.bvh").read_text()
    names, positions = bvh_joint_positions(text)
    assert sorted(names) == sorted(SMPL_JOINT_NAMES)  # depth first in the file
    positions = positions[:, [names.index(n) for n in SMPL_JOINT_NAMES]]
    assert "CHANNELS 3 Zrotation Xrotation Yrotation" in text
    npz = np.load(made["one"])
    assert float(text.split("Frame Time:")[1].split()[0]) == pytest.approx(1 / npz["fps"], rel=1e-6)
    _, want = smpl_reference(made["sparse"], npz, np.arange(len(npz["frame_index"])))
    assert positions.shape == want.shape  # one BVH frame per video frame
    assert np.abs(positions - want).max() < TOL_M


# ------------------------------------------------------------------ CSV, OBJ, tracks, the SMPL check


def test_csv_columns_are_the_joint_names(made, tmp_path):
    run = meshcli("export", made["two"], "--format", "csv", "--out", tmp_path)
    assert run.exit_code == 0, run.output
    npz = np.load(made["two"])
    names = [str(n) for n in npz["joint_names"]]
    with open(tmp_path / "clip.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    header = list(table[0])
    assert header[:4] == ["frame", "time", "track_id", "score"]
    assert header[4:] == [f"{n}_{c}" for n in names for c in "xyz"] + [f"{n}_{c}" for n in names for c in "uv"]
    assert len(table) == len(npz["frame_index"]) == 10
    row, k = table[3], 3
    assert int(row["frame"]) == npz["frame_index"][k] and row["track_id"] == ""
    assert float(row["time"]) == pytest.approx(npz["frame_time"][npz["frame_index"][k]], abs=1e-6)
    assert float(row[f"{names[5]}_y"]) == pytest.approx(npz["joints3d"][k, 5, 1], rel=1e-6)
    assert float(row[f"{names[2]}_u"]) == pytest.approx(npz["joints2d"][k, 2, 0], rel=1e-6)


def test_pose_csv_without_frame_times(tmp_path):
    """A pose NPZ's keypoints (x, y, score) and person scores; times from fps when frame_time is absent."""
    rng = np.random.default_rng(0)
    names = np.array(["nose", "left_eye", "right_eye"])
    keypoints = rng.uniform(0, 100, (4, 3, 3))
    np.savez(tmp_path / "pose.npz", frame_index=np.array([0, 0, 2, 5]), keypoints=keypoints,
             scores=np.array([0.9, 0.5, 0.7, 0.2]), joint_names=names, fps=25.0, num_frames=6)
    run = meshcli("export", tmp_path / "pose.npz", "--format", "csv", "--out", tmp_path)
    assert run.exit_code == 0, run.output
    assert "no per-frame 'frame_time': times are frame index / 25 fps" in oneline(run)
    with open(tmp_path / "pose.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0])[4:] == [f"{n}_{c}" for n in names for c in ("x", "y", "score")]
    assert [r["time"] for r in table] == ["0.000000", "0.000000", "0.080000", "0.200000"]
    assert [float(r["score"]) for r in table] == [0.9, 0.5, 0.7, 0.2]
    assert float(table[2]["right_eye_score"]) == pytest.approx(keypoints[2, 2, 2], rel=1e-6)
    text = oneline(meshcli("export", tmp_path / "pose.npz", "--format", "csv", "--track", "0", "--out", tmp_path))
    assert "frames hold several people and the NPZ has no 'track_id'" in text


def test_obj_sequence_is_what_save_mesh_writes(made, tmp_path):
    # from the parameters and SMPL (this NPZ has no vertices): the same files as --save-mesh
    run = meshcli("export", made["one"], "--format", "obj", "--smpl", made["sparse"], "--out", tmp_path / "p")
    assert run.exit_code == 0, run.output
    for k in range(5):
        saved = (made["meshes"] / f"{k:06d}_00.obj").read_text().splitlines()
        exported = (tmp_path / "p" / "clip_track0" / f"{k:06d}.obj").read_text().splitlines()
        assert [line for line in exported if line[0] == "f"] == [line for line in saved if line[0] == "f"]
        v = [np.array([line.split()[1:] for line in lines if line[0] == "v"], float) for lines in (saved, exported)]
        np.testing.assert_allclose(v[1], v[0], atol=2e-6)
    # from stored vertices (--save-vertices), one track of two
    npz = np.load(made["two"])
    tracked = with_track_ids(made["two"], tmp_path / "tracked.npz", [0, 1] * 5)
    run = meshcli("export", tracked, "--format", "obj", "--track", "1", "--smpl", made["sparse"],
                  "--out", tmp_path / "v")
    assert run.exit_code == 0, run.output
    assert sorted(p.name for p in (tmp_path / "v" / "tracked_track1").iterdir()) == [f"{k:06d}.obj" for k in range(5)]
    lines = (tmp_path / "v" / "tracked_track1" / "000003.obj").read_text().splitlines()
    v = np.array([line.split()[1:] for line in lines if line[0] == "v"], float)
    np.testing.assert_allclose(v, npz["vertices"][7] + npz["cam_t"][7], atol=2e-6)


def with_track_ids(src: Path, dst: Path, ids) -> Path:
    data = dict(np.load(src))
    data["track_id"] = np.asarray(ids, np.int32)
    np.savez(dst, **data)
    return dst


def test_tracks(made, tmp_path):
    text = oneline(meshcli("export", made["two"], "--smpl", made["sparse"], "--out", tmp_path / "no"))
    assert "frames hold several people and the NPZ has no 'track_id'" in text
    text = oneline(meshcli("export", made["two"], "--track", "0", "--smpl", made["sparse"], "--out", tmp_path / "no"))
    assert "no 'track_id'" in text and not (tmp_path / "no").exists()

    npz = np.load(made["two"])
    tracked = with_track_ids(made["two"], tmp_path / "tracked.npz", [3, 7] * 5)
    run = meshcli("export", tracked, "--format", "bvh", "--smpl", made["sparse"], "--out", tmp_path / "all")
    assert run.exit_code == 0, run.output
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["tracked_track3.bvh", "tracked_track7.bvh"]
    run = meshcli("export", tracked, "--format", "bvh", "--track", "7", "--smpl", made["sparse"],
                  "--out", tmp_path / "7")
    assert run.exit_code == 0, run.output
    assert [p.name for p in (tmp_path / "7").iterdir()] == ["tracked_track7.bvh"]
    names, positions = bvh_joint_positions((tmp_path / "7" / "tracked_track7.bvh").read_text())
    positions = positions[:, [names.index(n) for n in SMPL_JOINT_NAMES]]
    _, want = smpl_reference(made["sparse"], npz, np.arange(1, 10, 2))
    assert np.abs(positions - want).max() < TOL_M
    text = oneline(meshcli("export", tracked, "--track", "5", "--smpl", made["sparse"], "--out", tmp_path / "5"))
    assert "no track 5 (tracks: 3, 7)" in text
    run = meshcli("export", tracked, "--format", "csv", "--out", tmp_path / "csv")
    assert run.exit_code == 0, run.output
    with open(tmp_path / "csv" / "tracked.csv", newline="") as fh:
        assert [r["track_id"] for r in csv.DictReader(fh)] == ["3", "7"] * 5


def test_smpl_file_must_be_the_one_the_npz_was_made_with(made, tmp_path, monkeypatch):
    npz = np.load(made["one"])
    assert npz["smpl"] == "sparse.npz" and npz["smpl_sha256"] == file_sha256(made["sparse"])
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
    assert meshcli("weights", "import", "smpl", made["dense"]).exit_code == 0
    run = meshcli("export", made["one"], "--out", tmp_path / "out")
    assert run.exit_code != 0
    assert "not the SMPL file clip.npz was made with (sparse.npz" in oneline(run) and "--smpl" in run.output
    assert not (tmp_path / "out").exists()
    # shapes that do not fit: the stand-in's 10 shape components for 12 betas
    wide = dict(npz)
    wide["betas"] = np.zeros((len(npz["betas"]), 12), np.float32)
    np.savez(tmp_path / "wide.npz", **wide)
    run = meshcli("export", tmp_path / "wide.npz", "--smpl", made["sparse"], "--out", tmp_path / "out")
    assert run.exit_code != 0 and "has 10 shape components, the NPZ's betas have 12" in oneline(run)
    run = meshcli("export", made["one"], "--format", "fbx", "--out", tmp_path / "out")
    assert run.exit_code != 0 and "unknown --format fbx" in oneline(run)


def validator_dir() -> Path:
    folder = REPO / ".ci" / "node_modules"
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the Khronos glTF Validator runs on node")
    if not (folder / "gltf-validator").is_dir():
        pytest.skip("gltf-validator is not installed (.ci/run installs it: npm install --prefix .ci gltf-validator)")
    return folder


@pytest.mark.parametrize("fmt, smpl", [("glb", "sparse"), ("gltf", "sparse"), ("glb", "dense")])
def test_khronos_validator_finds_no_errors(made, tmp_path, fmt, smpl):
    folder = validator_dir()
    run = meshcli("export", made["one"], "--format", fmt, "--smpl", made[smpl], "--out", tmp_path)
    assert run.exit_code == 0, run.output
    done = subprocess.run(["node", str(REPO / "tests" / "gltf_validate.cjs"), str(tmp_path / f"clip_track0.{fmt}")],
                          capture_output=True, text=True, env={**os.environ, "NODE_PATH": str(folder)}, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    errors = [m for m in report["issues"]["messages"] if m["severity"] == 0]
    assert report["issues"]["numErrors"] == 0, errors[:5]
    assert report["info"]["animationCount"] == 1 and report["info"]["hasSkins"] and report["info"]["hasMorphTargets"]
