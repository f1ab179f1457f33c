"""Batch engine, Ray: a real local Ray (127.0.0.1, 2 CPUs) started once per test session (ray_cluster)."""
from __future__ import annotations

import _thread
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from typer.testing import CliRunner

from conftest import REPO, real_clip
from meshcli.cli import app
from meshcli.engine.cluster import STAGING_DIR
from meshcli.engine.ledger import LEDGER_DIR
from test_engine import depth_folder


def meshcli(*args) -> "CliRunner.Result":
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_same_npz(a: Path, b: Path) -> None:
    with np.load(a) as x, np.load(b) as y:
        assert sorted(x.files) == sorted(y.files)
        for key in x.files:
            assert x[key].dtype == y[key].dtype and x[key].tobytes() == y[key].tobytes(), key


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
                  and LEDGER_DIR not in p.parts)


def test_ray_outputs_equal_local_outputs(ray_cluster, tmp_path):
    """A real video, an image, a depth folder and a depth file, on 2 Ray workers and in-process."""
    clip = real_clip(tmp_path / "people.mp4", 2, width=160)
    image = REPO / "examples" / "coco_000000000785.jpg"
    depth = depth_folder(tmp_path / "depth", 3, seed=0)
    single = tmp_path / "one.npy"
    np.save(single, cv2.imread(str(depth / "f1.png"), cv2.IMREAD_UNCHANGED))
    threads = torch.get_num_threads()
    for engine in ("local", "ray"):
        out = tmp_path / engine
        more = ["--engine", "ray", "--workers", "2"] if engine == "ray" else []
        # Ray gives each 1-CPU worker one thread; the same here, so that float sums run in the same order
        torch.set_num_threads(1 if engine == "local" else threads)
        try:
            run = meshcli("pose", clip, image, "--random-weights", "--no-flip", "--out", out, "--quiet", *more)
            assert run.exit_code == 0, run.output
            run = meshcli("hand", depth, single, "--random-weights", "--out", out, "--quiet", *more)
            assert run.exit_code == 0, run.output
        finally:
            torch.set_num_threads(threads)
    local, ray = tmp_path / "local", tmp_path / "ray"
    assert files_under(ray) == files_under(local) == [
        "coco_000000000785.coco.json", "coco_000000000785.jpg", "coco_000000000785.npz", "depth.npz",
        "depth/f0.png", "depth/f1.png", "depth/f2.png", "one.npz", "one.png", "people.coco.json", "people.mp4",
        "people.npz"]
    for name in ("people", "coco_000000000785", "depth", "one"):
        assert_same_npz(local / f"{name}.npz", ray / f"{name}.npz")
    record = json.loads((ray / LEDGER_DIR / "people.json").read_text())
    assert record["status"] == "done" and re.fullmatch(r"\S+ pid \d+", record["worker"])
    assert {o["path"] for o in record["outputs"]} == {"people.npz", "people.mp4", "people.coco.json"}
    assert not (ray / STAGING_DIR).exists()

    # either engine resumes the other's run: everything is done already
    run = meshcli("hand", depth, single, "--random-weights", "--out", ray, "--quiet", "--resume")
    assert run.exit_code == 0 and "0 done, 2 skipped" in run.output


def watch_staging(out: Path, name: str, then) -> threading.Thread:
    """Calls ``then(worker)`` ("ADDRESS pid PID", as the ledger names it) once the worker holding input NAME has
    half written it (a frame image anywhere in its staging folder: folders are written under temporary names)."""
    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                record = json.loads((out / LEDGER_DIR / f"{name}.json").read_text())
            except (OSError, ValueError):
                record = {}
            if record.get("status") == "running" and list(out.glob(f"{STAGING_DIR}/{name}.*/**/*.png")):
                then(record["worker"])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_killed_worker_input_is_retried_elsewhere_and_nothing_partial_remains(ray_cluster, tmp_path):
    big = depth_folder(tmp_path / "big", 10, seed=1)  # largest first: a worker takes it at once
    small = [depth_folder(tmp_path / f"small{k}", 1, seed=2 + k) for k in range(2)]
    out = tmp_path / "out"
    killed: list[str] = []
    watcher = watch_staging(out, "big", lambda worker: (os.kill(pid_of(worker), signal.SIGKILL),
                                                         killed.append(worker)))
    run = meshcli("hand", big, *small, "--random-weights", "--batch-size", "1", "--out", out, "--engine", "ray",
                  "--workers", "2")
    watcher.join()
    assert killed, "the worker holding the input was never seen"
    assert run.exit_code == 0, run.output
    assert f"retried {big} (the worker on {killed[0]} died" in " ".join(run.output.split())
    record = json.loads((out / LEDGER_DIR / "big.json").read_text())
    assert record["status"] == "done" and record["attempt"] == 2 and record["frames"] == 10
    assert record["worker"] != killed[0]
    assert sorted(p.name for p in (out / "big").iterdir()) == [f"f{k}.png" for k in range(10)]
    with np.load(out / "big.npz") as npz:
        assert list(npz["frame_index"]) == list(range(10))
    assert not (out / STAGING_DIR).exists()
    assert not [p for p in out.rglob("*") if ".part" in p.name]


def test_ctrl_c_stops_the_workers_and_leaves_nothing_partial(ray_cluster, tmp_path, sigint_raises):
    # long enough that the worker is still at it when the driver next runs Python code and sees the Ctrl-C
    big = depth_folder(tmp_path / "big", 60, seed=1)
    small = depth_folder(tmp_path / "small", 1, seed=2)
    out = tmp_path / "out"
    holder: list[int] = []
    watcher = watch_staging(out, "big", lambda worker: (holder.append(pid_of(worker)), _thread.interrupt_main()))
    run = meshcli("hand", big, small, "--random-weights", "--batch-size", "1", "--out", out, "--engine", "ray",
                  "--workers", "2")
    watcher.join()
    assert holder and run.exit_code != 0
    record = json.loads((out / LEDGER_DIR / "big.json").read_text())
    assert record["status"] == "failed" and "interrupted" in record["error"]
    assert not (out / "big").exists() and not (out / "big.npz").exists() and not (out / STAGING_DIR).exists()
    deadline = time.monotonic() + 60
    while alive(holder[0]):
        assert time.monotonic() < deadline, "the worker still runs"
        time.sleep(0.1)


def pid_of(worker: str) -> int:
    return int(worker.rsplit(" ", 1)[1])


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # not a zombie
    except FileNotFoundError:
        return False
