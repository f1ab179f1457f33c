"""Hostile checkpoints, archives and download servers (issue 9, items 5, 7, 9, 11, 12): one clear line each."""
from __future__ import annotations

import functools
import http.server
import io
import json
import os
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from meshcli import records
from meshcli import weights as store
from meshcli.checkpoints import torch_load
from meshcli.cli import app
from meshcli.errors import MeshcliError
from meshcli.methods.dekr import build_rescore_net, load_rescore_net

RESCORE = "dekr-rescore-coco"


def meshcli(*args: str, width: int = 200):
    return CliRunner().invoke(app, list(args), terminal_width=width)


def one_line(output: str, *words: str) -> str:
    lines = [line for line in output.splitlines() if all(w in line for w in words)]
    assert len(lines) == 1, output
    assert "Traceback" not in output and "internal error" not in output and "weights_only=False" not in output
    return lines[0]


@pytest.fixture()
def rescore_file(tmp_path) -> Path:
    """A small real checkpoint: DEKR's rescoring net, as the authors' files are laid out."""
    path = tmp_path / "final_rescore_coco_kpt.pth"
    torch.save(build_rescore_net("rescore-coco").state_dict(), path)
    return path


def flip_inside_member(path: Path, member_suffix: str, size: int = 64) -> None:
    """Flip bytes inside a stored zip member's data, leaving the zip structure intact."""
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith(member_suffix))
    data = bytearray(path.read_bytes())
    name_len, extra_len = np.frombuffer(data[info.header_offset + 26:info.header_offset + 30], "<u2")
    start = info.header_offset + 30 + int(name_len) + int(extra_len)
    for k in range(start, start + min(size, info.compress_size)):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


# -- 5: corrupted checkpoints ------------------------------------------------------------------------------------
def test_a_corrupted_checkpoint_is_refused_at_import(tmp_path, rescore_file, monkeypatch):
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
    flip_inside_member(rescore_file, "data/0")
    run = meshcli("weights", "import", RESCORE, str(rescore_file))
    assert run.exit_code != 0 and "stored" not in run.output
    line = one_line(run.output, str(rescore_file), "damaged")
    assert "CRC" in line and "download it again" in line
    assert not list((tmp_path / "store").glob("*.pth"))


def test_a_stored_file_that_changed_after_import_is_refused(tmp_path, rescore_file, monkeypatch):
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
    stored = store.import_file(RESCORE, rescore_file)
    record = json.loads(stored.with_name(stored.name + ".provenance.json").read_text())
    assert len(record["sha256"]) == 64
    assert store.resolve("dekr", "rescore-coco", None, False) == stored
    data = bytearray(stored.read_bytes())
    data[-100] ^= 1
    stored.write_bytes(bytes(data))
    with pytest.raises(MeshcliError) as err:
        store.resolve("dekr", "rescore-coco", None, False)
    assert "changed since it was imported" in err.value.line() and f"weights import {RESCORE}" in err.value.line()


