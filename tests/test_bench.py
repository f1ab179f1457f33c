"""`meshcli bench`: per-stage timings, end-to-end frames/s and peak memory as JSON."""
from __future__ import annotations

import json

import cv2
import numpy as np
from typer.testing import CliRunner

from meshcli.cli import app

from conftest import FIXTURES


def test_bench_reports_every_stage_as_json(tmp_path):
    nyu = cv2.imread(str(FIXTURES / "data" / "nyu" / "depth_1_0000001.png"), cv2.IMREAD_UNCHANGED)
    depth_mm = nyu[..., 0].astype(np.uint16) + 256 * nyu[..., 1].astype(np.uint16)  # NYU's colour encoding
    folder = tmp_path / "depth"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"{k}.png"), depth_mm)
    run = CliRunner().invoke(app, ["bench", str(folder), "--method", "srn", "--random-weights", "--json",
                                   "--batch-size", "2"])
    assert run.exit_code == 0, run.output
    result = json.loads(run.output)
    assert result["frames"] == 3 and result["untrained"] and result["method"] == "srn"
    assert list(result["stages"]) == ["decode", "preprocess", "model", "postprocess", "render", "encode"]
    assert all(stage["seconds"] > 0 for stage in result["stages"].values())
    assert result["end_to_end_fps"] > 0 and result["peak_rss_mb"] > 100 and not result["failures"]


def test_bench_repeat_reports_shares_and_the_bottleneck(tmp_path):
    folder = tmp_path / "depth"
    folder.mkdir()
    for k in range(2):
        cv2.imwrite(str(folder / f"{k}.png"), np.full((120, 160), 800 + 10 * k, np.uint16))
    run = CliRunner().invoke(app, ["bench", str(folder), "--method", "srn", "--random-weights", "--json",
                                   "--repeat", "3"])
    assert run.exit_code == 0, run.output
    result = json.loads(run.output)
    assert result["repeat"] == 3 and result["frames"] == 2
    wall = result["wall_seconds"]
    for stage in result["stages"].values():
        assert abs(stage["share"] - stage["seconds"] / wall) < 0.01
    assert set(result["threads"]) == {"decode", "model", "render"}
    busiest = max(result["threads"], key=result["threads"].get)
    stages_of = {"decode": ("decode", "preprocess"), "model": ("model", "postprocess"), "render": ("render", "encode")}
    assert result["bottleneck"] == max(stages_of[busiest], key=lambda s: result["stages"][s]["seconds"])
    assert 0 < result["threads"][busiest] <= 1.05
