"""Synthetic tracking and smoothing suite with ground truth (figures for the README; nothing asserted).

    python benchmarks/tracking.py            # both tables, markdown
    python benchmarks/tracking.py --json     # the same figures as JSON

Tracking: people as boxes with COCO keypoints walk past each other, cross
(the one behind hidden for a few frames), are hidden behind something, and
enter and leave the frame, at 24, 30 and 60 fps; detections get noise like a
detector's. ``meshcli.track.Tracker`` assigns ids; IDF1, ID switches and MOTA
are computed against the ground truth (CLEAR-MOT and Ristani et al.'s ID
measures, IoU >= 0.5 to count a match). motmetrics, the usual library, does
not run on numpy 2, so the measures are computed here.

Smoothing: a walking person's keypoints (pixels) and joint rotations with
per-frame noise of the size per-frame regressors show, raw vs One-Euro vs
offline: mean error to the ground truth, mean acceleration error and lag.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meshcli.smooth import (OFFLINE_HALF_WINDOW_S, OneEuro, axis_angle_to_matrix,  # noqa: E402
                            matrix_to_axis_angle, offline_smooth)
from meshcli.track import Tracker, box_iou  # noqa: E402

FPS = (24, 30, 60)
SIZE = (1280, 720)  # frame width, height
# A standing person's COCO keypoints in a unit box (x right, y down).
SKELETON = np.array([[.5, .06], [.55, .04], [.45, .04], [.6, .06], [.4, .06], [.7, .2], [.3, .2], [.78, .38],
                     [.22, .38], [.8, .54], [.2, .54], [.62, .55], [.38, .55], [.64, .77], [.36, .77],
                     [.65, .98], [.35, .98]])


# ------------------------------------------------------------------ scenes

def walker(start, velocity, size, first: int, last: int, fps: int, hidden=()) -> dict:
    """One person's ground truth: frames first..last, box from centre and size, moving at velocity px/s."""
    frames = np.arange(first, last + 1)
    t = (frames - first) / fps
    centre = np.asarray(start, float) + np.outer(t, velocity)
    half = np.asarray(size, float) / 2
    boxes = np.concatenate([centre - half, centre + half], 1)
    # limbs swing with the walk: arms and legs move ±4% of the box at 1.8 Hz
    swing = 0.04 * np.sin(2 * np.pi * 1.8 * t)[:, None] * np.array([0] * 7 + [1, -1, 1, -1, 0, 0, 1, -1, 1, -1])
    kps = (SKELETON[None, :, 0] + swing)[..., None] * size[0] + boxes[:, None, :1]
    kps = np.concatenate([kps, SKELETON[None, :, 1:] * size[1] + boxes[:, None, 1:2]], -1)
    visible = np.ones(len(frames), bool)
    for a, b in hidden:
        visible[(frames >= a) & (frames <= b)] = False
    return {"frames": frames, "boxes": boxes, "keypoints": kps, "detected": visible}


def scenes(fps: int) -> dict[str, list[dict]]:
    """Scenario name -> people; speeds in pixels per second, so every rate shows the same motion."""
    s = fps / 30  # frames scale with the rate
    n = int(6 * fps)
    w, h = SIZE
    person = (90, 240)
    return {
        "walking past": [walker((150, 360), (180, 0), person, 0, n, fps),
                         walker((1130, 380), (-180, 0), person, 0, n, fps)],
        "crossing, hidden": [walker((150, 360), (180, 0), person, 0, n, fps),
                             # the one behind is hidden while the boxes overlap most
                             walker((1130, 370), (-180, 0), person, 0, n, fps,
                                    hidden=[(round(3.0 * fps - 4 * s), round(3.0 * fps + 4 * s))])],
        "hidden 0.3 s": [walker((100, 360), (200, 0), person, 0, n, fps,
                                hidden=[(round(2 * fps), round(2.3 * fps))])],
        "entering, leaving": [walker((-40, 360), (250, 0), person, 0, int(5.5 * fps), fps),
                              walker((w + 40, 300), (-220, 10), person, int(1 * fps), n, fps),
                              walker((640, h + 100), (0, -150), (80, 200), int(2 * fps), n, fps)],
        "five, crossing": [walker((100 + 250 * k, 250 + 60 * (k % 3)), (140 * (-1) ** k, 25 * (k - 2)),
                                  (80 + 6 * k, 210 + 10 * k), int(0.4 * k * fps), n, fps,
                                  hidden=[(round((1.5 + 0.7 * k) * fps), round((1.5 + 0.7 * k) * fps + 3 * s))])
                           for k in range(5)],
    }


