"""SMPL set-up: the safe reader (plain, Python 2/chumpy, forbidden pickles), checks, import, forward."""
from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from meshcli.errors import MeshcliError
from meshcli.io.sinks import write_obj
from meshcli.io.smplfile import (IMPORT_COMMAND, LICENCE_URL, SMPL_FILE, import_smpl, load_smpl, read_smpl_file,
                                 require_smpl)
from meshcli.smpl import SMPLModel

from conftest import PARENTS, synthetic_smpl

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def model() -> dict[str, np.ndarray]:
    return synthetic_smpl()


@pytest.fixture(scope="session")
def model_npz(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("smpl") / "synthetic.npz"
    np.savez(path, **model)
    return path


@pytest.fixture(scope="session")
def plain_pickle(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("smpl") / "plain.pkl"
    path.write_bytes(pickle.dumps(model, protocol=2))
    return path


def _assert_same_model(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)


# ---------------------------------------------------------------- plain formats


def test_plain_pickle_every_protocol_and_npz(model, model_npz, plain_pickle, tmp_path):
    _assert_same_model(read_smpl_file(plain_pickle), model)
    for protocol in (0, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(model, protocol=protocol))
        _assert_same_model(read_smpl_file(path), model)
    _assert_same_model(read_smpl_file(model_npz), model)


def test_import_writes_one_clean_npz(model, plain_pickle, tmp_path):
    dst = tmp_path / "store" / "smpl_neutral.npz"
    summary = import_smpl(plain_pickle, dst)
    assert summary["cocoplus"] and summary["num_betas"] == 10 and summary["source"] == "plain.pkl"
    assert len(summary["source_sha256"]) == 64
    assert sorted(p.name for p in dst.parent.iterdir()) == ["smpl_neutral.npz"]  # no temp file left
    with np.load(dst, allow_pickle=False) as clean:
        assert set(clean.files) == set(model)
        assert clean["f"].dtype == np.int64 and clean["kintree_table"][0, 0] == -1
        assert clean["v_template"].dtype == np.float64
        np.testing.assert_array_equal(clean["f"], model["f"])
        np.testing.assert_array_equal(clean["kintree_table"][0, 1:], PARENTS[1:])
    # the stored file is itself a valid SMPL file
    _assert_same_model(load_smpl(dst), load_smpl(plain_pickle))


def test_fake_smpl_from_shared_pkl_and_npz(tmp_path):
    if not (SHARED / "parity").is_dir():
        pytest.skip("../shared/parity not present: parity fixtures live there")
    for suffix in (".pkl", ".npz"):
        subprocess.run([sys.executable, str(SHARED / "parity" / "fake_smpl.py"), str(tmp_path / f"fake{suffix}")],
                       check=True)
    summary = import_smpl(tmp_path / "fake.pkl", tmp_path / "a.npz")
    import_smpl(tmp_path / "fake.npz", tmp_path / "b.npz")
    assert summary["cocoplus"]
    _assert_same_model(load_smpl(tmp_path / "a.npz"), load_smpl(tmp_path / "b.npz"))


# ---------------------------------------------------------------- Python 2 pickles with chumpy and scipy


class Py2Pickle:
    """Writes protocol-2 opcodes the way Python 2 cPickle did for SMPL's file.

    Strings are Python 2 ``str`` (BINSTRING: raw bytes, read back through latin1),
    arrays are numpy's ``numpy.core.multiarray._reconstruct`` + BUILD with the raw
    data as such a string, chumpy objects are ``chumpy.ch.Ch`` with their state
    dict, sparse matrices ``scipy.sparse.csc.csc_matrix`` with theirs.
    """

    @staticmethod
    def str_(text: str | bytes) -> bytes:
        data = text.encode("latin1") if isinstance(text, str) else text
        return b"T" + struct.pack("<i", len(data)) + data

    @staticmethod
    def int_(n: int) -> bytes:
        return b"J" + struct.pack("<i", n)

    @staticmethod
    def glob(module: str, name: str) -> bytes:
        return b"c" + f"{module}\n{name}\n".encode()

    def tuple_(self, *items: bytes) -> bytes:
        return b"(" + b"".join(items) + b"t"

    def dict_(self, items: dict[str, bytes]) -> bytes:
        return b"}(" + b"".join(self.str_(k) + v for k, v in items.items()) + b"u"

    def dtype(self, dt: np.dtype) -> bytes:
        code = f"{dt.kind}{dt.itemsize}"
        order = "|" if dt.itemsize == 1 else "<"
        state = self.tuple_(self.int_(3), self.str_(order), b"NNN", self.int_(-1), self.int_(-1), self.int_(0))
        return (self.glob("numpy", "dtype") + self.tuple_(self.str_(code), self.int_(0), self.int_(1)) + b"R"
                + state + b"b")

    def array(self, a: np.ndarray) -> bytes:
        a = np.ascontiguousarray(a)
        shape = self.tuple_(*(self.int_(n) for n in a.shape))
        head = (self.glob("numpy.core.multiarray", "_reconstruct") + self.glob("numpy", "ndarray")
                + self.tuple_(self.int_(0)) + self.str_("b") + b"\x87R")
        raw = self.str_(a.astype(a.dtype.newbyteorder("<")).tobytes())
        state = self.tuple_(self.int_(1), shape, self.dtype(a.dtype), b"\x89", raw)  # \x89: not Fortran order
        return head + state + b"b"

    def chumpy(self, a: np.ndarray, via_reconstructor: bool) -> bytes:
        if via_reconstructor:  # protocol 0/1 style: copy_reg._reconstructor(Ch, object, None)
            obj = (self.glob("copy_reg", "_reconstructor")
                   + self.tuple_(self.glob("chumpy.ch", "Ch"), self.glob("__builtin__", "object"), b"N") + b"R")
        else:
            obj = self.glob("chumpy.ch", "Ch") + b")\x81"
        dirty = self.glob("__builtin__", "set") + b"]" + self.str_("x") + b"a\x85R"  # set(["x"])
        state = self.dict_({"x": self.array(a), "_dirty_vars": dirty, "_itr": b"N",
                            "_depends_on_deps": b"}", "_make_dense": b"\x89", "_make_sparse": b"\x89"})
        return obj + state + b"b"

    def csc(self, dense: np.ndarray) -> bytes:
        cols = [np.flatnonzero(dense[:, j]) for j in range(dense.shape[1])]
        indices = np.concatenate(cols).astype(np.int32)
        indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int32)
        data = np.concatenate([dense[c, j] for j, c in enumerate(cols)])
        state = self.dict_({"_shape": self.tuple_(self.int_(dense.shape[0]), self.int_(dense.shape[1])),
                            "data": self.array(data), "indices": self.array(indices),
                            "indptr": self.array(indptr), "maxprint": self.int_(50), "format": self.str_("csc")})
        return self.glob("scipy.sparse.csc", "csc_matrix") + b")\x81" + state + b"b"

    def smpl_file(self, m: dict[str, np.ndarray]) -> bytes:
        items = {
            "v_template": self.chumpy(m["v_template"], via_reconstructor=False),
            "shapedirs": self.chumpy(m["shapedirs"], via_reconstructor=True),
            "posedirs": self.chumpy(m["posedirs"], via_reconstructor=False),
            "J_regressor": self.csc(m["J_regressor"]),
            "weights": self.chumpy(m["weights"], via_reconstructor=False),
            "kintree_table": self.array(m["kintree_table"]),
            "f": self.array(m["f"]),
            "cocoplus_regressor": self.csc(m["cocoplus_regressor"]),
            "bs_style": self.str_("lbs"),
            "bs_type": self.str_("lrotmin"),
        }
        return b"\x80\x02" + self.dict_(items) + b"."


def test_python2_pickle_with_chumpy_and_sparse(model, tmp_path):
    path = tmp_path / "basicModel_py2.pkl"
    path.write_bytes(Py2Pickle().smpl_file(model))
    got = read_smpl_file(path)
    assert "bs_style" not in got  # strings are dropped, arrays kept
    _assert_same_model(got, model)
    assert "chumpy" not in sys.modules  # never imported, and not needed
    summary = import_smpl(path, tmp_path / "clean.npz")
    assert summary["cocoplus"]


# ---------------------------------------------------------------- refusing code


class _RunsOnLoad:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _forbidden_pickles(marker: Path, model: dict) -> dict[str, bytes]:
    touch = f"touch {marker}"
    write = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": pickle.dumps(_RunsOnLoad(os.system, touch), protocol=2),
        "builtins.eval": pickle.dumps(_RunsOnLoad(eval, write), protocol=4),
        "builtins.exec, inside a valid SMPL dict": pickle.dumps(
            {**model, "extra": _RunsOnLoad(exec, write)}, protocol=2),
        "subprocess.call": pickle.dumps(_RunsOnLoad(subprocess.call, ["touch", str(marker)]), protocol=5),
        "INST opcode, protocol 0": f"(S'{touch}'\nios\nsystem\n.".encode(),
        "a numpy global that is not whitelisted": pickle.dumps(_RunsOnLoad(np.load, str(marker)), protocol=2),
        "object dtype array": pickle.dumps({"v_template": np.array([print, eval], dtype=object)}, protocol=2),
        "_reconstruct of another class": (b"\x80\x02" + Py2Pickle.glob("numpy.core.multiarray", "_reconstruct")
                                          + Py2Pickle.glob("__builtin__", "object") + b"K\x00\x85U\x01b\x87R."),
    }


