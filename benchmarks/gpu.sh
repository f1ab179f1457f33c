#!/usr/bin/env bash
# meshcli bench for every method on CUDA, float32 and --half, one table: model stage, end to end, peak memory.
#
#   bash benchmarks/gpu.sh [VIDEO] [REPEAT]          (from anywhere; needs only this repository and meshcli's deps)
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu.sh        (checks the script on a CPU: 4 small frames, no --half rows)
#
# Untrained weights (--random-weights) and the body-like stand-in SMPL (tests/standin_body.py, made here without
# ../shared), so it runs on a bare machine; the numbers are the networks' and the pipeline's own. Never part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
VIDEO=${1:-examples/multi_person_demo.mp4}
REPEAT=${2:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

python - "$WORK" "${QUICK:-0}" <<'PY'
import sys
from pathlib import Path
import cv2, numpy as np
sys.path.insert(0, "tests")
from standin_body import write_standin_smpl
work, quick = Path(sys.argv[1]), sys.argv[2] == "1"
write_standin_smpl(work / "smpl.pkl")
nyu = cv2.imread("tests/fixtures/data/nyu/depth_1_0000001.png", cv2.IMREAD_UNCHANGED)
depth = nyu[..., 0].astype(np.uint16) + 256 * nyu[..., 1].astype(np.uint16)  # NYU's colour encoding -> mm
(work / "depth").mkdir()
for k in range(4 if quick else 16):
    cv2.imwrite(str(work / "depth" / f"{k:02d}.png"), depth)
if quick:  # the clip's first 4 frames at 320 px wide
    from conftest import real_clip
    real_clip(work / "clip.mp4", 4, 320)
PY
if [ "${QUICK:-0}" = 1 ]; then VIDEO=$WORK/clip.mp4; REPEAT=1; fi

PRECISIONS=(float32)
if [ "$DEVICE" = cuda ]; then PRECISIONS+=(half); fi
run() {  # label, then meshcli bench arguments
  local label=$1; shift
  for precision in "${PRECISIONS[@]}"; do
    local half=()
    if [ "$precision" = half ]; then half=(--half); fi
    echo "bench $label $precision" >&2
    python -m meshcli bench "$@" "${half[@]}" --device "$DEVICE" --random-weights --repeat "$REPEAT" --json \
      > "$WORK/$label-$precision.json"
  done
}
run dekr "$VIDEO" --method dekr
run hmr "$VIDEO" --method hmr --smpl "$WORK/smpl.pkl"
run hmr-dekr512 "$VIDEO" --method hmr --smpl "$WORK/smpl.pkl" --detector dekr
run hmr-dekr256 "$VIDEO" --method hmr --smpl "$WORK/smpl.pkl" --detector dekr --detect-size 256
run spin "$VIDEO" --method spin --smpl "$WORK/smpl.pkl"
run i2l "$VIDEO" --method i2l --smpl "$WORK/smpl.pkl"
run srn "$WORK/depth" --method srn

python - "$WORK" "${PRECISIONS[@]}" <<'PY'
import json, sys
from pathlib import Path
work, precisions = Path(sys.argv[1]), sys.argv[2:]
print("| method | precision | device | frames | model ms/frame | detect ms/frame | end to end fps | bottleneck "
      "| peak RSS MB | peak CUDA MB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for label in ("dekr", "hmr", "hmr-dekr512", "hmr-dekr256", "spin", "i2l", "srn"):
    for precision in precisions:
        r = json.loads((work / f"{label}-{precision}.json").read_text())
        print(f"| {label} | {precision} | {r['device']} | {r['frames']} | {r['stages']['model']['ms_per_frame']:.1f} | "
              f"{r['stages']['detect']['ms_per_frame']:.1f} | {r['end_to_end_fps']:.2f} | {r['bottleneck']} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_cuda_mb']:.0f} |")
PY