def detections(people: list[dict], rng: np.random.Generator, noise: float = 0.03):
    """Per frame: (gt ids, gt boxes, detected boxes, detected keypoints) with detector-like noise."""
    last = max(p["frames"][-1] for p in people)
    w, h = SIZE
    for frame in range(last + 1):
        ids, gt, det, kps = [], [], [], []
        for k, p in enumerate(people):
            i = frame - p["frames"][0]
            if not 0 <= i < len(p["frames"]):
                continue
            box = p["boxes"][i]
            if box[2] < 0 or box[0] > w or box[3] < 0 or box[1] > h:
                continue  # outside the frame
            ids.append(k)
            gt.append(box)
            if not p["detected"][i]:
                continue
            size = box[2:] - box[:2]
            det.append(box + rng.normal(0, noise, 4) * np.tile(size, 2))
            k_noise = rng.normal(0, noise / 2, (17, 2)) * size
            kps.append(np.concatenate([p["keypoints"][i] + k_noise, np.ones((17, 1))], 1))
        yield (np.array(ids, int), np.array(gt).reshape(-1, 4), np.array(det).reshape(-1, 4),
               np.array(kps).reshape(-1, 17, 3))


# ------------------------------------------------------------------ measures

def clear_mot_and_id(frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """MOTA, ID switches and IDF1 from per-frame (gt ids, gt boxes, hyp ids, hyp boxes)."""
    misses = false = switches = total = 0
    last_match: dict[int, int] = {}
    pairs: dict[tuple[int, int], int] = {}
    gt_count: dict[int, int] = {}
    hyp_count: dict[int, int] = {}
    for gt_ids, gt_boxes, hyp_ids, hyp_boxes in frames:
        total += len(gt_ids)
        for g in gt_ids:
            gt_count[g] = gt_count.get(g, 0) + 1
        for hid in hyp_ids:
            hyp_count[hid] = hyp_count.get(hid, 0) + 1
        iou = box_iou(gt_boxes, hyp_boxes) if len(gt_ids) and len(hyp_ids) else np.zeros((len(gt_ids), len(hyp_ids)))
        for gi, g in enumerate(gt_ids):
            for hi, hid in enumerate(hyp_ids):
                if iou[gi, hi] >= 0.5:
                    pairs[(g, hid)] = pairs.get((g, hid), 0) + 1
        # CLEAR-MOT: keep last frame's correspondences that still overlap, then match the rest optimally
        cost = np.where(iou >= 0.5, 1 - iou, 10.0)
        for gi, g in enumerate(gt_ids):
            for hi, hid in enumerate(hyp_ids):
                if last_match.get(g) == hid and iou[gi, hi] >= 0.5:
                    cost[gi, hi] = -1.0
        r, c = linear_sum_assignment(cost) if cost.size else (np.zeros(0, int), np.zeros(0, int))
        ok = cost[r, c] <= 1.0
        for gi, hi in zip(r[ok], c[ok]):
            g, hid = gt_ids[gi], hyp_ids[hi]
            if g in last_match and last_match[g] != hid:
                switches += 1
            last_match[g] = hid
        misses += len(gt_ids) - ok.sum()
        false += len(hyp_ids) - ok.sum()
    g_list, h_list = sorted(gt_count), sorted(hyp_count)
    overlap = np.array([[pairs.get((g, hid), 0) for hid in h_list] for g in g_list]).reshape(len(g_list), -1)
    r, c = linear_sum_assignment(-overlap) if overlap.size else ([], [])
    idtp = overlap[r, c].sum() if overlap.size else 0
    idf1 = 2 * idtp / (sum(gt_count.values()) + sum(hyp_count.values()))
    return {"IDF1": idf1, "ID switches": switches, "MOTA": 1 - (misses + false + switches) / total,
            "people": len(g_list), "tracks": len(h_list)}


CUES = {"IoU + OKS": (True, True), "IoU only": (False, True), "IoU + OKS, no motion model": (True, False)}


def run_tracker(people: list[dict], fps: int, cue: str, seed: int) -> dict:
    use_keypoints, motion = CUES[cue]
    tracker = Tracker(max_age=round(fps / 2), min_hits=1, **({} if motion else {"velocity_gain": 0.0}))
    rng = np.random.default_rng(seed)
    frames = []
    for frame, (gt_ids, gt_boxes, det, kps) in enumerate(detections(people, rng)):
        tracks = tracker.update(frame, det, kps if use_keypoints else None)
        frames.append((gt_ids, gt_boxes, np.array([t.id for t in tracks], int), det))
    return clear_mot_and_id(frames)


def tracking_table(seeds: int = 5) -> list[dict]:
    rows = []
    for fps in FPS:
        for name, people in scenes(fps).items():
            for cue in CUES:
                runs = [run_tracker(people, fps, cue, seed) for seed in range(seeds)]
                rows.append({"scene": name, "fps": fps, "cost": cue,
                             "IDF1": float(np.mean([r["IDF1"] for r in runs])),
                             "ID switches": int(sum(r["ID switches"] for r in runs)),
                             "MOTA": float(np.mean([r["MOTA"] for r in runs]))})
    return rows


# ------------------------------------------------------------------ smoothing

def trajectories(fps: int, seconds: float = 8.0, seed: int = 0):
    """Ground truth and noisy per-frame estimates: keypoints (T, 17, 2) px and joint rotations (T, 23 * 3)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fps)) / fps
    # walking across the frame with a change of pace, the limbs swinging at 1.8 Hz
    centre = np.stack([200 + 120 * t + 40 * np.sin(2 * np.pi * 0.3 * t), 360 + 8 * np.sin(2 * np.pi * 1.8 * t)], 1)
    swing = 0.05 * np.sin(2 * np.pi * 1.8 * t)[:, None] * np.array([0] * 7 + [1, -1, 1, -1, 0, 0, 1, -1, 1, -1])
    unit = np.stack([SKELETON[None, :, 0] + swing, np.broadcast_to(SKELETON[:, 1], swing.shape)], -1)
    keypoints = centre[:, None] + (unit - 0.5) * np.array([90.0, 240.0])
    phases = rng.uniform(0, 2 * np.pi, (1, 23, 3))
    amplitude = rng.uniform(0.05, 0.6, (1, 23, 3))
    angles = amplitude * np.sin(2 * np.pi * 1.8 * t[:, None, None] + phases)
    rotations = angles.reshape(len(t), -1)
    noisy_kps = keypoints + rng.normal(0, 4.0, keypoints.shape)  # ~4 px: a per-frame regressor at 720p
    jitter = Rotation.from_rotvec(rng.normal(0, np.radians(4), (len(t) * 23, 3)))  # ~4 degrees per joint
    noisy_rot = (jitter * Rotation.from_rotvec(rotations.reshape(-1, 3))).as_rotvec().reshape(len(t), -1)
    return t, keypoints, noisy_kps, rotations, noisy_rot


def smooth_all(kind: str, t: np.ndarray, kps: np.ndarray, rot: np.ndarray, min_cutoff: float, beta: float):
    if kind == "raw":
        return kps, rot
    mats = axis_angle_to_matrix(rot)
    if kind == "offline":
        return (offline_smooth(t, kps, OFFLINE_HALF_WINDOW_S),
                matrix_to_axis_angle(offline_smooth(t, mats, OFFLINE_HALF_WINDOW_S)))
    kf, rf = OneEuro(min_cutoff, beta), OneEuro(min_cutoff, beta)
    scale = 240.0  # the person's height in pixels
    out_k = np.stack([kf(ti, k, scale) for ti, k in zip(t, kps)])
    out_r = np.stack([rf(ti, m) for ti, m in zip(t, mats)])
    return out_k, matrix_to_axis_angle(out_r)


def rotation_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle (degrees) between axis-angle rotations, per frame and joint."""
    ra = Rotation.from_rotvec(a.reshape(-1, 3))
    rb = Rotation.from_rotvec(b.reshape(-1, 3))
    return np.degrees((ra.inv() * rb).magnitude()).reshape(len(a), -1)


def lag_frames(estimate: np.ndarray, truth: np.ndarray, most: int = 10) -> int:
    """The delay (frames) that best lines the estimate up with the truth."""
    errors = [np.abs(estimate[d:] - truth[:len(truth) - d]).mean() for d in range(most + 1)]
    return int(np.argmin(errors))


def smoothing_table(min_cutoff: float = 1.0, beta: float = 20.0) -> list[dict]:
    rows = []
    for fps in FPS:
        t, kps, noisy_kps, rot, noisy_rot = trajectories(fps)
        acc_truth = np.diff(kps, 2, axis=0) * fps ** 2
        for kind in ("raw", "oneeuro", "offline"):
            sk, sr = smooth_all(kind, t, noisy_kps, noisy_rot, min_cutoff, beta)
            acc = np.diff(sk, 2, axis=0) * fps ** 2
            rows.append({"fps": fps, "smooth": kind,
                         "keypoint error px": float(np.linalg.norm(sk - kps, axis=-1).mean()),
                         "accel error px/s2": float(np.linalg.norm(acc - acc_truth, axis=-1).mean()),
                         "rotation error deg": float(rotation_error(sr, rot).mean()),
                         "lag frames": lag_frames(sk, kps)})
    return rows


def markdown(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seeds", type=int, default=5, help="noise draws per tracking scene")
    parser.add_argument("--min-cutoff", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=20.0)
    args = parser.parse_args()
    tracking = tracking_table(args.seeds)
    smoothing = smoothing_table(args.min_cutoff, args.beta)
    if args.json:
        print(json.dumps({"tracking": tracking, "smoothing": smoothing}, indent=1))
    else:
        print(markdown(tracking), "\n")
        print(markdown(smoothing))


if __name__ == "__main__":
    main()
