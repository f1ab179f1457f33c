"""`meshcli eval coco` against the COCO annotations of four val2017 images."""
from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from meshcli.cli import app
from meshcli.evaluation.coco import evaluate_keypoints

from conftest import FIXTURES

ANNOTATIONS = FIXTURES / "data" / "coco" / "test_coco.json"


def results_from_ground_truth(shift: float = 0.0) -> list[dict]:
    gt = json.loads(ANNOTATIONS.read_text())
    out = []
    for a in gt["annotations"]:
        if a["num_keypoints"] == 0:
            continue
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
        kp[:, :2] += shift
        kp[:, 2] = 1.0
        out.append({"image_id": a["image_id"], "category_id": 1, "keypoints": kp.ravel().tolist(), "score": 1.0})
    return out


def test_perfect_results_score_one_and_shifted_ones_less(tmp_path):
    perfect = tmp_path / "perfect.json"
    perfect.write_text(json.dumps(results_from_ground_truth()))
    assert evaluate_keypoints(perfect, ANNOTATIONS)["AP"] > 0.99
    shifted = tmp_path / "shifted.json"
    shifted.write_text(json.dumps(results_from_ground_truth(shift=15.0)))
    assert evaluate_keypoints(shifted, ANNOTATIONS)["AP"] < 0.9


def test_cli_prints_the_ap_table(tmp_path):
    res = tmp_path / "r.coco.json"
    res.write_text(json.dumps(results_from_ground_truth()))
    run = CliRunner().invoke(app, ["eval", "coco", str(res), str(ANNOTATIONS)])
    assert run.exit_code == 0, run.output
    assert "AP .5" in run.output and "1.000" in run.output


def test_cli_names_a_bad_results_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    run = CliRunner().invoke(app, ["eval", "coco", str(bad), str(ANNOTATIONS)])
    assert run.exit_code != 0 and "bad.json" in run.output and "not valid JSON" in run.output


def test_swapped_arguments_are_one_line_errors(tmp_path):
    res = tmp_path / "r.coco.json"
    res.write_text(json.dumps(results_from_ground_truth()))
    for args, named in (([ANNOTATIONS, res], ANNOTATIONS.name), ([res, res], res.name)):
        run = CliRunner().invoke(app, ["eval", "coco", *map(str, args)])
        assert run.exit_code != 0 and named in run.output and "Traceback" not in run.output
