"""End-to-end time of ``meshcli body`` with ``--detect-every 1`` vs ``N`` on a video, interleaved runs, median.

    python benchmarks/detect_every.py VIDEO --smpl SMPL [--every 5] [--runs 3] [--detector hog] [-- EXTRA CLI ARGS]

Runs HMR with untrained weights (the network's cost does not depend on its weights) and the wireframe overlay.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--smpl", required=True)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--detector", default="hog")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    seconds: dict[int, list[float]] = {1: [], args.every: []}
    for _ in range(args.runs):
        for every in seconds:
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "meshcli", "body", args.video, "--method", "hmr",
                                "--detector", args.detector, "--smpl", args.smpl, "--random-weights",
                                "--renderer", "wireframe", "--detect-every", str(every), "--out", out, "--quiet",
                                *args.extra], check=True, env=env)
                seconds[every].append(time.perf_counter() - t0)
    base = statistics.median(seconds[1])
    print("| --detect-every | median s | runs (s) | speed-up |\n|---|---|---|---|")
    for every, runs in seconds.items():
        print(f"| {every} | {statistics.median(runs):.1f} | {', '.join(f'{r:.1f}' for r in runs)} "
              f"| {base / statistics.median(runs):.2f}x |")


if __name__ == "__main__":
    main()
