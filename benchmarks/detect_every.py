"""End-to-end time of ``meshcli body`` with ``--detect-every 1`` vs ``N`` on a video, interleaved runs, median.

    python benchmarks/detect_every.py VIDEO --smpl SMPL [--every 5] [--runs 3] [--detector hog] [-- EXTRA CLI ARGS]

Runs HMR with untrained weights (the network's cost does not depend on its weights) and the wireframe overlay.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from interleaved import interleaved, print_table

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

    def body(every: int):
        def run():
            with tempfile.TemporaryDirectory() as out:
                subprocess.run([sys.executable, "-m", "meshcli", "body", args.video, "--method", "hmr",
                                "--detector", args.detector, "--smpl", args.smpl, "--random-weights",
                                "--renderer", "wireframe", "--detect-every", str(every), "--out", out, "--quiet",
                                *args.extra], check=True, env=env)
        return run

    seconds = interleaved({"1": body(1), str(args.every): body(args.every)}, args.runs)
    print_table("--detect-every", seconds, base="1")

if __name__ == "__main__":
    main()
