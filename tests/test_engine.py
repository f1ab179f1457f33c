"""Batch engine, local: the run ledger, --resume, --inputs-from, globs of videos."""
from __future__ import annotations

import _thread
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from meshcli.cli import app
from meshcli.engine.ledger import LEDGER_DIR
from meshcli.io.sources import expand_inputs
from meshcli.methods import srn

from conftest import write_video


def depth_folder(folder: Path, frames: int, seed: int) -> Path:
    """A few 16-bit depth frames with a near blob (a "hand") at a seed-dependent place."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k in range(frames):
        depth = np.full((96, 128), 1200, np.uint16)
        y, x = rng.integers(20, 60), rng.integers(20, 90)
        depth[y:y + 24, x:x + 24] = 500 + 5 * k
        cv2.imwrite(str(folder / f"f{k}.png"), depth)
    return folder


def srn_weights(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.save(srn.build_model("hands17").state_dict(), path)
    return path


def hand(*args) -> "CliRunner.Result":
    return CliRunner().invoke(app, ["hand", *map(str, args), "--no-annotate", "--batch-size", "1", "--quiet"])


def ledger(out: Path, name: str) -> dict:
    return json.loads((out / LEDGER_DIR / f"{name}.json").read_text())


@pytest.fixture()
def counted_frames(monkeypatch, sigint_raises):
    """Frames through SRN's network in this process; interrupts the run (as Ctrl-C does) at a given frame."""
    seen = {"frames": 0, "interrupt_at": None, "interrupt_once": None}
    infer = srn.SrnPredictor.infer

    def counting(self, prepared):
        seen["frames"] += len(prepared)
        if seen["interrupt_at"] is not None and seen["frames"] >= seen["interrupt_at"]:
            seen["interrupt_at"] = None
            deadline = time.monotonic() + 60  # Ctrl-C once the run says it has started this input
            while seen["interrupt_once"] is not None and not seen["interrupt_once"].exists():
                assert time.monotonic() < deadline, f"{seen['interrupt_once']} never appeared"
                time.sleep(0.05)
            _thread.interrupt_main()
            time.sleep(1)  # the main thread stops the run before this input can end
        return infer(self, prepared)

    monkeypatch.setattr(srn.SrnPredictor, "infer", counting)
    return seen


def test_resume_redoes_only_what_an_interrupted_run_left(tmp_path, counted_frames):
    inputs = [depth_folder(tmp_path / name, 2, seed) for seed, name in enumerate("abc")]
    weights = srn_weights(tmp_path / "w1.pth", 1)
    out = tmp_path / "out"
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# three depth folders\n{inputs[0]}\n\n{inputs[1]}\n{inputs[2]}\n")

    counted_frames["interrupt_at"] = 3  # the first frame of the second input: Ctrl-C
    counted_frames["interrupt_once"] = out / LEDGER_DIR / "b.json"
    run = hand("--inputs-from", listing, "--weights", weights, "--out", out)
    assert run.exit_code != 0
    assert ledger(out, "a")["status"] == "done"
    assert ledger(out, "b")["status"] == "failed"  # interrupted; c never started: no record
    assert not (out / "b.npz").exists() and not (out / "c.npz").exists()
    record = ledger(out, "a")
    assert [o["path"] for o in record["outputs"]] == ["a.npz"] and record["frames"] == 2
    assert record["outputs"][0]["bytes"] == (out / "a.npz").stat().st_size
    a_bytes = (out / "a.npz").read_bytes()

    counted_frames["frames"] = 0
    run = hand("--inputs-from", listing, "--weights", weights, "--out", out, "--resume")
    assert run.exit_code == 0, run.output
    assert counted_frames["frames"] == 4  # b and c only
    assert "2 done, 1 skipped" in run.output
    assert (out / "a.npz").read_bytes() == a_bytes

    counted_frames["frames"] = 0  # everything done: nothing runs
    assert hand("--inputs-from", listing, "--weights", weights, "--out", out, "--resume").exit_code == 0
    assert counted_frames["frames"] == 0

    (out / "b.npz").write_bytes(b"damaged")  # an output that is no longer what was written is redone
    run = hand("--inputs-from", listing, "--weights", weights, "--out", out, "--resume")
    assert counted_frames["frames"] == 2 and "1 done, 2 skipped" in run.output

    counted_frames["frames"] = 0  # other weights: every input again
    run = hand(*inputs, "--weights", srn_weights(tmp_path / "w2.pth", 2), "--out", out, "--resume")
    assert run.exit_code == 0, run.output
    assert counted_frames["frames"] == 6 and "3 done, 0 skipped" in run.output
    assert ledger(out, "a")["settings"]["weights_sha256"] != record["settings"]["weights_sha256"]

    counted_frames["frames"] = 0  # an option that changes outputs: every input again
    run = hand(*inputs, "--weights", tmp_path / "w2.pth", "--out", out, "--resume", "--cube", "200")
    assert counted_frames["frames"] == 6 and "3 done, 0 skipped" in run.output


def test_settings_name_method_variant_weights_and_output_options(tmp_path):
    from meshcli.engine.ledger import Ledger, settings_hash, settings_of
    from meshcli.types import WeightsInfo

    class Built:  # what settings_of reads from a predictor
        method, variant, weights = "dekr", "w32-coco", WeightsInfo(None, None)

    smpl = tmp_path / "smpl.pkl"
    smpl.write_bytes(b"one")
    options = {"inputs": ["x"], "out": tmp_path, "batch_size": 4, "device": "cpu", "quiet": True, "flip": True,
               "smpl": smpl}
    base = settings_of("pose", Built(), options)
    assert base["weights_sha256"] == "untrained" and set(base["options"]) == {"flip", "smpl"}
    assert settings_hash(base) == settings_hash(settings_of("pose", Built(), {**options, "batch_size": 1,
                                                                               "device": "cuda"}))
    other = Built()
    other.variant = "w48-coco"
    assert settings_hash(settings_of("pose", other, options)) != settings_hash(base)
    assert settings_hash(settings_of("pose", Built(), {**options, "flip": False})) != settings_hash(base)
    smpl.write_bytes(b"two")  # a file option is known by its content
    assert settings_hash(settings_of("pose", Built(), options)) != settings_hash(base)
    assert Ledger(tmp_path, base).settings_sha256 == settings_hash(base)


def test_a_glob_gives_each_video_its_own_input(tmp_path):
    for name in ("b.mp4", "a.mp4"):
        write_video(tmp_path / name, frames=2)
    (tmp_path / "still.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    inputs, errors = expand_inputs([str(tmp_path / "*")])
    assert not errors
    assert [(i.kind, i.name) for i in inputs] == [("video", "a"), ("video", "b"), ("images", tmp_path.name)]
    _, errors = expand_inputs([str(tmp_path / "*.txt")])
    assert "matches no image or video files" in errors[0].line()


def test_inputs_from_a_missing_file_is_one_line_error(tmp_path):
    run = hand("--inputs-from", tmp_path / "none.txt", "--random-weights", "--out", tmp_path / "out")
    assert run.exit_code == 2 and "none.txt: cannot read the list of inputs" in run.output
    run = hand("--random-weights", "--out", tmp_path / "out")
    assert run.exit_code == 2 and "no inputs given" in run.output
