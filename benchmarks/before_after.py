"""Every method, this checkout against a baseline checkout: model stage, end to end and peak RSS, one table.

    git worktree add --detach ../wt-baseline 2db47da
    PYTHONPATH=. python benchmarks/before_after.py --baseline ../wt-baseline [--rounds 3] [--frames 8]

Small inputs so that it fits in minutes on 2 cores: DEKR on one COCO image, HMR, SPIN and I2L-MeshNet on the
first frames of the demo clip at 640 px wide (the whole frame is one person), SRN on copies of the NYU depth
frame; untrained weights, the body-like stand-in SMPL, no overlay (both checkouts take these options). Each
round runs every method on both checkouts (``benchmarks/ab.py``'s ``bench_once``: a fresh process each, the
order alternating), so load from other work hits both alike; the table gives medians and new / baseline.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
from ab import bench_once  # noqa: E402
from conftest import real_clip  # noqa: E402
from standin_body import write_standin_smpl  # noqa: E402

METHODS = ("dekr", "hmr", "spin", "i2l", "srn")
COLUMNS = (("model_s", "model stage s"), ("wall_s", "end to end s"), ("cpu_s", "process CPU s"),
           ("peak_rss_mb", "peak RSS MB"))


def inputs(folder: Path, frames: int) -> dict[str, list[str]]:
    """meshcli bench arguments per method."""
    clip = real_clip(folder / "clip.mp4", frames, 640)
    smpl = write_standin_smpl(folder / "smpl.pkl")
    nyu = cv2.imread(str(REPO / "tests/fixtures/data/nyu/depth_1_0000001.png"), cv2.IMREAD_UNCHANGED)
    depth = nyu[..., 0].astype(np.uint16) + 256 * nyu[..., 1].astype(np.uint16)  # NYU's colour encoding -> mm
    (folder / "depth").mkdir()
    for k in range(frames):
        cv2.imwrite(str(folder / "depth" / f"{k:02d}.png"), depth)
    common = ["--random-weights", "--device", "cpu", "--no-annotate"]
    body = [str(clip), "--smpl", str(smpl), *common]
    return {"dekr": [str(REPO / "examples/coco_000000000785.jpg"), "--method", "dekr", *common],
            "hmr": [*body, "--method", "hmr"], "spin": [*body, "--method", "spin"], "i2l": [*body, "--method", "i2l"],
            "srn": [str(folder / "depth"), "--method", "srn", *common]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="checkout to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8, help="frames of the clip and depth images")
    parser.add_argument("--methods", default=",".join(METHODS))
    opts = parser.parse_args()
    methods = opts.methods.split(",")
    sides = {"baseline": opts.baseline.resolve(), "new": REPO}
    with tempfile.TemporaryDirectory(prefix="meshcli-before-after-") as tmp:
        args = inputs(Path(tmp), opts.frames)
        runs = {(m, side): [] for m in methods for side in sides}
        for r in range(opts.rounds):
            for m in methods:
                for side in (("baseline", "new") if r % 2 == 0 else ("new", "baseline")):
                    runs[(m, side)].append(bench_once(sides[side], args[m]))
                    print(f"round {r + 1} {m} {side}: {runs[(m, side)][-1]}", file=sys.stderr, flush=True)
    print(f"| method | {' | '.join(f'{name} (baseline / new / ratio)' for _, name in COLUMNS)} |")
    print("|---|" + "---|" * len(COLUMNS))
    for m in methods:
        cells = []
        for key, _ in COLUMNS:
            base, new = (statistics.median(run[key] for run in runs[(m, side)]) for side in sides)
            cells.append(f"{base:.2f} / {new:.2f} / {new / base:.2f}")
        print(f"| {m} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
