"""The track/smooth stage (meshcli.temporal): ids, smoothing with raw twins, bounded look-ahead."""
from __future__ import annotations

import numpy as np
import pytest

from meshcli.errors import MeshcliError
from meshcli.options import TemporalOptions
from meshcli.temporal import TemporalStage
from meshcli.types import Frame, FrameResult


def person(cx: float, cy: float = 100.0, w: float = 40.0, h: float = 100.0) -> np.ndarray:
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class Poses:
    """A stand-in pose predictor: only what the stage reads."""

    task = "pose"
    method = "test"


def pose_result(index: int, xs: list[float], rng) -> FrameResult:
    boxes = np.array([person(x) for x in xs]).reshape(-1, 4)
    kps = np.zeros((len(xs), 17, 3))
    kps[..., 0] = boxes[:, :1] + np.linspace(0, 40, 17)
    kps[..., 1] = boxes[:, 1:2] + np.linspace(0, 100, 17)
    kps[..., :2] += rng.normal(0, 2.0, kps[..., :2].shape)
    kps[..., 2] = 0.9
    return FrameResult(index, {"keypoints": kps, "scores": np.full(len(xs), 0.9), "bbox": boxes})


@pytest.mark.parametrize("smooth", ["offline", "oneeuro"])
def test_stage_smooths_keypoints_keeps_raw_and_scores(smooth):
    rng = np.random.default_rng(7)
    stage = TemporalStage(Poses(), TemporalOptions(smooth=smooth), fps=30)
    out = []
    for f in range(90):
        xs = [30 + 2 * f, 400 - 2 * f]
        result = pose_result(f, xs[::-1] if f % 2 else xs, rng)
        out += stage.push(Frame(np.zeros((4, 4, 3), np.uint8), f, f"v#{f}", time=f / 30), result)
        assert len(stage.pending) <= stage.look_ahead
    out += stage.finish()
    assert [frame.index for frame, _ in out] == list(range(90))
    by_track = {0: [], 1: []}
    for _, r in out:
        assert r.rows["track_id"].dtype == np.int32
        np.testing.assert_array_equal(r.rows["keypoints"][..., 2], r.rows["keypoints_raw"][..., 2])
        for tid, kps, raw in zip(r.rows["track_id"], r.rows["keypoints"], r.rows["keypoints_raw"]):
            by_track[int(tid)].append((kps[..., :2], raw[..., :2]))
    for tid, seq in by_track.items():
        assert len(seq) == 90
        smooth_xy, raw_xy = (np.array(s) for s in zip(*seq))
        accel = lambda x: np.abs(np.diff(x, 2, axis=0)).mean()  # noqa: E731
        assert accel(smooth_xy) < 0.5 * accel(raw_xy)
        assert abs(raw_xy[0, 0, 0] - (30 if tid == 0 else 400) + 20) < 10  # track 0 is the one from the left


def test_stage_memory_stays_flat_over_thousands_of_frames():
    rng = np.random.default_rng(8)
    stage = TemporalStage(Poses(), TemporalOptions(smooth="offline", min_hits=2), fps=60)
    most = 0
    for f in range(3000):
        result = pose_result(f, [100 + 50 * np.sin(f / 40), 300 + (f % 500)], rng)  # one wraps: new tracks
        stage.push(Frame(np.zeros((2, 2, 3), np.uint8), f, f"v#{f}", time=f / 60), result)
        most = max(most, len(stage.pending), max(len(h) for h in stage.history.values()),
                   len(stage.tracker.tracks), len(stage.history))
    assert stage.tracker.next_id >= 6  # the wrapping person became a new track each time
    assert most <= 2 * stage.look_ahead + 1  # bounded by the look-ahead, not by the video's length


def test_options_are_checked():
    with pytest.raises(MeshcliError, match="--smooth"):
        TemporalOptions(smooth="kalman")
    with pytest.raises(MeshcliError, match="drop --no-track"):
        TemporalOptions(track=False, smooth="offline")


def test_a_long_video_streams_through_the_stage_with_flat_memory(tmp_path, monkeypatch):
    """3000 frames of a real video through the pipeline with offline smoothing: the frames alive at any time
    are bounded by the look-ahead and the queues, not by the video's length."""
    import weakref

    from meshcli.pipeline import Pipeline
    from meshcli.temporal import TemporalStage

    from conftest import write_video
    from test_pipeline import BrightestPixel

    clip = write_video(tmp_path / "long.mp4", frames=3000, fps=60, size=(160, 120))
    alive, stages = set(), []
    push = TemporalStage.push

    def counting_push(stage, frame, result):
        if not stages or stages[-1] is not stage:
            stages.append(stage)
        alive.add(id(frame))
        weakref.finalize(frame.image, alive.discard, id(frame))  # gone once nothing holds the frame's pixels
        return push(stage, frame, result)

    monkeypatch.setattr(TemporalStage, "push", counting_push)
    pipeline = Pipeline(BrightestPixel(), tmp_path / "out", annotate=False, batch_size=4,
                        temporal=TemporalOptions(smooth="offline"))
    most, frames = 0, 0
    for _ in pipeline.stream([str(clip)]):
        frames += 1
        most = max(most, len(alive))
    assert frames == 3000 and stages[0].look_ahead == 12  # 0.2 s at 60 fps
    assert most <= 2 * stages[0].look_ahead + 1 + 4 * pipeline.queue_size * pipeline.batch_size
    npz = np.load(tmp_path / "out" / "long.npz")
    assert len(npz["track_id"]) == 3000 and "keypoints_raw" in npz


def test_a_method_without_a_tracker_view_is_refused_unless_tracking_is_off(tmp_path):
    from meshcli.pipeline import Pipeline

    from test_pipeline import BrightestPixel

    class Untrackable(BrightestPixel):
        task, method = "body", "untrackable"  # a body method without SMPL parameters or lixel outputs

    with pytest.raises(MeshcliError, match="cannot be tracked.*--no-track"):
        Pipeline(Untrackable(), tmp_path)
    Pipeline(Untrackable(), tmp_path, temporal=TemporalOptions(track=False))  # nothing to track: accepted
