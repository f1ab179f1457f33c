"""`meshcli bench`: per-stage timings, end-to-end frames/s and peak memory as JSON."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
from typer.testing import CliRunner

from meshcli import records
from meshcli.cli import app
from meshcli.methods import dekr

from conftest import FIXTURES, write_video


def test_bench_reports_every_stage_as_json(tmp_path):
    nyu = cv2.imread(str(FIXTURES / "data" / "nyu" / "depth_1_0000001.png"), cv2.IMREAD_UNCHANGED)
    depth_mm = nyu[..., 0].astype(np.uint16) + 256 * nyu[..., 1].astype(np.uint16)  # NYU's colour encoding
    folder = tmp_path / "depth"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"{k}.png"), depth_mm)
    run = CliRunner().invoke(app, ["bench", str(folder), "--method", "srn", "--random-weights", "--json",
                                   "--batch-size", "2", "--smooth", "oneeuro"])
    assert run.exit_code == 0, run.output
    result = json.loads(run.output)
    assert result["frames"] == 3 and result["untrained"] and result["method"] == "srn"
    assert result["temporal"]["smooth"] == "oneeuro"  # the command's track/smooth options are measured too
    assert list(result["stages"]) == ["decode", "preprocess", "detect", "model", "postprocess", "track", "render",
                                       "encode"]
    assert result["stages"].pop("detect")["seconds"] == 0  # no person detector for hands
    assert all(stage["seconds"] > 0 for stage in result["stages"].values())
    assert result["end_to_end_fps"] > 0 and result["peak_rss_mb"] > 100 and not result["failures"]


def test_bench_repeat_reports_shares_and_the_bottleneck(tmp_path):
    folder = tmp_path / "depth"
    folder.mkdir()
    for k in range(2):
        cv2.imwrite(str(folder / f"{k}.png"), np.full((120, 160), 800 + 10 * k, np.uint16))
    run = CliRunner().invoke(app, ["bench", str(folder), "--method", "srn", "--random-weights", "--json",
                                   "--repeat", "3", "--render-workers", "3"])
    assert run.exit_code == 0, run.output
    result = json.loads(run.output)
    assert result["repeat"] == 3 and result["frames"] == 2
    wall = result["wall_seconds"]
    for stage in result["stages"].values():
        assert abs(stage["share"] - stage["seconds"] / wall) < 0.01
    # the render stage runs on the pool of annotate threads, the render thread writes the sinks (encode)
    assert result["workers"] == {"decode": 1, "detect": 1, "model": 1, "annotate": 3, "write": 1}
    stages_of = {"decode": ("decode", "preprocess"), "detect": ("detect",), "model": ("model", "postprocess"),
                 "annotate": ("render",), "write": ("track", "encode")}
    for thread, stages in stages_of.items():  # busy: the stages' seconds per thread of the pool
        busy = sum(result["stages"][s]["seconds"] for s in stages) / result["workers"][thread] / wall
        assert abs(result["threads"][thread] - busy) < 0.01
    busiest = max(result["threads"], key=result["threads"].get)
    assert result["bottleneck"] == max(stages_of[busiest], key=lambda s: result["stages"][s]["seconds"])
    assert 0 < result["threads"][busiest] <= 1.05
    assert abs(result["wall_over_bottleneck"] - 1 / result["threads"][busiest]) < 0.05


def test_body_bench_runs_the_detector_as_its_own_stage_on_batches_of_frames(tmp_path, fake_smpl, monkeypatch):
    """`bench --method hmr --detector dekr --random-weights`: DEKR untrained too, timed as `detect`, and its
    network sees several frames per forward when --batch-size > 1."""
    # a small DEKR input keeps the test fast; the batching is the same at 512
    monkeypatch.setattr(dekr, "record_for", lambda m, v: dataclasses.replace(records.record_for(m, v), input_size=128))
    frames_per_forward = []
    heads = dekr.DekrNet.heads

    def spy(net, x):
        frames_per_forward.append(len(x) // 2)  # flip test: each frame goes in with its mirror image
        return heads(net, x)

    monkeypatch.setattr(dekr.DekrNet, "heads", spy)
    video = write_video(tmp_path / "clip.mp4", frames=9, size=(96, 64))
    run = CliRunner().invoke(app, ["bench", str(video), "--method", "hmr", "--detector", "dekr", "--random-weights",
                                   "--smpl", str(fake_smpl), "--batch-size", "3", "--no-annotate", "--json"])
    assert run.exit_code == 0, run.output
    result = json.loads(run.output)
    assert result["frames"] == 9 and result["untrained"] and result["settings"]["detector"] == "dekr"
    assert result["stages"]["detect"]["seconds"] > 0
    assert frames_per_forward == [3, 3, 3]  # no overlay to start early: full batches
    frames_per_forward.clear()
    run = CliRunner().invoke(app, ["bench", str(video), "--method", "hmr", "--detector", "dekr", "--random-weights",
                                   "--smpl", str(fake_smpl), "--batch-size", "3", "--renderer", "wireframe",
                                   "--json"])
    assert run.exit_code == 0, run.output
    # with the overlay, batches grow to --batch-size frames, then shrink to half of what is left (the video
    # says how many)
    assert frames_per_forward == [1, 2, 3, 2, 1]
