"""The overlay drawn on a pool of annotate threads: frames written in order, failures end only their input."""
from __future__ import annotations

import collections
import threading
import time

import av
import cv2
import numpy as np
import pytest

from meshcli.draw import stamp
from meshcli.annotate_pool import OrderedPool
from meshcli.io.sinks import NpzSink
from meshcli.pipeline import Pipeline, RunSummary
from meshcli.types import WeightsInfo

from conftest import write_video
from test_hostile import frames_folder, run_guarded, snapshot
from test_pipeline import BrightestPixel

VIDEO_HEIGHT = 48  # write_video's frames (the image folder's are 30 high)


class SlowAnnotate(BrightestPixel):
    """Annotation that takes longer for even frames, and records the order frames finished in, the threads
    it ran on, and which threads freed their render resources. With ``hold``, an even frame of the test video
    waits until the frame after it is drawn, so on a pool the later frame finishes first whatever the timing."""

    def __init__(self, fail_at: tuple[int, int] | None = None, hold: bool = False):
        super().__init__()
        self.fail_at = fail_at  # (image height, x of the brightest pixel) of the frame that fails
        self.hold = hold
        self.drawn: dict[int, threading.Event] = collections.defaultdict(threading.Event)  # video frames, by x
        self.finished: list[tuple[int, int]] = []  # (image height, x) as annotations finish
        self.threads: set[str] = set()
        self.released: list[str] = []
        self.lock = threading.Lock()

    def annotate(self, image, result):
        x = int(result.rows["keypoints"][0, 0, 0])
        video, even = image.shape[0] == VIDEO_HEIGHT, (x // 4) % 2 == 0
        if self.hold and video and even:
            with self.lock:
                after = self.drawn[x + 4]
            after.wait(timeout=30)
        time.sleep(0.03 if even else 0.0)
        if self.fail_at == (image.shape[0], x):
            raise ValueError("the renderer fell over")
        out = super().annotate(image, result)
        with self.lock:
            self.finished.append((image.shape[0], x))
            self.threads.add(threading.current_thread().name)
            if video:
                self.drawn[x].set()
        return out

    def release_render_resources(self):
        with self.lock:
            self.released.append(threading.current_thread().name)


def decoded_frames(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_a_pool_writes_frames_in_order_and_the_same_outputs_as_one_worker(tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=12)  # frame k: a bright square at x = 4k
    folder = frames_folder(tmp_path / "frames", 8)  # file k: the brightest pixel at x = 3 + k
    outputs = {}
    for workers in (1, 4):
        predictor = SlowAnnotate(hold=workers > 1)
        predictor.weights = WeightsInfo("trained.pth", "0" * 64)  # no untrained banner over the dots
        out = tmp_path / f"out{workers}"
        summary = Pipeline(predictor, out, batch_size=3, render_workers=workers).run([str(video), str(folder)])
        assert not summary.failures and summary.times.workers == {"render": workers}
        assert len(predictor.released) == workers and predictor.threads <= set(predictor.released)
        if workers > 1:  # the pool did draw frames side by side and finish the video's out of order ...
            finished = [x for height, x in predictor.finished if height == VIDEO_HEIGHT]
            assert len(predictor.threads) > 1 and len(finished) == 12 and finished != sorted(finished)
        outputs[workers] = out
        # ... and every output holds them in frame order
        npz = np.load(out / "clip.npz")
        np.testing.assert_array_equal(npz["frame_index"], np.arange(12))
        np.testing.assert_array_equal(npz["keypoints"][:, 0, 0], 4 * np.arange(12))
        frames = decoded_frames(out / "clip.mp4")
        assert len(frames) == 12
        # the dot drawn on frame k is at its bright square's corner, (4k, 10): red, not the square's grey
        for k, frame in enumerate(frames):
            assert frame[10, 4 * k, 0] > 180 and frame[10, 4 * k, 1] < 120, k
        assert list(np.load(out / "frames.npz")["keypoints"][:, 0, 0]) == [3 + k for k in range(8)]
    # the same annotated video and images, byte for byte, and the same NPZ arrays (the archives hold times)
    media = [{name: data for name, data in snapshot(out).items() if not name.endswith(".npz")}
             for out in outputs.values()]
    assert media[0] == media[1] and len(media[0]) == 9
    for name in ("clip.npz", "frames.npz"):
        one, four = np.load(outputs[1] / name), np.load(outputs[4] / name)
        assert sorted(one.files) == sorted(four.files)
        for key in one.files:
            np.testing.assert_array_equal(one[key], four[key], err_msg=key)


def test_an_annotate_error_ends_only_its_input_and_keeps_the_previous_outputs(tmp_path):
    first = write_video(tmp_path / "first.mp4", frames=6)
    failing = write_video(tmp_path / "failing.mp4", frames=12, size=(64, 40))
    last = frames_folder(tmp_path / "last", 3)
    out = tmp_path / "out"
    assert not Pipeline(BrightestPixel(), out).run([str(failing)]).failures
    before = snapshot(out)
    predictor = SlowAnnotate(fail_at=(40, 4 * 7))  # frame 7 of the failing video, with frames after it in flight
    summary = run_guarded(Pipeline(predictor, out, batch_size=2, render_workers=3),
                          [str(first), str(failing), str(last)])
    assert len(summary.failures) == 1
    line = summary.failures[0].line()
    assert "failing.mp4" in line and "the renderer fell over" in line and "\n" not in line
    after = snapshot(out)
    assert {k: after[k] for k in before} == before  # the failed input's previous outputs are intact
    assert sorted(after) == ["failing.mp4", "failing.npz", "first.mp4", "first.npz", "last.npz", "last/f0.png",
                             "last/f1.png", "last/f2.png"]
    assert len(decoded_frames(out / "first.mp4")) == 6
    assert not [t for t in threading.enumerate() if t.name.startswith("meshcli-annotate")]


def test_stopping_early_ends_the_pool_and_writes_nothing(tmp_path):
    video = write_video(tmp_path / "long.mp4", frames=30)
    predictor = SlowAnnotate()
    summary = RunSummary()
    for count, _ in enumerate(Pipeline(predictor, tmp_path / "out", batch_size=1, render_workers=3)
                              .stream([str(video)], summary)):
        if count == 4:
            break
    assert list((tmp_path / "out").iterdir()) == [] and "cancelled" in summary.failures[0].line()
    assert not [t for t in threading.enumerate() if t.name.startswith("meshcli-annotate")]
    assert sorted(predictor.released) == sorted(predictor.threads)


def test_the_workers_free_their_resources_while_the_last_input_is_finished(tmp_path, monkeypatch):
    """After the last input's frames are drawn the workers end (freeing their OpenGL contexts) while its outputs
    are finished: the pool's teardown does not wait behind, say, the video encoder's flush."""
    video = write_video(tmp_path / "clip.mp4", frames=6)
    predictor = SlowAnnotate()
    freed_when_finishing = []
    finish = NpzSink.finish

    def finish_once_freed(sink):
        deadline = time.monotonic() + 10  # without the early retire they are freed only after this returns
        while len(predictor.released) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        freed_when_finishing.append(sorted(predictor.released))
        finish(sink)

    monkeypatch.setattr(NpzSink, "finish", finish_once_freed)
    summary = Pipeline(predictor, tmp_path / "out", batch_size=2, render_workers=2).run([str(video)])
    assert not summary.failures and (tmp_path / "out" / "clip.npz").is_file()
    assert freed_when_finishing == [["meshcli-annotate-0", "meshcli-annotate-1"]]


def test_a_retired_pool_runs_nothing_more_and_still_closes():
    ended = []
    pool = OrderedPool(lambda k: k, workers=2, on_exit=lambda: ended.append(threading.current_thread().name))
    pool.submit(1)
    assert list(pool.ready(wait=True)) == [(1, 1)]
    pool.retire()
    pool.retire()  # once is enough
    with pytest.raises(RuntimeError, match="after retire"):
        pool.submit(2)
    deadline = time.monotonic() + 10
    while len(ended) < 2 and time.monotonic() < deadline:  # they end without close()
        time.sleep(0.01)
    assert sorted(ended) == ["meshcli-annotate-0", "meshcli-annotate-1"]
    pool.close()
    assert len(ended) == 2


def test_the_look_ahead_is_bounded():
    written: list[int] = []
    lead: list[int] = []

    def work(k: int) -> int:
        lead.append(k - len(written))  # frames submitted ahead of the last one written
        time.sleep(0.002 * (k % 3))
        return -k

    pool = OrderedPool(work, workers=3)
    try:
        for k in range(40):
            pool.submit(k)
            written += [k for k, result in pool.ready() if result == -k]
        written += [k for k, result in pool.ready(wait=True) if result == -k]
    finally:
        pool.close()
    assert written == list(range(40))
    assert max(lead) <= pool.depth + 1  # the depth in flight, and the one just submitted


def test_a_workers_exception_is_raised_for_its_item_and_discard_skips_the_rest():
    started: list[int] = []
    gate = threading.Event()

    def work(k: int) -> int:
        started.append(k)
        if k == 0:
            raise KeyError(k)
        gate.wait(10)  # item 1 holds the only worker while the others wait in the queue
        return k

    pool = OrderedPool(work, workers=1, depth=8)
    try:
        for k in range(5):
            pool.submit(k)
        with pytest.raises(KeyError):
            list(pool.ready(wait=True))
        pool.discard()
        gate.set()
    finally:
        pool.close()
    assert started in ([0], [0, 1])  # 2, 3 and 4 were never run (1 may have started before the discard)


def test_what_the_pool_writes_is_what_annotate_draws_for_that_frame(tmp_path):
    folder = frames_folder(tmp_path / "frames", 8)
    predictor = SlowAnnotate()
    expected = {}
    for _, frame, result in Pipeline(predictor, tmp_path / "out", render_workers=4).stream([str(folder)]):
        drawn = BrightestPixel.annotate(predictor, frame.image, result)  # the serial path, in this thread
        stamp(drawn, "UNTRAINED WEIGHTS (--random-weights)")
        expected[frame.name] = drawn
    assert len(expected) == 8
    for name, drawn in expected.items():
        written = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "frames" / name)), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(written, drawn)