def test_forbidden_objects_are_refused_and_nothing_runs(model, tmp_path):
    marker = tmp_path / "ran.txt"
    for what, data in _forbidden_pickles(marker, model).items():
        path = tmp_path / "evil.pkl"
        path.write_bytes(data)
        with pytest.raises(MeshcliError) as err:
            read_smpl_file(path)
        assert "refused to load" in str(err.value), what
        assert str(path) in str(err.value)
        assert not marker.exists(), f"{what}: code from the pickle ran"
    # The same call does run the code in an ordinary pickle.load: the payloads are live.
    pickle.loads(pickle.dumps(_RunsOnLoad(os.system, f"touch {marker}")))
    assert marker.exists()


def test_refusal_names_the_global(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"cos\nsystem\n(S'true'\ntR.")
    with pytest.raises(MeshcliError, match=r"os\.system"):
        read_smpl_file(path)


def test_truncated_pickle_is_a_clear_error(plain_pickle, tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(plain_pickle.read_bytes()[:100_000])
    with pytest.raises(MeshcliError, match="not a readable SMPL pickle"):
        read_smpl_file(path)
    loop: list = []
    loop.append(loop)  # a cycle: reading must end in a clear error, not a crash
    path.write_bytes(pickle.dumps({"v_template": loop}, protocol=2))
    with pytest.raises(MeshcliError, match="not a readable SMPL pickle"):
        read_smpl_file(path)


# ---------------------------------------------------------------- checks and messages


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(posedirs=m["posedirs"][:, :, :200]), r"'posedirs' has shape \(6890, 3, 200\)"),
    (lambda m: m.update(J_regressor=m["J_regressor"].T), r"'J_regressor' has shape \(6890, 24\)"),
    (lambda m: m.update(cocoplus_regressor=m["cocoplus_regressor"][:14]), "'cocoplus_regressor'"),
    (lambda m: m.pop("weights"), "missing 'weights'"),
    (lambda m: m.update(f=m["f"] + 6890), "faces"),
    (lambda m: m["kintree_table"].__setitem__((0, 5), 7), "kintree_table"),
    (lambda m: m.update(shapedirs=m["shapedirs"][:, :, :5]), "5 shape components"),
])
def test_wrong_layout_is_refused(model, tmp_path, change, message):
    bad = {k: v.copy() for k, v in model.items()}
    change(bad)
    path = tmp_path / "bad.npz"
    np.savez(path, **bad)
    with pytest.raises(MeshcliError, match=message):
        import_smpl(path, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def test_missing_smpl_says_which_file_where_and_how(tmp_path):
    stored = tmp_path / "weights" / "smpl_neutral.npz"
    for call in (lambda: require_smpl(None, stored), lambda: require_smpl(tmp_path / "nope.pkl", stored),
                 lambda: read_smpl_file(tmp_path / "nope.pkl")):
        with pytest.raises(MeshcliError) as err:
            call()
        text = str(err.value)
        assert "\n" not in text
        assert SMPL_FILE in text and LICENCE_URL in text and IMPORT_COMMAND in text
        assert "neutral_smpl_with_cocoplus_reg.pkl" in text
    stored.parent.mkdir()
    stored.write_bytes(b"x")
    assert require_smpl(None, stored) == stored
    given = tmp_path / "mine.pkl"
    given.write_bytes(b"x")
    assert require_smpl(given, stored) == given


def test_a_file_without_the_cocoplus_regressor_gives_no_cocoplus_regressor(model, model_npz, tmp_path):
    path = tmp_path / "basic.npz"
    np.savez(path, **{k: v for k, v in model.items() if k != "cocoplus_regressor"})
    assert not SMPLModel.from_file(path).has_cocoplus
    assert SMPLModel.from_file(model_npz).has_cocoplus


# ---------------------------------------------------------------- forward


def _rodrigues(r: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(r)
    if angle < 1e-12:
        return np.eye(3)
    k = r / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def lbs_reference(m: dict, betas: np.ndarray, pose: np.ndarray, parents=None):
    """SMPL written out from the paper's equations, one body at a time."""
    parents = m["kintree_table"][0] if parents is None else parents
    v_shaped = m["v_template"] + m["shapedirs"] @ betas
    rest = m["J_regressor"] @ v_shaped
    rot = [_rodrigues(p) for p in pose.reshape(24, 3)]
    v_posed = v_shaped + m["posedirs"] @ np.concatenate([(r - np.eye(3)).ravel() for r in rot[1:]])
    world = []
    for j in range(24):
        local = np.eye(4)
        local[:3, :3] = rot[j]
        local[:3, 3] = rest[j] - (rest[parents[j]] if j else 0)
        world.append(local if j == 0 else world[parents[j]] @ local)
    joints = np.array([g[:3, 3] for g in world])
    skin = np.array([g - np.pad((g[:3, :3] @ rest[j])[:, None], ((0, 1), (3, 0))) for j, g in enumerate(world)])
    per_vertex = np.einsum("vj,jab->vab", m["weights"], skin)
    verts = np.einsum("vab,vb->va", per_vertex[:, :3, :3], v_posed) + per_vertex[:, :3, 3]
    return verts, joints, m["cocoplus_regressor"] @ verts


def test_forward_matches_lbs_from_the_equations(model_npz):
    m = load_smpl(model_npz)
    rng = np.random.default_rng(1)
    betas, pose = rng.normal(0, 1.0, (3, 10)), rng.normal(0, 0.5, (3, 72))
    smpl = SMPLModel(m, dtype=torch.float64)
    out = smpl(torch.tensor(betas), torch.tensor(pose))
    rotmats = torch.tensor(np.array([[_rodrigues(p) for p in q.reshape(24, 3)] for q in pose]))
    out_rot = smpl(torch.tensor(betas), rotmats)
    out32 = SMPLModel(m)(torch.tensor(betas, dtype=torch.float32), torch.tensor(pose, dtype=torch.float32))
    # smplx rounds the model arrays through float32 even for a float64 model (~1e-7 here).
    close = {"atol": 1e-6, "rtol": 0}
    for b in range(3):
        verts, joints, coco = lbs_reference(m, betas[b], pose[b])
        np.testing.assert_allclose(out.vertices[b].numpy(), verts, **close)
        np.testing.assert_allclose(out.joints[b].numpy(), joints, **close)
        np.testing.assert_allclose((smpl.cocoplus_regressor @ out.vertices[b]).numpy(), coco, **close)
        np.testing.assert_allclose(out_rot.vertices[b].numpy(), verts, **close)
        np.testing.assert_allclose(out32.vertices[b].numpy(), verts, atol=1e-5, rtol=0)
    # the comparison can fail: a different kinematic tree moves the mesh far beyond the tolerance
    wrong_tree = np.array([-1] + [0] * 23)
    assert np.abs(lbs_reference(m, betas[0], pose[0], wrong_tree)[0] - out.vertices[0].numpy()).max() > 1e-2


def test_forward_batches_shared_betas_and_empty_batch(model_npz):
    smpl = SMPLModel.from_file(model_npz)
    pose = torch.randn(4, 24, 3, generator=torch.Generator().manual_seed(0)) * 0.3
    shared = smpl(torch.ones(1, 10), pose)
    each = smpl(torch.ones(4, 10), pose)
    torch.testing.assert_close(shared.vertices, each.vertices)
    one = smpl(torch.ones(1, 10), pose[2:3])
    torch.testing.assert_close(one.vertices[0], each.vertices[2], atol=1e-5, rtol=0)
    empty = smpl(torch.zeros(0, 10), torch.zeros(0, 72))
    assert empty.vertices.shape == (0, 6890, 3) and empty.joints.shape == (0, 24, 3)


def test_forward_matches_official_hmr_and_spin_outputs(fake_smpl):
    smpl = SMPLModel.from_file(fake_smpl)
    hmr = np.load(SHARED / "parity" / "hmr-tf" / "expected.npz")
    for i in range(4):
        theta = torch.from_numpy(hmr[f"theta_{i}"][-1:])  # [s, tx, ty, 72 pose, 10 betas]
        out = smpl(theta[:, 75:], theta[:, 3:75])
        np.testing.assert_allclose(out.vertices[0].numpy(), hmr[f"verts_{i}"], atol=1e-4, rtol=0)
        np.testing.assert_allclose((smpl.cocoplus_regressor @ out.vertices[0]).numpy(), hmr[f"joints3d_{i}"],
                                   atol=1e-4, rtol=0)
        np.testing.assert_allclose(out.joints[0].numpy(), hmr[f"smpl_joints24_{i}"], atol=1e-4, rtol=0)
    spin = np.load(SHARED / "parity" / "spin" / "expected.npz")
    for i in range(2):
        out = smpl(torch.from_numpy(spin[f"pred_betas_{i}"])[None], torch.from_numpy(spin[f"pred_rotmat_{i}"])[None])
        np.testing.assert_allclose(out.vertices[0].numpy(), spin[f"vertices_{i}"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(out.joints[0].numpy(), spin[f"smpl_joints24_{i}"], atol=1e-4, rtol=0)


# ---------------------------------------------------------------- OBJ


def test_write_obj_round_trip(tmp_path):
    verts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.5, -2.25]])
    faces = np.array([[0, 1, 2]])
    path = tmp_path / "mesh" / "p0_f000001.obj"
    write_obj(path, verts, faces)
    lines = path.read_text().splitlines()
    assert lines[:3] == ["v 0.000000 0.000000 0.000000", "v 1.000000 0.000000 0.000000",
                         "v 0.000000 1.500000 -2.250000"]
    assert lines[3] == "f 1 2 3" and len(lines) == 4
    assert [p.name for p in path.parent.iterdir()] == [path.name]
