"""The streamed pipeline with a small test predictor: sources, sinks, streaming and bad inputs."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from meshcli.errors import MeshcliError
from meshcli.io import sinks
from meshcli.io.sources import expand_inputs, natural_key
from meshcli.methods.base import Predictor
from meshcli.types import FrameResult, WeightsInfo
from meshcli.pipeline import Pipeline, RunSummary

from conftest import video_facts, write_video


class BrightestPixel(Predictor):
    """Finds the brightest pixel: one 'person' per frame whose single keypoint is that pixel."""

    task, method = "pose", "brightest"

    def __init__(self, delay: float = 0.0):
        self.variant = "test"
        self.weights = WeightsInfo.of(None)
        self.delay = delay
        self.preprocessed = 0
        self.inferred = 0

    def preprocess(self, frame):
        self.preprocessed += 1
        return frame.image.astype(np.float32).sum(-1)

    def infer(self, prepared):
        time.sleep(self.delay)
        self.inferred += len(prepared)
        return [np.unravel_index(np.argmax(p), p.shape) for p in prepared]

    def postprocess(self, prepared, raw):
        y, x = raw
        return FrameResult(0, {"keypoints": np.array([[[x, y, 1.0]]], np.float32)})

    def annotate(self, image, result):
        out = image.copy()
        x, y = result.rows["keypoints"][0, 0, :2].astype(int)
        cv2.circle(out, (x, y), 2, (255, 0, 0), -1)
        return out

    def empty_rows(self):
        return {"keypoints": np.zeros((0, 1, 3), np.float32)}


def image(path: Path, x: int, y: int, size=(40, 30)) -> Path:
    img = np.zeros((size[1], size[0], 3), np.uint8)
    img[y, x] = 255
    cv2.imwrite(str(path), img)
    return path


def test_single_image_writes_npz_and_annotated_image(tmp_path):
    src = image(tmp_path / "a.png", 150, 100, size=(200, 150))
    summary = Pipeline(BrightestPixel(), tmp_path / "out").run([str(src)])
    assert not summary.failures
    npz = np.load(tmp_path / "out" / "a.npz")
    np.testing.assert_array_equal(npz["keypoints"][:, 0, :2], [[150, 100]])
    np.testing.assert_array_equal(npz["frame_index"], [0])
    np.testing.assert_array_equal(npz["image_size"], [150, 200])
    assert str(npz["method"]) == "brightest" and bool(npz["untrained"])
    assert str(npz["weights"]).startswith("untrained")
    annotated = cv2.imread(str(tmp_path / "out" / "a.png"))
    assert annotated.shape == (150, 200, 3) and annotated[100, 151].tolist() == [0, 0, 255]  # the red dot, RGB written as BGR
    assert annotated[2, 2].tolist() == [0, 0, 0]  # the untrained-weights banner's background


def test_folder_is_sorted_naturally_and_glob_works(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, name in enumerate(["f10.png", "f2.png", "f1.png"]):
        image(folder / name, {"f1.png": 1, "f2.png": 2, "f10.png": 10}[name], 3)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    summary = Pipeline(BrightestPixel(), out).run([str(folder), str(tmp_path / "frames" / "f1*.png")])
    assert not summary.failures
    npz = np.load(out / "frames.npz")
    assert list(npz["files"]) == ["f1.png", "f2.png", "f10.png"]
    np.testing.assert_array_equal(npz["keypoints"][:, 0, 0], [1, 2, 10])
    np.testing.assert_array_equal(npz["frame_index"], [0, 1, 2])
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["f1.png", "f10.png", "f2.png"]
    # the glob f1*.png matches f1 and f10, and is named after its folder (made unique)
    assert list(np.load(out / "frames-2.npz")["files"]) == ["f1.png", "f10.png"]


def test_natural_sort_key():
    names = ["img10.png", "img2.png", "IMG1.png"]
    assert sorted(names, key=lambda n: natural_key(Path(n))) == ["IMG1.png", "img2.png", "img10.png"]


def test_video_keeps_frame_count_rate_codec_and_audio(tmp_path):
    src = write_video(tmp_path / "clip.mp4", frames=10, fps=12, audio=True)
    out = tmp_path / "out"
    summary = Pipeline(BrightestPixel(), out, batch_size=3).run([str(src)])
    assert not summary.failures, [f.line() for f in summary.failures]
    facts = video_facts(out / "clip.mp4")
    assert facts == {"frames": 10, "fps": 12.0, "codec": "h264", "pix_fmt": "yuv420p", "audio": 1}
    npz = np.load(out / "clip.npz")
    assert float(npz["fps"]) == 12.0 and int(npz["num_frames"]) == 10
    np.testing.assert_array_equal(npz["frame_index"], np.arange(10))
    # frame k's bright square starts at x = 4k: frames stay in order through the batched model
    assert (np.diff(npz["keypoints"][:, 0, 0]) > 0).all()
    assert not list(out.glob(".*part*")), "temporary files left behind"


def test_odd_sized_video_frames_are_padded_for_yuv420p(tmp_path):
    src = write_video(tmp_path / "odd.mp4", frames=3, size=(64, 48))
    img = np.zeros((31, 41, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "odd.png"), img)
    summary = Pipeline(BrightestPixel(), tmp_path / "out").run([str(src), str(tmp_path / "odd.png")])
    assert not summary.failures
    assert video_facts(tmp_path / "out" / "odd.mp4")["frames"] == 3


def test_decoding_stays_bounded_ahead_of_a_slow_model(tmp_path):
    """Streaming: the decoder never runs more than the queues' capacity ahead of the model."""
    src = write_video(tmp_path / "long.mp4", frames=40)
    predictor = BrightestPixel(delay=0.05)
    pipeline = Pipeline(predictor, tmp_path / "out", batch_size=2, queue_size=4)
    lead = []
    for _ in pipeline.stream([str(src)]):
        lead.append(predictor.preprocessed - predictor.inferred)
    # decoded queue (4) + the batch being filled (2) + one frame in the decoder's hand
    assert max(lead) <= 4 + 2 + 1
    assert predictor.inferred == 40


