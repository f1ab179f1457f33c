"""`--detect-size`: the DEKR person detector at a smaller input, against its full size (512).

    PYTHONPATH=. python benchmarks/detect_size.py [--sizes 512,384,256] [--video-frames 3] [--threads 1]
    PYTHONPATH=. python benchmarks/detect_size.py --sizes 512,256 --no-agreement --bench-frames 4

Per image (the DEKR parity fixture images) and per frame (the first frames of examples/multi_person_demo.mp4),
the detector runs at every size, sizes interleaved, in this process. Boxes at each size are matched to the
full-size boxes by IoU (Hungarian assignment; a pair counts from IoU 0.5): the table gives the mean IoU of the
matched pairs, how many full-size people were matched (recall) and how many small-size people matched one
(precision), the frames whose people count is the same, and the median per-frame ratio size / full size of
the detector's CPU time (this process's, less sensitive to other load than wall time). ``--threads 1`` gives
the work itself: with more threads on a loaded machine, OpenMP's spin-waiting inflates CPU time.

Without ``--weights`` the checkpoint is the parity fixtures' stand-in (``dekr-w32-coco-ctrbias``, written by
../shared/parity/make_checkpoint.py): untrained values, so its "people" are not people and every one it outputs
counts (``--min-score`` is ignored); agreement then says how stable the geometry is, not how good boxes are.

``--bench-frames N`` also runs ``meshcli bench`` of ``body --method hmr --detector dekr`` (untrained weights,
the stand-in SMPL, no overlay) on the first N frames of the clip, full size and each smaller size interleaved,
``--rounds`` times, and prints the median detect stage per frame: the detection cost inside ``body``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import FIXTURES, PARITY, real_clip  # noqa: E402
from standin_body import write_standin_smpl  # noqa: E402

from meshcli.io.sources import iter_video, read_rgb  # noqa: E402
from meshcli.methods.dekr import DekrPredictor  # noqa: E402
from meshcli.people import DekrPeople  # noqa: E402
from meshcli.types import Frame  # noqa: E402

CASE = "dekr-w32-coco-ctrbias"
CLIP = REPO / "examples" / "multi_person_demo.mp4"


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4) with every box of ``b`` (M, 4), x0 y0 x1 y1."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), -1)
    area = lambda boxes: np.prod(boxes[:, 2:] - boxes[:, :2], -1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def agreement(full: np.ndarray, small: np.ndarray, min_iou: float = 0.5) -> tuple[list[float], int]:
    """IoUs of the matched pairs (one-to-one, highest total IoU) and how many pairs there are."""
    if not len(full) or not len(small):
        return [], 0
    iou = box_iou(full, small)
    rows, cols = linear_sum_assignment(-iou)
    matched = [float(iou[r, c]) for r, c in zip(rows, cols) if iou[r, c] >= min_iou]
    return matched, len(matched)


def frames(video_frames: int) -> list[tuple[str, Frame]]:
    case = json.loads((FIXTURES / CASE / "case.json").read_text())
    out = [("fixtures", Frame(read_rgb((PARITY / CASE / item["path"]).resolve()), k, Path(item["path"]).name))
           for k, item in enumerate(case["inputs"])]
    for k, frame in enumerate(iter_video(CLIP)):
        if k == video_frames:
            break
        out.append(("demo clip", frame))
    return out


def stand_in_checkpoint(folder: Path) -> Path:
    path = folder / "dekr.pth"
    subprocess.run([sys.executable, str(PARITY / "make_checkpoint.py"), str(PARITY / CASE / "spec.json"), str(path)],
                   check=True)
    return path


def agreement_table(weights: Path, sizes: list[int], min_score: float, video_frames: int) -> None:
    detectors = {s: DekrPeople(DekrPredictor(weights, "w32-coco", "cpu", rescore=False, input_size=s), min_score)
                 for s in sizes}
    full = max(sizes)
    stats = {(group, s): {"ious": [], "matched": 0, "full": 0, "small": 0, "same_count": 0, "frames": 0,
                          "ratios": []} for group in ("fixtures", "demo clip") for s in sizes if s != full}
    for k, (group, frame) in enumerate(frames(video_frames)):
        boxes, seconds = {}, {}
        order = sizes[k % len(sizes):] + sizes[:k % len(sizes)]  # rotate which size runs first
        for s in order:
            t0 = time.process_time()
            found = detectors[s].find([detectors[s].prepare(frame)])[0]
            seconds[s] = time.process_time() - t0
            boxes[s] = np.array([p.box for p in found]).reshape(-1, 4)
        for s in sizes:
            if s == full:
                continue
            row = stats[(group, s)]
            ious, matched = agreement(boxes[full], boxes[s])
            row["ious"] += ious
            row["matched"] += matched
            row["full"] += len(boxes[full])
            row["small"] += len(boxes[s])
            row["same_count"] += len(boxes[full]) == len(boxes[s])
            row["frames"] += 1
            row["ratios"].append(seconds[s] / seconds[full])
        print(f"{frame.name}: " + ", ".join(f"{s}: {len(boxes[s])} people {seconds[s]:.2f} CPU-s" for s in sizes),
              file=sys.stderr, flush=True)
    print(f"| images | size | frames | mean IoU (matched) | recall | precision | same count | CPU time / {full} |")
    print("|---|---|---|---|---|---|---|---|")
    for (group, s), row in stats.items():
        mean_iou = f"{statistics.mean(row['ious']):.3f}" if row["ious"] else "-"
        print(f"| {group} | {s} | {row['frames']} | {mean_iou} | {row['matched']}/{row['full']} | "
              f"{row['matched']}/{row['small']} | {row['same_count']}/{row['frames']} | "
              f"{statistics.median(row['ratios']):.2f} |")


def bench_detect(sizes: list[int], frames_: int, rounds: int, folder: Path) -> None:
    """Median detect ms/frame of ``meshcli bench`` (body, HMR, DEKR detector) at each size, interleaved."""
    clip = real_clip(folder / "clip.mp4", frames_)
    smpl = write_standin_smpl(folder / "smpl.pkl", PARITY / "fake_smpl.py")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    full = max(sizes)
    per_size: dict[int, list[float]] = {s: [] for s in sizes}
    for r in range(rounds):
        for s in (sizes if r % 2 == 0 else sizes[::-1]):
            extra = [] if s == full else ["--detect-size", str(s)]
            done = subprocess.run([sys.executable, "-m", "meshcli", "bench", str(clip), "--method", "hmr",
                                   "--detector", "dekr", *extra, "--random-weights", "--smpl", str(smpl),
                                   "--device", "cpu", "--no-annotate", "--json"],
                                  env=env, cwd=REPO, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"meshcli bench failed:\n{done.stdout}\n{done.stderr}")
            per_size[s].append(json.loads(done.stdout)["stages"]["detect"]["ms_per_frame"])
            print(f"round {r + 1} size {s}: detect {per_size[s][-1]:.0f} ms/frame", file=sys.stderr, flush=True)
    base = statistics.median(per_size[full])
    print(f"\n| `body` detect stage, {frames_} frames 1080x1920, median of {rounds} | ms/frame | / {full} |")
    print("|---|---|---|")
    for s in sizes:
        median = statistics.median(per_size[s])
        print(f"| --detect-size {s} | {median:.0f} | {median / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="512,384,256", help="input short sides; the largest is the reference")
    parser.add_argument("--weights", type=Path, help="a DEKR W32 COCO checkpoint (default: the stand-in)")
    parser.add_argument("--min-score", type=float, default=0.3, help="people scoring below are left out, as "
                        "body's detector does (not with the stand-in weights)")
    parser.add_argument("--video-frames", type=int, default=3, help="frames of the demo clip in the table")
    parser.add_argument("--bench-frames", type=int, default=0, help="frames of the clip for meshcli bench (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads for the agreement table (default: torch's)")
    parser.add_argument("--agreement", action=argparse.BooleanOptionalAction, default=True,
                        help="the agreement table (--no-agreement: only meshcli bench)")
    opts = parser.parse_args()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    sizes = sorted({int(s) for s in opts.sizes.split(",")}, reverse=True)
    with tempfile.TemporaryDirectory(prefix="meshcli-detect-size-") as tmp:
        weights, min_score = opts.weights, opts.min_score
        if opts.agreement and weights is None:
            weights, min_score = stand_in_checkpoint(Path(tmp)), -np.inf
            print("stand-in weights: every person DEKR outputs counts (their scores mean nothing)\n")
        if opts.agreement:
            agreement_table(weights, sizes, min_score, opts.video_frames)
        if opts.bench_frames:
            bench_detect(sizes, opts.bench_frames, opts.rounds, Path(tmp))


if __name__ == "__main__":
    main()
