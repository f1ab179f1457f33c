"""Hostile inputs (issue 9): nothing lost, nothing hangs, every error one clear line.

Each case checks what a user sees: a non-zero exit or a listed failure naming the file, the cause and the
fix on one line; no partial outputs; the previous run's outputs intact; the rest of the batch done.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from meshcli.io import sinks
from meshcli.io.sinks import mesh_sink
from meshcli.options import TemporalOptions
from meshcli.pipeline import Pipeline, RunSummary
from meshcli.types import BodyResult

from conftest import REPO
from test_pipeline import BrightestPixel, image


def run_guarded(pipeline: Pipeline, args: list[str], seconds: float = 60) -> RunSummary:
    """Run the pipeline in a thread: a hang fails the test instead of blocking the suite."""
    summary = RunSummary()
    worker = threading.Thread(target=lambda: [None for _ in pipeline.stream(args, summary)], daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the pipeline hung"
    return summary


def one_line(summary: RunSummary, *words: str) -> str:
    """The single failure line that names every word; it must be one line."""
    lines = [f.line() for f in summary.failures if all(w in f.line() for w in words)]
    assert len(lines) == 1, [f.line() for f in summary.failures]
    assert "\n" not in lines[0] and "\\n" not in lines[0] and "internal error" not in lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every output file's bytes (the run ledger, meshcli_run/, records each run and is left out)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "meshcli_run" not in p.relative_to(folder).parts}


def frames_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        image(folder / f"f{k}.png", 3 + k, 2)
    return folder


class FailingAt(BrightestPixel):
    """Raises a user-fixable error on the frame named ``name``."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def preprocess(self, frame):
        if frame.name == self.name:
            from meshcli.errors import MeshcliError
            raise MeshcliError(frame.name, "a short centres file", "give one row per frame")
        return super().preprocess(frame)


# -- 1, 6: output names ----------------------------------------------------------------------------------------
def test_an_input_inside_out_is_never_overwritten_by_another_input(tmp_path):
    (tmp_path / "src").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    first = image(tmp_path / "src" / "x.png", 5, 5)
    second = image(out / "x.png", 9, 9)
    before = second.read_bytes()
    summary = Pipeline(BrightestPixel(), out).run([str(first), str(second)])
    assert second.read_bytes() == before
    line = one_line(summary, str(first), "would overwrite the input")
    assert "--out" in line
    assert (out / "x-2.png").is_file() and (out / "x-2.npz").is_file()  # the other input is done


def test_output_names_are_unique_across_the_batch(tmp_path):
    for folder, x in (("a", 1), ("b", 2), ("c", 3)):
        (tmp_path / folder).mkdir()
    inputs = [image(tmp_path / "a" / "x.png", 1, 1), image(tmp_path / "b" / "x.png", 2, 1),
              image(tmp_path / "c" / "x-2.png", 3, 1)]
    out = tmp_path / "out"
    summary = Pipeline(BrightestPixel(), out).run([str(p) for p in inputs])
    assert not summary.failures
    assert len(summary.written) == len(set(summary.written)) == 6
    found = {int(np.load(p)["keypoints"][0, 0, 0]) for p in out.glob("*.npz")}
    assert found == {1, 2, 3}


class NpyOrPng(BrightestPixel):
    file_extensions = (".png", ".npy")

    def read_image(self, path):
        if path.suffix == ".npy":
            return np.repeat(np.load(path)[..., None], 3, axis=2)
        return cv2.imread(str(path))[..., ::-1]


def test_files_of_one_folder_never_share_an_output_name(tmp_path):
    folder = tmp_path / "dd"
    folder.mkdir()
    image(folder / "a.png", 4, 4)
    depth = np.zeros((30, 40), np.uint8)
    depth[7, 8] = 255
    np.save(folder / "a.npy", depth)
    summary = Pipeline(NpyOrPng(), tmp_path / "out").run([str(folder)])
    assert not summary.failures
    names = sorted(p.name for p in (tmp_path / "out" / "dd").iterdir())
    assert names == ["a.npy.png", "a.png"]


