"""Who is who across frames: one tracker for people (pose, body) and hands.

Each frame's people (boxes, keypoints where the method has them) are matched to
the live tracks by an optimal assignment (scipy's ``linear_sum_assignment``,
the Hungarian method) over a cost built from box IoU and keypoint similarity
(COCO's OKS). Tracks move with a constant-velocity alpha-beta filter, so a
person hidden for a few frames is looked for where they should be by now, and
two people crossing are told apart by where each was heading.

A new track is *tentative* until it has been seen in ``min_hits`` consecutive
frames; a tentative track that misses a frame is dropped, and so are its rows
(their frames are held back by ``min_hits - 1`` frames until that is decided).
A confirmed track gets the next free ``track_id`` (0, 1, 2, ... in the order
tracks are confirmed) and survives up to ``max_age`` frames without being seen.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

# COCO's per-keypoint OKS constants (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_SIGMAS = np.array([.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087,
                        .089, .089])
UNIFORM_SIGMA = 0.07  # skeletons other than COCO's: about COCO's mean constant
MIN_SIMILARITY = 0.1  # below this a track and a detection are not the same person
POSITION_GAIN, VELOCITY_GAIN = 0.7, 0.3  # alpha-beta filter: how far a measurement pulls position and velocity


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (N, M) of boxes a (N, 4) and b (M, 4), both x0, y0, x1, y1."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def keypoint_similarity(a: np.ndarray, b: np.ndarray, areas: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS (N, M) between keypoints a (N, J, 3) and b (M, J, 3) (x, y, confidence).

    ``areas`` (N,) is the object scale of each row of ``a``; joints count where both
    sides have a positive confidence; no joint in common gives 0.
    """
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)
    both = (a[:, None, :, 2] > 0) & (b[None, :, :, 2] > 0)
    spread = 2 * np.maximum(areas, 1.0)[:, None, None] * (2 * sigmas) ** 2
    close = np.where(both, np.exp(-d2 / spread), 0.0).sum(-1)
    return close / np.maximum(both.sum(-1), 1)


def keypoint_sigmas(num_joints: int) -> np.ndarray:
    return COCO_SIGMAS if num_joints == len(COCO_SIGMAS) else np.full(num_joints, UNIFORM_SIGMA)


@dataclass(eq=False)
class Track:
    """One person followed across frames; ``id`` is None until the track is confirmed."""

    box: np.ndarray  # (4,) cx, cy, w, h at the last update
    velocity: np.ndarray  # (4,) per frame
    keypoints: np.ndarray | None  # (J, 3) at the last update
    last_frame: int
    hits: int = 1
    id: int | None = None
    dropped: bool = False  # a tentative track that missed a frame: its rows are left out

    def predicted_box(self, frame: int) -> np.ndarray:
        return self.box + self.velocity * (frame - self.last_frame)


def _centre_size(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)


def _corners(cs: np.ndarray) -> np.ndarray:
    half = np.abs(cs[..., 2:]) / 2
    return np.concatenate([cs[..., :2] - half, cs[..., :2] + half], -1)


class Tracker:
    """Frame-by-frame association; ``update`` gives each row of a frame its ``Track``."""

    def __init__(self, max_age: int, min_hits: int = 1, sigmas: np.ndarray | None = None,
                 min_similarity: float = MIN_SIMILARITY, velocity_gain: float = VELOCITY_GAIN):
        if max_age < 0 or min_hits < 1:
            raise ValueError("max_age must be >= 0 and min_hits >= 1")
        self.max_age = max_age
        self.min_hits = min_hits
        self.sigmas = sigmas
        self.min_similarity = min_similarity
        self.velocity_gain = velocity_gain  # 0: no motion model (boxes expected where last seen)
        self.tracks: list[Track] = []
        self.next_id = 0

    def similarity(self, frame: int, boxes: np.ndarray, keypoints: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(tracks, rows) twice: the matching score, IoU of the predicted box averaged with OKS of the moved
        keypoints when both sides have them, and the best single cue (a pair below ``min_similarity`` in
        every cue is not the same person)."""
        predicted = np.array([t.predicted_box(frame) for t in self.tracks]).reshape(-1, 4)
        iou = box_iou(_corners(predicted), boxes)
        if keypoints is None or any(t.keypoints is None for t in self.tracks):
            return iou, iou
        shift = predicted[:, None, :2] - np.array([t.box[:2] for t in self.tracks]).reshape(-1, 1, 2)
        moved = np.array([t.keypoints for t in self.tracks]).reshape(len(self.tracks), *keypoints.shape[1:])
        moved = np.concatenate([moved[..., :2] + shift, moved[..., 2:]], -1)
        sigmas = self.sigmas if self.sigmas is not None else keypoint_sigmas(keypoints.shape[1])
        oks = keypoint_similarity(moved, keypoints, predicted[:, 2] * predicted[:, 3], sigmas)
        return (iou + oks) / 2, np.maximum(iou, oks)

    def update(self, frame: int, boxes: np.ndarray, keypoints: np.ndarray | None = None) -> list[Track]:
        """Match the people of ``frame`` (boxes (P, 4) x0 y0 x1 y1; keypoints (P, J, 3) or None) to tracks.

        Frames must come in increasing order. Returns the track of each row, in row order.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        keypoints = None if keypoints is None else np.asarray(keypoints, np.float64)
        measured = _centre_size(boxes)
        score = best = np.zeros((len(self.tracks), len(boxes)))
        if score.size:
            score, best = self.similarity(frame, boxes, keypoints)
        rows_tracks, cols = linear_sum_assignment(-score)
        keep = best[rows_tracks, cols] >= self.min_similarity
        matched = dict(zip(cols[keep].tolist(), rows_tracks[keep].tolist()))
        out: list[Track] = []
        for row in range(len(boxes)):
            kps = None if keypoints is None else keypoints[row]
            if row in matched:
                track = self.tracks[matched[row]]
                self._correct(track, frame, measured[row], kps)
            else:
                track = Track(measured[row], np.zeros(4), kps, frame)
                self.tracks.append(track)
            if track.id is None and track.hits >= self.min_hits:
                track.id, self.next_id = self.next_id, self.next_id + 1
            out.append(track)
        seen = set(out)
        for track in self.tracks:
            if track not in seen and track.id is None:
                track.dropped = True  # tentative tracks need consecutive hits
        self.tracks = [t for t in self.tracks
                       if not t.dropped and frame - t.last_frame <= self.max_age]
        return out

    def _correct(self, track: Track, frame: int, measured: np.ndarray, keypoints: np.ndarray | None) -> None:
        gap = frame - track.last_frame
        residual = measured - track.predicted_box(frame)
        track.box = track.predicted_box(frame) + POSITION_GAIN * residual
        track.velocity = track.velocity + self.velocity_gain * residual / gap
        track.keypoints = keypoints
        track.last_frame = frame
        track.hits += 1
