#!/usr/bin/env bash
# meshcli bench for every method on CUDA, one table: model stage, end to end, peak RSS and CUDA memory.
#
#   bash benchmarks/gpu.sh [VIDEO] [REPEAT]      (needs ../shared/parity for SMPL; DEVICE=cpu to try it here)
#
# Untrained weights (--random-weights) and the body-like stand-in SMPL (tests/standin_body.py), so it runs on a
# bare machine; the numbers are the networks' and the pipeline's own. Never part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
VIDEO=${1:-examples/multi_person_demo.mp4}
REPEAT=${2:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

python - "$WORK" <<'PY'
import sys
from pathlib import Path
import cv2, numpy as np
sys.path.insert(0, "tests")
from standin_body import write_standin_smpl
work = Path(sys.argv[1])
write_standin_smpl(work / "smpl.pkl", Path("../shared/parity/fake_smpl.py"))
nyu = cv2.imread("tests/fixtures/data/nyu/depth_1_0000001.png", cv2.IMREAD_UNCHANGED)
depth = nyu[..., 0].astype(np.uint16) + 256 * nyu[..., 1].astype(np.uint16)  # NYU's colour encoding -> mm
(work / "depth").mkdir()
for k in range(16):
    cv2.imwrite(str(work / "depth" / f"{k:02d}.png"), depth)
PY

run() {  # label, then meshcli bench arguments
  local label=$1; shift
  python -m meshcli bench "$@" --device "${DEVICE:-cuda}" --random-weights --repeat "$REPEAT" --json > "$WORK/$label.json"
}
run dekr "$VIDEO" --method dekr
run hmr "$VIDEO" --method hmr --smpl "$WORK/smpl.pkl"
run spin "$VIDEO" --method spin --smpl "$WORK/smpl.pkl"
run i2l "$VIDEO" --method i2l --smpl "$WORK/smpl.pkl"
run srn "$WORK/depth" --method srn

python - "$WORK" <<'PY'
import json, sys
from pathlib import Path
print("| method | frames | model ms/frame | end to end fps | bottleneck | peak RSS MB | peak CUDA MB |")
print("|---|---|---|---|---|---|---|")
for label in ("dekr", "hmr", "spin", "i2l", "srn"):
    r = json.loads((Path(sys.argv[1]) / f"{label}.json").read_text())
    print(f"| {label} | {r['frames']} | {r['stages']['model']['ms_per_frame']:.1f} | {r['end_to_end_fps']:.2f} | "
          f"{r['bottleneck']} | {r['peak_rss_mb']:.0f} | {r['peak_cuda_mb']:.0f} |")
PY