@pytest.mark.parametrize("kind", ["missing", "empty", "text_as_jpg", "empty_folder", "truncated_video"])
def test_bad_input_fails_alone_and_leaves_nothing(tmp_path, kind):
    good = image(tmp_path / "good.png", 3, 3)
    if kind == "missing":
        bad = tmp_path / "nope.jpg"
    elif kind == "empty":
        bad = tmp_path / "empty.jpg"
        bad.write_bytes(b"")
    elif kind == "text_as_jpg":
        bad = tmp_path / "text.jpg"
        bad.write_text("hello, I am not a JPEG")
    elif kind == "empty_folder":
        bad = tmp_path / "nothing_here"
        bad.mkdir()
    else:
        full = write_video(tmp_path / "full.mp4", frames=30).read_bytes()
        bad = tmp_path / "cut.mp4"
        bad.write_bytes(full[: len(full) // 2])
    out = tmp_path / "out"
    summary = Pipeline(BrightestPixel(), out).run([str(bad), str(good)])
    assert len(summary.failures) == 1
    line = summary.failures[0].line()
    assert "\n" not in line and bad.name in line
    assert (out / "good.npz").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["good.npz", "good.png"]


def test_bad_file_inside_a_folder_is_skipped_and_reported(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    image(folder / "1.png", 1, 1)
    (folder / "2.jpg").write_text("garbage")
    image(folder / "3.png", 3, 1)
    summary = Pipeline(BrightestPixel(), tmp_path / "out").run([str(folder)])
    assert [("2.jpg" in f.line()) for f in summary.failures] == [True]
    npz = np.load(tmp_path / "out" / "mixed.npz")
    assert list(npz["files"]) == ["1.png", "3.png"]


def test_a_model_error_aborts_only_that_input(tmp_path):
    class FailsOnWide(BrightestPixel):
        def infer(self, prepared):
            if any(p.shape[1] > 50 for p in prepared):
                raise MeshcliError("wide", "too wide for this test", "use a narrow one")
            return super().infer(prepared)

    wide = write_video(tmp_path / "wide.mp4", frames=5, size=(64, 48))
    narrow = image(tmp_path / "narrow.png", 2, 2)
    out = tmp_path / "out"
    summary = Pipeline(FailsOnWide(), out).run([str(wide), str(narrow)])
    assert [f.path for f in summary.failures] == ["wide"]
    assert sorted(p.name for p in out.iterdir()) == ["narrow.npz", "narrow.png"]


def test_expand_inputs_reports_unsupported_types(tmp_path):
    doc = tmp_path / "notes.txt"
    doc.write_text("x")
    inputs, errors = expand_inputs([str(doc)])
    assert not inputs and "unsupported file type" in errors[0].line()


def test_threads_end_when_the_consumer_stops_early(tmp_path):
    src = write_video(tmp_path / "v.mp4", frames=30)
    before = threading.active_count()
    for _ in Pipeline(BrightestPixel(), tmp_path / "out", batch_size=1, queue_size=1).stream([str(src)]):
        break
    assert threading.active_count() == before


def test_video_timestamps_are_kept_for_variable_frame_rate(tmp_path):
    import av
    from fractions import Fraction

    src = tmp_path / "vfr.mp4"
    times = [0, 1, 2, 5, 6, 10, 11, 12]  # in 1/10 s: gaps make the rate variable
    with av.open(str(src), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 10)
        for t in times:
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * t, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 10)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    Pipeline(BrightestPixel(), tmp_path / "out").run([str(src)])

    def frame_times(path):
        with av.open(str(path)) as c:
            return [round(f.time, 3) for f in c.decode(video=0)]

    assert frame_times(tmp_path / "out" / "vfr.mp4") == frame_times(src) == [t / 10 for t in times]


def test_outputs_get_ordinary_file_permissions(tmp_path):
    import os
    import stat

    src = image(tmp_path / "p.png", 1, 1)
    Pipeline(BrightestPixel(), tmp_path / "out").run([str(src)])
    mask = os.umask(0)
    os.umask(mask)
    for name in ("p.npz", "p.png"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o666 & ~mask


def test_frames_with_nobody_keep_every_key_with_zero_rows(tmp_path):
    class Nobody(BrightestPixel):
        def postprocess(self, prepared, raw):
            return FrameResult(0, {"keypoints": np.zeros((0, 5, 3), np.float32)})

        def annotate(self, image, result):
            return image.copy()

    src = write_video(tmp_path / "empty_scene.mp4", frames=4)
    Pipeline(Nobody(), tmp_path / "out").run([str(src)])
    npz = np.load(tmp_path / "out" / "empty_scene.npz")
    assert npz["keypoints"].shape == (0, 5, 3) and npz["frame_index"].shape == (0,)
    assert int(npz["num_frames"]) == 4
    assert video_facts(tmp_path / "out" / "empty_scene.mp4")["frames"] == 4  # no dropped frames


def test_rotation_metadata_is_applied(tmp_path):
    """A phone-style video whose track matrix says 'display rotated 90 degrees clockwise'."""
    import struct

    import av

    src = tmp_path / "coded.mp4"
    with av.open(str(src), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(3):
            img = np.zeros((48, 64, 3), np.uint8)
            img[:10, :20] = 255  # a block at the coded frame's top-left
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = bytearray(src.read_bytes())
    unity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    at = data.find(unity, data.find(b"tkhd"))
    data[at:at + 36] = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
    rotated = tmp_path / "phone.mp4"
    rotated.write_bytes(bytes(data))

    out = tmp_path / "out"
    assert not Pipeline(BrightestPixel(), out).run([str(rotated)]).failures
    npz = np.load(out / "phone.npz")
    np.testing.assert_array_equal(npz["image_size"], [64, 48])  # upright: portrait
    x, y = npz["keypoints"][0, 0, :2]
    assert x >= 38 and y < 20  # the block is now at the top-right
    with av.open(str(out / "phone.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (48, 64)


class Exploding(BrightestPixel):
    """Fails with a plain exception (a bug, out of memory) on inputs whose name says so."""

    def __init__(self, stage: str):
        super().__init__()
        self.stage = stage

    def preprocess(self, frame):
        if self.stage == "preprocess" and frame.name.startswith("boom"):
            raise ZeroDivisionError("in preprocess")
        return super().preprocess(frame)

    def infer(self, prepared):
        if self.stage == "infer" and any(p.shape[0] == 47 for p in prepared):
            raise RuntimeError("CUDA out of memory (pretend)")
        return super().infer(prepared)


@pytest.mark.parametrize("stage", ["preprocess", "infer"])
def test_an_unexpected_error_ends_only_its_input(tmp_path, stage):
    boom = image(tmp_path / "boom.png", 1, 1, size=(40, 47))
    fine = image(tmp_path / "fine.png", 2, 2)
    video = write_video(tmp_path / "after.mp4", frames=3)
    out = tmp_path / "out"
    summary = Pipeline(Exploding(stage), out).run([str(boom), str(fine), str(video)])
    assert len(summary.failures) == 1
    line = summary.failures[0].line()
    assert "boom.png" in line and "internal error" in line and "\n" not in line
    assert sorted(p.name for p in out.iterdir()) == ["after.mp4", "after.npz", "fine.npz", "fine.png"]


def test_stopping_early_leaves_no_output_of_the_unfinished_input(tmp_path):
    src = write_video(tmp_path / "long.mp4", frames=30)
    summary = RunSummary()
    for _ in Pipeline(BrightestPixel(), tmp_path / "out", batch_size=1, queue_size=1).stream([str(src)], summary):
        break
    assert list((tmp_path / "out").iterdir()) == []
    assert "cancelled" in summary.failures[0].line()


def test_outputs_never_overwrite_the_inputs(tmp_path):
    src = image(tmp_path / "photo.png", 1, 1)
    summary = Pipeline(BrightestPixel(), tmp_path).run([str(src)])
    assert "would overwrite the input" in summary.failures[0].line()
    assert cv2.imread(str(src))[1, 1].tolist() == [255, 255, 255]


def test_an_unwritable_output_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MeshcliError, match="cannot create the output folder"):
        Pipeline(BrightestPixel(), blocker / "out").run([str(image(tmp_path / "a.png", 1, 1))])


def test_npz_metadata_is_read_when_the_input_ends(tmp_path):
    """Method facts that can change while running (say, a renderer falling back) are recorded as they ended."""
    class Counting(BrightestPixel):
        def metadata(self):
            return {**super().metadata(), "frames_seen": self.inferred}

    src = write_video(tmp_path / "v.mp4", frames=5)
    Pipeline(Counting(), tmp_path / "out").run([str(src)])
    assert int(np.load(tmp_path / "out" / "v.npz")["frames_seen"]) == 5


class _CountingMuxer:
    """A container that counts the packets muxed into it."""

    def __init__(self, container):
        self.container, self.packets = container, 0

    def mux(self, packet):
        self.packets += 1
        self.container.mux(packet)

    def __getattr__(self, name):
        return getattr(self.container, name)


def test_the_video_encoder_holds_back_few_frames_for_the_end(tmp_path, monkeypatch):
    """x264 encodes the frames it holds back only when the video ends; the sink's short look-ahead keeps that
    tail several frames shorter than veryfast's own look-ahead (10) does."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 96, 3), np.uint8) for _ in range(30)]

    def held_back(name: str) -> int:
        sink = sinks.VideoSink(tmp_path / name, fps=12)
        for k, image in enumerate(images):
            sink.write(SimpleNamespace(time=k / 12), image, None)
            if k == 0:
                sink.container = _CountingMuxer(sink.container)
        muxed = sink.container.packets
        sink.finish()
        sink.commit()
        assert video_facts(tmp_path / name)["frames"] == len(images)
        return len(images) - 1 - muxed  # frames not yet out when the last one went in

    short = held_back("short.mp4")
    monkeypatch.setattr(sinks, "ENCODER_LOOKAHEAD", 10)
    assert short + 6 <= held_back("veryfast.mp4")  # measured 3 against 10 frames on 2 cores