# -- 7: a small zip that would expand to gigabytes --------------------------------------------------------------
def with_extra_member(checkpoint: Path, out: Path, mib: int, compression: int) -> Path:
    """``checkpoint``'s members plus a data member of ``mib`` MiB of zeros, written with ``compression``."""
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        with zipfile.ZipFile(checkpoint) as real:
            prefix = real.namelist()[0].split("/")[0]
            for info in real.infolist():
                zf.writestr(info.filename, real.read(info))
        with zf.open(f"{prefix}/data/999", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(mib):
                member.write(block)
    return out


@pytest.fixture()
def no_torch_load(monkeypatch):
    """torch.load must never be reached: sizes are refused before anything is expanded."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load reached")

    monkeypatch.setattr(torch, "load", refuse)


def test_a_deflated_zip_bomb_is_refused_before_it_is_expanded(tmp_path, no_torch_load):
    buf = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1)}, buf)
    bomb = with_extra_member(buf, tmp_path / "bomb.pth", 256, zipfile.ZIP_DEFLATED)  # about 256 KiB on disk
    assert bomb.stat().st_size < 2 << 20
    with pytest.raises(MeshcliError) as err:
        torch_load(bomb, holds=1 << 40)  # an architecture that could hold it: the stored bytes refuse it
    assert "declares" in err.value.line() and "data/999" in err.value.line()


def test_a_checkpoint_declaring_more_than_its_architecture_holds_is_refused_at_import(
        tmp_path, rescore_file, monkeypatch, no_torch_load):
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
    bomb = with_extra_member(rescore_file, tmp_path / "bomb.pth", 1024, zipfile.ZIP_DEFLATED)  # 1 GiB in ~1 MiB
    assert bomb.stat().st_size < 2 << 20
    run = meshcli("weights", "import", RESCORE, str(bomb))
    assert run.exit_code != 0 and "stored" not in run.output
    line = one_line(run.output, str(bomb), "more than a checkpoint of this network can hold")
    assert "--variant" in line
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").iterdir())


def test_an_uncompressed_member_beyond_the_architecture_is_refused(tmp_path, rescore_file, no_torch_load):
    # stored, not deflated: the member's bytes are really in the file, only the architecture says it is too much
    padded = with_extra_member(rescore_file, tmp_path / "padded.pth", 12, zipfile.ZIP_STORED)
    with pytest.raises(MeshcliError) as err:
        load_rescore_net(build_rescore_net("rescore-coco"), padded, "w32-coco")
    assert "padded.pth" in err.value.line() and "can hold" in err.value.line()


def test_a_refusal_never_passes_on_torchs_advice_to_load_unsafely(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": Evil()}, path)
    with pytest.raises(MeshcliError) as err:
        torch_load(path, holds=1 << 20)
    line = err.value.line()
    assert "refused" in line and "system" in line and "weights_only" not in line and "\n" not in line


# -- 9: hostile download servers ---------------------------------------------------------------------------------
class Trickle(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(200):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture()
def serve(monkeypatch, tmp_path):
    """serve(handler) -> the URL of a loopback server; the spin entry is pointed at it."""
    servers = []

    def start(handler, name="model_checkpoint.pt"):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_port}/{name}"
        known = records.manifest()
        entry = known["hmr" if name.endswith(".tar.gz") else "spin"]
        local = records.WeightsRecord(**{**entry.__dict__, "url": url})
        monkeypatch.setattr(records, "manifest", lambda: {**known, entry.name: local})
        monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
        return url

    yield start
    for server in servers:
        server.shutdown()


@pytest.mark.parametrize("limits, cause", [({"FETCH_RATE_WINDOW_S": 0.5, "FETCH_MIN_RATE": 1000}, "too slow"),
                                           ({"FETCH_DEADLINE_S": 0.5, "FETCH_MIN_RATE": 0}, "not finished")])
def test_a_trickling_server_is_given_up_on(serve, monkeypatch, limits, cause):
    url = serve(Trickle)
    for name, value in limits.items():
        monkeypatch.setattr(store, name, value)
    run = meshcli("weights", "fetch", "spin")
    assert run.exit_code != 0
    one_line(run.output, url, cause)


def archive_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def truncated_hmr_archive() -> bytes:
    rng = np.random.default_rng(0)
    names = records.record("hmr").members
    return archive_bytes({n: rng.integers(0, 255, 200_000, dtype=np.uint8).tobytes() for n in names})[:300_000]


def test_a_truncated_tar_gz_is_one_line_naming_the_url(serve, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "models.tar.gz").write_bytes(truncated_hmr_archive())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    url = serve(handler, "models.tar.gz")
    run = meshcli("weights", "fetch", "hmr")
    assert run.exit_code != 0 and "Aborted" not in run.output
    line = one_line(run.output, url, "truncated or damaged")
    assert "meshcli-fetch-" not in line  # never the deleted temporary copy


def test_importing_a_truncated_tar_gz_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(tmp_path / "store"))
    archive = tmp_path / "models.tar.gz"
    archive.write_bytes(truncated_hmr_archive())
    run = meshcli("weights", "import", "hmr", str(archive))
    assert run.exit_code != 0
    one_line(run.output, str(archive), "truncated or damaged")


def test_an_interrupted_fetch_leaves_no_temporary_folder(serve, monkeypatch, tmp_path):
    serve(Trickle)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))

    def interrupted(url, out, progress):
        out.write_bytes(b"partial")
        raise KeyboardInterrupt  # what SIGTERM becomes in the CLI

    monkeypatch.setattr(store, "_download", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.fetch("spin", progress=False)
    assert not list(temp.iterdir())


# -- 11, 12: the store itself ------------------------------------------------------------------------------------
def test_an_unwritable_store_is_one_line(tmp_path, monkeypatch, rescore_file):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("MESHCLI_WEIGHTS", str(blocker / "store"))
    run = meshcli("weights", "import", RESCORE, str(rescore_file))
    assert run.exit_code != 0
    one_line(run.output, "not writable", "MESHCLI_WEIGHTS")


def test_weights_list_fits_80_columns_and_has_json():
    run = meshcli("weights", "list", width=80)
    assert run.exit_code == 0
    assert max(len(line) for line in run.output.splitlines()) <= 80
    text = run.output
    for e in records.manifest().values():
        assert e.name in text  # whole names, never cut
    data = json.loads(meshcli("weights", "list", "--json").output)
    by_name = {row["name"]: row for row in data["checkpoints"]}
    assert set(by_name) == set(records.manifest())
    assert by_name["hmr"]["url"] == records.record("hmr").url and by_name["hmr"]["present"] in (True, False)


def test_an_smpl_pickle_of_shared_nested_lists_is_refused(tmp_path):
    import pickle

    from meshcli.io.smplfile import read_smpl_file

    nested = [0.0]
    for _ in range(40):  # 2^40 floats once copied out, a few hundred bytes as written
        nested = [nested, nested]
    path = tmp_path / "bomb.pkl"
    path.write_bytes(pickle.dumps({"v_template": nested}, protocol=2))
    assert path.stat().st_size < 1000
    with pytest.raises(MeshcliError) as err:
        read_smpl_file(path)
    assert "expand" in err.value.line() and "bomb.pkl" in err.value.line()