class BrightestWithMesh(BrightestPixel):
    """Results carry a one-triangle mesh that tells which image it came from: its first vertex is (width, height,
    x). (A pose task to the pipeline: the temporal stage has no adapter for a stand-in body method.)"""

    def postprocess(self, prepared, raw):
        y, x = raw
        h, w = prepared.shape
        vertices = np.array([[[w, h, x], [0, 0, 0], [1, 0, 0]]], np.float32)
        return BodyResult(0, {"keypoints": np.array([[[x, y, 1.0]]], np.float32),
                              "cam_t": np.zeros((1, 3), np.float32)}, vertices=vertices)


def mesh_sizes(folder: Path) -> dict[str, tuple[int, int]]:
    """Each OBJ of a mesh folder -> the (width, height) of the image it was made from."""
    return {p.name: tuple(int(float(v)) for v in p.read_text().splitlines()[0].split()[1:3])
            for p in sorted(folder.iterdir())}


def test_save_mesh_names_are_unique_within_a_folder_and_across_inputs(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    image(folder / "a.png", 1, 1, size=(40, 30))
    image(folder / "a.jpg", 1, 1, size=(50, 20))  # same stem as a.png
    image(folder / "a-2.png", 1, 1, size=(60, 10))  # the name a renamed stem would take first
    single = image(tmp_path / "x.png", 1, 1, size=(70, 10))
    other = tmp_path / "x_meshes"  # an image folder named like x.png's mesh folder
    other.mkdir()
    image(other / "y.png", 1, 1, size=(80, 10))
    out = tmp_path / "out"
    meshes = mesh_sink(np.array([[0, 1, 2]]), in_camera_space=False)
    summary = Pipeline(BrightestWithMesh(), out, extra_sinks=[meshes], temporal=TemporalOptions(track=False)).run(
        [str(folder), str(single), str(other)])
    assert not summary.failures
    assert len(summary.written) == len(set(summary.written))
    assert mesh_sizes(out / "d_meshes") == {"a-2_00.obj": (60, 10), "a_00.obj": (50, 20), "a-3_00.obj": (40, 30)}
    assert mesh_sizes(out / "x_meshes") == {"x_00.obj": (70, 10)}
    assert sorted(p.name for p in (out / "x_meshes-2").iterdir()) == ["y.png"]  # the folder's annotated images
    assert int(np.load(out / "x_meshes-2.npz")["image_size"][1]) == 80


# -- 2: a failed re-run keeps the previous outputs -------------------------------------------------------------
def test_a_failed_rerun_keeps_the_previous_outputs(tmp_path):
    folder = frames_folder(tmp_path / "frames", 6)
    out = tmp_path / "out"
    assert not Pipeline(BrightestPixel(), out).run([str(folder)]).failures
    before = snapshot(out)
    summary = Pipeline(FailingAt("f4.png"), out, batch_size=1).run([str(folder)])
    one_line(summary, "f4.png", "short centres")
    assert snapshot(out) == before


def test_an_interrupted_rerun_keeps_the_previous_outputs(tmp_path):
    folder = frames_folder(tmp_path / "frames", 6)
    out = tmp_path / "out"
    Pipeline(BrightestPixel(), out).run([str(folder)])
    before = snapshot(out)
    summary = RunSummary()
    for count, _ in enumerate(Pipeline(BrightestPixel(), out, batch_size=1, queue_size=1).stream([str(folder)],
                                                                                               summary)):
        if count == 2:
            break
    assert "cancelled" in summary.failures[0].line()
    assert snapshot(out) == before


# -- 3: a full disk -----------------------------------------------------------------------------------------------
class FullDisk:
    """A temporary file that fails with ENOSPC once ``room`` bytes were written (also when closed)."""

    def __init__(self, room: int):
        self.room = room

    def __call__(self, *args, **kwargs):
        outer = self

        class File:
            def write(self, data):
                outer.room -= len(data)
                if outer.room < 0:
                    raise OSError(errno.ENOSPC, "No space left on device")

            def close(self):
                if outer.room < 0:
                    raise OSError(errno.ENOSPC, "No space left on device")

        return File()


def test_a_full_disk_ends_the_input_with_one_line_and_the_next_input_runs(tmp_path, monkeypatch):
    video_free = frames_folder(tmp_path / "frames", 4)
    out = tmp_path / "out"
    disk, real_init = FullDisk(room=20), sinks._RowSpool.__init__

    def spool_on_a_full_disk(spool, directory):  # the NPZ's row spools fill the disk
        real_init(spool, directory)
        spool.file.close()
        spool.file = disk()

    monkeypatch.setattr(sinks._RowSpool, "__init__", spool_on_a_full_disk)
    summary = run_guarded(Pipeline(BrightestPixel(), out), [str(video_free)])
    line = one_line(summary, "no space left")
    assert "--out" in line
    assert not [p for p in out.rglob("*") if p.is_file()]
    monkeypatch.undo()
    later = image(tmp_path / "later.png", 3, 3)
    summary = run_guarded(Pipeline(BrightestPixel(), out), [str(video_free), str(later)])
    assert not summary.failures and (out / "later.npz").is_file()


@pytest.fixture()
def small_filesystem(tmp_path):
    """A 256 KiB tmpfs, where this test may mount one (root on Linux); skipped elsewhere."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_filesystem(tmp_path, small_filesystem):
    rng = np.random.default_rng(0)
    small = image(tmp_path / "small.png", 1, 1)
    noisy = tmp_path / "noisy.png"  # its annotated copy does not fit
    cv2.imwrite(str(noisy), rng.integers(0, 255, (300, 300, 3), dtype=np.uint8))
    assert not run_guarded(Pipeline(BrightestPixel(), small_filesystem), [str(small)]).failures
    before = sorted(p.name for p in small_filesystem.iterdir())
    summary = run_guarded(Pipeline(BrightestPixel(), small_filesystem), [str(noisy), str(small)])
    one_line(summary, "noisy.png", "no space left")
    assert sorted(p.name for p in small_filesystem.iterdir()) == before == ["small.npz", "small.png"]


# -- 10: leftovers of a killed run -------------------------------------------------------------------------------
def test_leftovers_of_a_dead_run_are_removed_and_a_live_runs_are_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_file = out / f".clip.mp4.meshcli-{dead.pid}-abc123.part.mp4"
    stale_dir = out / f".frames.meshcli-{dead.pid}-xyz789.part"
    live_file = out / f".other.npz.meshcli-{os.getppid()}-qwe456.part.npz"
    stale_file.write_bytes(b"x")
    stale_dir.mkdir()
    (stale_dir / "f0.png").write_bytes(b"x")
    live_file.write_bytes(b"x")
    mine = out / ".hidden-but-mine.txt"
    mine.write_text("not meshcli's")
    Pipeline(BrightestPixel(), out).run([str(image(tmp_path / "a.png", 1, 1))])
    assert not stale_file.exists() and not stale_dir.exists()
    assert live_file.exists() and mine.exists()


# -- 4: a video that ends early ----------------------------------------------------------------------------------
CODECS = {".mp4": "libx264", ".mkv": "libx264", ".webm": "libvpx"}


def cut_video(path: Path, frames: int = 30, keep: float = 0.7) -> Path:
    """A 10 fps video cut at ``keep`` of its bytes. An MP4 has its index (moov) at the start, so it still
    announces ``frames``; Matroska and WebM announce no frame count but state their duration in the header."""
    import av

    whole = path.with_name("whole-" + path.name)
    rng = np.random.default_rng(1)
    options = {"movflags": "faststart"} if path.suffix == ".mp4" else {}
    with av.open(str(whole), "w", options=options) as out:
        stream = out.add_stream(CODECS[path.suffix], rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):  # noise: every frame takes about the same number of bytes
            img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = whole.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    whole.unlink()
    return path


ANNOUNCED = [("clip.mp4", "of the 30 frames"), ("clip.mkv", "of the 3.00 s"), ("clip.webm", "of the 3.00 s")]


@pytest.mark.parametrize("name, announced", ANNOUNCED)
def test_a_video_that_ends_early_is_reported_and_keeps_the_previous_outputs(tmp_path, name, announced):
    clip = cut_video(tmp_path / name)
    out = tmp_path / "out"
    out.mkdir()
    (out / "clip.npz").write_bytes(b"previous run")
    after = image(tmp_path / "after.png", 1, 1)
    summary = run_guarded(Pipeline(BrightestPixel(), out), [str(clip), str(after)])
    line = one_line(summary, name, "ends after", announced)
    assert "--keep-partial" in line
    assert (out / "clip.npz").read_bytes() == b"previous run" and not (out / "clip.mp4").exists()
    assert (out / "after.npz").is_file()


@pytest.mark.parametrize("name, announced", ANNOUNCED)
def test_keep_partial_keeps_a_short_video_marked_incomplete(tmp_path, name, announced):
    clip = cut_video(tmp_path / name)
    out = tmp_path / "out"
    summary = run_guarded(Pipeline(BrightestPixel(), out, keep_partial=True), [str(clip)])
    one_line(summary, name, announced)
    npz = np.load(out / "clip.npz")
    assert bool(npz["incomplete"]) and 0 < int(npz["num_frames"]) < 30
    assert (out / "clip.mp4").is_file()


@pytest.mark.parametrize("name", ["v.mp4", "v.mkv", "v.webm"])
def test_a_whole_video_is_not_incomplete(tmp_path, name):
    whole = cut_video(tmp_path / name, keep=1.0)
    summary = Pipeline(BrightestPixel(), tmp_path / "out").run([str(whole)])
    npz = np.load(tmp_path / "out" / "v.npz")
    assert not summary.failures and not bool(npz["incomplete"]) and int(npz["num_frames"]) == 30


# -- 11: inputs that are not files -------------------------------------------------------------------------------
def test_devices_fifos_and_link_loops_are_refused_with_one_line_each(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.mp4"
    zero.symlink_to("/dev/zero")
    loop_a, loop_b = tmp_path / "a.png", tmp_path / "b.png"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    dangling = tmp_path / "gone.png"
    dangling.symlink_to(tmp_path / "nowhere.png")
    fine = image(tmp_path / "fine.png", 1, 1)
    summary = run_guarded(Pipeline(BrightestPixel(), tmp_path / "out"),
                          [str(p) for p in (fifo, zero, loop_a, dangling, fine)], seconds=30)
    one_line(summary, "pipe.png", "not a regular file")
    one_line(summary, "zero.mp4", "not a regular file")
    one_line(summary, "a.png", "loop of symbolic links")
    one_line(summary, "gone.png", "symbolic link to a missing file")
    assert (tmp_path / "out" / "fine.npz").is_file()


def test_an_image_over_opencvs_pixel_limit_is_one_line(tmp_path):
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (40000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])  # 40000 x 40000 RGB, declared only
    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    summary = run_guarded(Pipeline(BrightestPixel(), tmp_path / "out"), [str(huge)])
    one_line(summary, "huge.png", "too large")


def test_a_folder_whose_files_all_fail_writes_nothing(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(b"not a png")
    summary = Pipeline(BrightestPixel(), tmp_path / "out").run([str(folder)])
    one_line(summary, "broken", "none of its 2")
    assert not summary.written and not list((tmp_path / "out").iterdir())


def test_a_refused_input_is_reported_failed_and_not_done(tmp_path):
    import io

    from meshcli.errors import MeshcliError
    from meshcli.pipeline import Progress

    def refusing(inp, out_dir, fields):
        raise MeshcliError(inp.arg, "refused for the test", "none")

    log = io.StringIO()
    Pipeline(BrightestPixel(), tmp_path / "out", extra_sinks=[refusing],
             progress=Progress(enabled=True, stream=log)).run([str(image(tmp_path / "a.png", 1, 1))])
    assert "FAILED" in log.getvalue() and "done" not in log.getvalue()


# -- 10: signals, sent to a real meshcli process ------------------------------------------------------------------
def meshcli_process(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "meshcli", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_once_writing(proc: subprocess.Popen, out: Path, signum: int) -> tuple[int, str]:
    """Send ``signum`` as soon as the process has written a file of its unfinished folder output."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        staged = [p for p in out.glob(f".*.meshcli-{proc.pid}-*.part") if any(p.iterdir())]
        if staged:
            proc.send_signal(signum)
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("the run ended before it could be interrupted")
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def test_sigkill_leftovers_are_removed_by_the_next_run_and_sigterm_cleans_up(tmp_path):
    folder = tmp_path / "dd"
    folder.mkdir()
    for k in range(40):
        depth = np.zeros((64, 64), np.uint16)
        depth[20:40, 10 + k % 20:30 + k % 20] = 600
        cv2.imwrite(str(folder / f"f{k}.png"), depth)
    out = tmp_path / "o"
    args = ["hand", str(folder), "--random-weights", "--batch-size", "1", "--out", str(out), "--quiet"]
    from typer.testing import CliRunner

    from meshcli.cli import app
    assert CliRunner().invoke(app, args).exit_code == 0  # the previous run, in this process (faster)
    before = snapshot(out)
    assert len(before) == 41

    killed = meshcli_process(args)
    code, _ = signal_once_writing(killed, out, signal.SIGKILL)
    assert code == -signal.SIGKILL
    leftovers = list(out.glob(f".*.meshcli-{killed.pid}-*"))
    assert leftovers, "a killed run's temporary folder is named after its process"
    assert {k: v for k, v in snapshot(out).items() if not k.startswith(".")} == before

    terminated = meshcli_process(args)
    code, err = signal_once_writing(terminated, out, signal.SIGTERM)
    assert code != 0
    assert not any(p.exists() for p in leftovers), "the killed run's leftovers were not removed"
    assert snapshot(out) == before, "the interrupted run changed or left files"


# -- 7: boxes and shapes that would need gigabytes ---------------------------------------------------------------
def test_a_huge_box_around_a_small_image_is_built_reduced_and_looks_the_same():
    from meshcli.methods.spin import crop_image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    ul, br = np.array([-1500, -1500]), np.array([1580, 1560])
    exact = crop_image(img, ul, br)
    reduced = crop_image(img, ul, br, max_box_pixels=200_000)
    assert np.abs(exact.astype(int) - reduced).mean() < 0.5
    huge = crop_image(img, np.array([-10000, -10000]), np.array([10080, 10060]))  # 3.1 GB if built whole
    assert huge.shape == (224, 224, 3) and huge.any()


def test_dekr_refuses_an_extreme_image_shape_before_allocating(tmp_path):
    from meshcli.errors import MeshcliError
    from meshcli.types import Frame
    from meshcli.methods.dekr import DekrPredictor

    predictor = object.__new__(DekrPredictor)  # preprocessing only: no network needed
    predictor.input_size, predictor.scales = 512, (1.0,)
    with pytest.raises(MeshcliError) as err:
        predictor.preprocess(Frame(np.zeros((1, 200, 3), np.uint8), 0, "strip.png"))
    line = err.value.line()
    assert "strip.png" in line and "102400" in line and "crop or pad" in line


def test_an_output_folder_that_cannot_hold_files_is_one_line():
    from meshcli.errors import MeshcliError

    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")
    with pytest.raises(MeshcliError) as err:  # /proc passes permission checks for root, yet takes no files
        Pipeline(BrightestPixel(), "/proc").run(["whatever.png"])
    assert err.value.line().startswith("/proc: the output folder is not writable")


# -- 12: what a new user runs into ---------------------------------------------------------------------------------
def test_drawing_thresholds_choose_who_and_which_joints_are_drawn():
    from meshcli.methods.dekr import DekrPredictor
    from meshcli.types import PoseResult

    keypoints = np.array([[[10, 10, 0.9], [30, 10, 0.1]]], np.float32)
    result = PoseResult(0, {"keypoints": keypoints, "scores": np.array([0.05], np.float32),
                            "bbox": np.array([[2, 32, 38, 39]], np.float32)})  # drawn away from the joints
    painter = object.__new__(DekrPredictor)  # drawing only: no network needed
    painter.skeleton = [(0, 1)]
    blank = np.zeros((40, 40, 3), np.uint8)
    painter.person_thr, painter.kpt_thr = 0.3, 0.0
    assert not painter.annotate(blank, result).any()  # a low-scoring person is left out
    painter.person_thr = 0.0
    both = painter.annotate(blank, result)
    assert both[10, 10].any() and both[10, 30].any()
    painter.kpt_thr = 0.5
    one = painter.annotate(blank, result)
    assert one[10, 10].any() and not one[10, 30].any() and not one[10, 20].any()  # nor the limb to it


def test_rescore_weights_with_random_weights_is_refused_not_ignored(tmp_path):
    from typer.testing import CliRunner

    from meshcli.cli import app

    stray = tmp_path / "final_rescore_coco_kpt.pth"
    stray.write_bytes(b"x")
    run = CliRunner().invoke(app, ["pose", str(image(tmp_path / "a.png", 1, 1)), "--random-weights",
                                   "--rescore-weights", str(stray), "--out", str(tmp_path / "out")])
    assert run.exit_code != 0 and "--rescore-weights is not used with --random-weights" in run.output


@pytest.mark.parametrize("command, method", [("pose", "dekr"), ("body", "i2l"), ("hand", "srn"), ("bench", "hmr")])
def test_help_lists_every_variant(command, method):
    from typer.testing import CliRunner

    from meshcli.cli import app
    from meshcli.methods import METHODS

    text = " ".join(CliRunner().invoke(app, [command, "--help"], terminal_width=400).output.split())
    for variant in METHODS[method].variants:
        assert variant in text


def test_bench_takes_the_options_of_the_command_it_measures(tmp_path):
    import json

    from typer.testing import CliRunner

    from meshcli.cli import app

    nyu = tmp_path / "depth.png"  # NYU's colour encoding: what the error on 16-bit decoding advises
    cv2.imwrite(str(nyu), np.zeros((48, 64, 3), np.uint8))
    run = CliRunner().invoke(app, ["bench", str(nyu), "--method", "srn", "--random-weights", "--depth-format",
                                   "nyu", "--centre", "0,0,500", "--no-annotate", "--json"])
    assert run.exit_code == 0, run.output
    result = json.loads(run.output)
    assert result["settings"]["depth_format"] == "nyu" and result["settings"]["centre_source"] == "fixed"
    assert result["inputs"] == [str(nyu)] and not result["failures"]


def test_out_of_memory_says_so_and_suggests_a_smaller_batch(tmp_path):
    class Hungry(BrightestPixel):
        def infer(self, prepared):
            raise MemoryError()

    summary = Pipeline(Hungry(), tmp_path / "out").run([str(image(tmp_path / "a.png", 1, 1)),
                                                       str(image(tmp_path / "b.png", 2, 2))])
    line = one_line(summary, "a.png", "out of memory")
    assert "--batch-size 1" in line and len(summary.failures) == 2
