"""The track/smooth stage: people across frames, between postprocess and render.

Frames come in order with their results; each row gets ``track_id`` (see
``meshcli.track``) and, with smoothing on, its values smoothed along its track
(see ``meshcli.smooth``), the per-frame values kept as ``<key>_raw``. Frames
leave the stage after a bounded look-ahead: ``min_hits - 1`` frames to decide
whether a new track is real, and for ``offline`` smoothing the filter's
half-window, so memory stays flat however long the video is.

What is smoothed depends on the task (``adapter_for``):

pose   ``keypoints`` x, y (scores untouched);
body   HMR, SPIN: SMPL rotations (``global_orient``, ``body_pose``) as rotation matrices,
       projected back onto rotations; ``betas``; the person's camera as an
       image-space scale and offset (so a jittering crop does not jitter the
       person); ``joints3d``, ``vertices``, ``cam``, ``cam_t`` and ``joints2d``
       are then recomputed from the smoothed parameters by the method's own
       SMPL joints and projection;
       I2L-MeshNet: its lixel joints and mesh as camera-space positions; with
       a trained parameter stage, its rotations, betas and ``cam_t``, the
       parameter mesh recomputed from them;
hand   ``joints_xyz``, with ``joints_uvd`` projected from them; a hand input
       has one track.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .errors import MeshcliError
from .options import TemporalOptions
from .smooth import (OFFLINE_HALF_WINDOW_S, OneEuro, axis_angle_to_matrix, matrix_to_axis_angle,
                     offline_weights)
from .track import Track, Tracker
from .types import Frame, FrameResult

STILLS_FPS = 30.0  # image folders have no clock: their frames are taken as 1/30 s apart
TRACK_MAX_AGE_S = 0.5  # default --track-max-age: about half a second of frames


# ------------------------------------------------------------------ what each task smooths

class Adapter:
    """A task's view of its rows: what the tracker compares and what gets smoothed."""

    single_track = False  # every row is the same one thing (a hand input): no association, no ``features``
    changed_keys: tuple[str, ...] = ()  # what ``decode`` rewrites (each gets a ``_raw`` twin)

    def features(self, rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(boxes (P, 4) x0 y0 x1 y1, keypoints (P, J, 3) or None) for association."""
        raise NotImplementedError

    def scale(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        """(P,) a size per row that One-Euro's speeds are divided by."""
        boxes = self.features(rows)[0]
        return np.maximum(np.linalg.norm(boxes[:, 2:] - boxes[:, :2], axis=1), 1.0)

    def encode(self, result: FrameResult) -> dict[str, np.ndarray]:
        """Per-row values to smooth, (P, ...) each, all in linear spaces."""
        raise NotImplementedError

    def decode(self, result: FrameResult, values: dict[str, np.ndarray]) -> list[str]:
        """Write smoothed values (and everything derived from them) into ``result``; the keys changed."""
        raise NotImplementedError

    def select(self, result: FrameResult, keep: np.ndarray) -> None:
        result.rows = {k: v[keep] for k, v in result.rows.items()}


class PoseAdapter(Adapter):
    changed_keys = ("keypoints",)

    def features(self, rows):
        kps = rows["keypoints"]
        boxes = rows["bbox"] if "bbox" in rows else np.concatenate([kps[..., :2].min(1), kps[..., :2].max(1)], 1)
        return boxes, kps

    def encode(self, result):
        return {"xy": result.rows["keypoints"][..., :2].astype(np.float64)}

    def decode(self, result, values):
        kps = result.rows["keypoints"].copy()
        kps[..., :2] = values["xy"]
        result.rows["keypoints"] = kps
        return ["keypoints"]


class MeshAdapter(Adapter):
    """Body methods: people compared by box and by the joints the method puts in the image; each row's mesh
    rides along in ``result.vertices``."""

    def __init__(self, predictor):
        self.predictor = predictor

    def features(self, rows):
        return rows["bbox"], self.predictor.image_keypoints(rows)

    def select(self, result, keep):
        super().select(result, keep)
        result.vertices = result.vertices[keep]


class BodyAdapter(MeshAdapter):
    """Crop-and-regress body methods (HMR, SPIN): rows as ``meshcli.methods.body`` writes them."""

    changed_keys = ("global_orient", "body_pose", "betas", "cam", "cam_t", "joints3d", "joints2d", "vertices")

    def crop_side(self, rows):
        return self.predictor.crop_size * rows["focal_length"].mean(1) / self.predictor.focal

    def encode(self, result):
        rows = result.rows
        # the person in the image: pixel = a * X_xy + b near the body, whatever crop the frame used
        s, t = rows["cam"][:, 0].astype(np.float64), rows["cam"][:, 1:].astype(np.float64)
        a = s * self.crop_side(rows) / 2
        b = a[:, None] * t + rows["principal_point"]
        pose = np.concatenate([rows["global_orient"], rows["body_pose"]], 1)
        return {"rotations": axis_angle_to_matrix(pose), "betas": rows["betas"].astype(np.float64),
                "image_camera": np.concatenate([a[:, None], b], 1)}

    def decode(self, result, values):
        rows = result.rows
        a, b = values["image_camera"][:, 0], values["image_camera"][:, 1:]
        cam = np.concatenate([(2 * a / self.crop_side(rows))[:, None], (b - rows["principal_point"]) / a[:, None]], 1)
        pose = matrix_to_axis_angle(values["rotations"])
        joints3d, vertices = self.predictor.body_from_parameters(values["betas"], pose)
        cam_t, joints2d = self.predictor.project(cam, joints3d, rows["focal_length"], rows["principal_point"])
        changed = {"global_orient": pose[:, :3], "body_pose": pose[:, 3:], "betas": values["betas"], "cam": cam,
                   "cam_t": cam_t, "joints3d": joints3d, "joints2d": joints2d}
        if "vertices" in rows:
            changed["vertices"] = vertices
        for key, value in changed.items():
            rows[key] = value.astype(rows[key].dtype)
        result.vertices = vertices.astype(result.vertices.dtype)
        return list(changed)


class HandAdapter(Adapter):
    single_track = True
    changed_keys = ("joints_xyz", "joints_uvd")

    def __init__(self, predictor):
        self.predictor = predictor

    def scale(self, rows):
        return np.full(len(rows["joints_xyz"]), 100.0)  # mm: about a hand's span

    def encode(self, result):
        return {"xyz": result.rows["joints_xyz"].astype(np.float64)}

    def decode(self, result, values):
        rows = result.rows
        rows["joints_xyz"] = values["xyz"].astype(rows["joints_xyz"].dtype)
        rows["joints_uvd"] = self.predictor.uvd_of(values["xyz"]).astype(rows["joints_uvd"].dtype)
        return ["joints_xyz", "joints_uvd"]


class I2LAdapter(MeshAdapter):
    """I2L-MeshNet: its lixel outputs are positions (joints and mesh, smoothed in camera space); its parameter
    stage, when trained, gives SMPL rotations, betas and the mesh's translation, from which its mesh is
    recomputed."""

    changed_keys = ("joints_img", "mesh_cam", "global_orient", "body_pose", "betas", "cam_t", "mesh_cam_param")

    def __init__(self, predictor):
        super().__init__(predictor)
        self.shown = "mesh_cam" if predictor.stage == "lixel" else "mesh_cam_param"  # the overlay's mesh

    def encode(self, result):
        rows = result.rows
        focal = np.asarray(self.predictor.focal, np.float64)
        principal = rows["principal_point"][:, None]
        uvd = rows["joints_img"].astype(np.float64)
        joints = np.concatenate([(uvd[..., :2] - principal) / focal * uvd[..., 2:], uvd[..., 2:]], -1)
        values = {"joints": joints}
        lixel = rows.get("mesh_cam", result.vertices if self.shown == "mesh_cam" else None)
        if lixel is not None:
            values["lixel_mesh"] = lixel.astype(np.float64)
        if "global_orient" in rows:
            pose = np.concatenate([rows["global_orient"], rows["body_pose"]], 1)
            values.update(rotations=axis_angle_to_matrix(pose), betas=rows["betas"].astype(np.float64),
                          cam_t=rows["cam_t"].astype(np.float64))
        return values

    def decode(self, result, values):
        rows = result.rows
        focal = np.asarray(self.predictor.focal, np.float64)
        joints = values["joints"]
        uv = joints[..., :2] / joints[..., 2:] * focal + rows["principal_point"][:, None]
        changed = {"joints_img": np.concatenate([uv, joints[..., 2:]], -1)}
        meshes = {}
        if "lixel_mesh" in values:
            meshes["mesh_cam"] = values["lixel_mesh"]
        if "rotations" in values:
            pose = matrix_to_axis_angle(values["rotations"])
            changed.update(global_orient=pose[:, :3], body_pose=pose[:, 3:], betas=values["betas"],
                           cam_t=values["cam_t"])
            if "mesh_cam_param" in rows or self.shown == "mesh_cam_param":
                mesh = self.predictor.param_mesh(values["betas"], pose)[0]
                meshes["mesh_cam_param"] = mesh + values["cam_t"][:, None]
        for key, mesh in meshes.items():
            if key in rows:
                changed[key] = mesh
            if key == self.shown:
                result.vertices = mesh.astype(result.vertices.dtype)
        for key, value in changed.items():
            rows[key] = value.astype(rows[key].dtype)
        return list(changed)


def adapter_for(predictor, smooth: str) -> Adapter:
    """The task's adapter; a one-line error when smoothing is asked of a method that cannot be smoothed."""
    if predictor.task == "pose":
        return PoseAdapter()
    if predictor.task == "hand":
        return HandAdapter(predictor)
    if hasattr(predictor, "body_from_parameters"):
        return BodyAdapter(predictor)
    if hasattr(predictor, "param_mesh"):
        return I2LAdapter(predictor)
    raise MeshcliError(None, f"--method {predictor.method} cannot be tracked", "use --no-track")


# ------------------------------------------------------------------ the stage

@dataclass
class _Pending:
    frame: Frame
    result: FrameResult
    time: float
    tracks: list[Track]
    values: list[dict[str, np.ndarray]]  # per row: the values as they came (raw)
    smoothed: list[dict[str, np.ndarray]] = field(default_factory=list)  # One-Euro's, per row


class TemporalStage:
    """Tracks and smooths one input's frames; ``push`` a frame, get back the frames that are ready."""

    def __init__(self, predictor, options: TemporalOptions, fps: float):
        self.options = options
        self.adapter = adapter_for(predictor, options.smooth)
        self.fps = fps if fps and fps > 0 else STILLS_FPS
        max_age = options.max_age if options.max_age is not None else max(1, round(TRACK_MAX_AGE_S * self.fps))
        self.tracker = Tracker(max_age, options.min_hits)
        self.half_window = OFFLINE_HALF_WINDOW_S
        look_ahead = options.min_hits - 1
        if options.smooth == "offline":
            look_ahead = max(look_ahead, math.ceil(self.half_window * self.fps - 1e-9))
        self.look_ahead = look_ahead  # frames a frame waits for those after it (at the input's average rate)
        self.pending: deque[_Pending] = deque()
        self.history: dict[Track, deque[tuple[float, dict[str, np.ndarray]]]] = {}  # offline: recent samples
        self.filters: dict[Track, dict[str, OneEuro]] = {}
        self.single = Track(np.zeros(4), np.zeros(4), None, 0, id=0) if self.adapter.single_track else None

    def empty_rows(self, empty: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The method's zero-row schema plus this stage's keys, for an input with no frame at all."""
        out = dict(empty, track_id=np.zeros(0, np.int32))
        if self.options.smooth != "none":
            out.update({f"{k}_raw": empty[k] for k in self.adapter.changed_keys if k in empty})
        return out

    def push(self, frame: Frame, result: FrameResult) -> list[tuple[Frame, FrameResult]]:
        time = frame.time if frame.time is not None else frame.index / self.fps
        rows = result.rows
        if self.single is not None:
            tracks = [self.single] * result.num_people
        else:
            boxes, keypoints = self.adapter.features(rows)
            tracks = self.tracker.update(frame.index, boxes, keypoints)
        values: list[dict[str, np.ndarray]] = []
        if self.options.smooth != "none" and result.num_people:
            encoded = self.adapter.encode(result)
            values = [{k: v[i] for k, v in encoded.items()} for i in range(result.num_people)]
        item = _Pending(frame, result, time, tracks, values)
        if self.options.smooth == "oneeuro":
            scale = self.adapter.scale(rows) if result.num_people else []
            item.smoothed = [self._one_euro(track, time, value, s) for track, value, s in zip(tracks, values, scale)]
        elif self.options.smooth == "offline":
            for track, value in zip(tracks, values):
                if _finite(value):
                    self.history.setdefault(track, deque()).append((time, value))
        self.pending.append(item)
        ready = []
        while self.pending and self._ready():
            ready.append(self._release(self.pending.popleft()))
        return ready

    def _ready(self) -> bool:
        """Whether the oldest frame held back has seen all the frames it waits for."""
        waiting = len(self.pending) - 1
        if waiting >= 2 * self.look_ahead + 1:
            return True  # a burst of closely spaced frames: memory stays bounded all the same
        if waiting < self.options.min_hits - 1:
            return False
        # offline smoothing waits for the half-window in time (variable frame rates included)
        return (self.options.smooth != "offline"
                or self.pending[-1].time - self.pending[0].time >= self.half_window - 1e-9)

    def finish(self) -> list[tuple[Frame, FrameResult]]:
        """The frames still held back, once the input has ended."""
        ready = [self._release(item) for item in self.pending]
        self.pending.clear()
        return ready

    def _one_euro(self, track: Track, time: float, value: dict[str, np.ndarray], scale: float):
        if not _finite(value):
            return value
        filters = self.filters.setdefault(track, {})
        out = {}
        for key, v in value.items():
            f = filters.setdefault(key, OneEuro(self.options.min_cutoff, self.options.beta))
            out[key] = f(time, v, 1.0 if key in ("rotations", "betas") else scale)
        return out

    def _offline(self, track: Track, time: float, value: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        samples = self.history.get(track)
        if not samples or not _finite(value):
            return value
        while samples and samples[0][0] < time - self.half_window - 1e-9:
            samples.popleft()  # older than any frame still to come needs
        times = np.array([t for t, _ in samples])
        weights = offline_weights(times, time, self.half_window)
        return {k: np.tensordot(weights, np.stack([s[k] for _, s in samples]), 1) for k in value}

    def _release(self, item: _Pending) -> tuple[Frame, FrameResult]:
        result = item.result
        keep = np.array([not t.dropped for t in item.tracks], bool)
        if not keep.all():
            self.adapter.select(result, keep)
        tracks = [t for t, k in zip(item.tracks, keep) if k]
        if self.options.smooth != "none":
            values = [v for v, k in zip(item.values, keep) if k]
            if self.options.smooth == "oneeuro":
                smoothed = [v for v, k in zip(item.smoothed, keep) if k]
            else:
                smoothed = [self._offline(t, item.time, v) for t, v in zip(tracks, values)]
            raw = {k: v.copy() for k, v in result.rows.items()}
            stacked = {k: np.stack([s[k] for s in smoothed]) for k in smoothed[0]} if smoothed else {}
            changed = self.adapter.decode(result, stacked) if smoothed else self.adapter.changed_keys
            for key in (k for k in changed if k in raw):
                result.rows[f"{key}_raw"] = raw[key]
        result.rows["track_id"] = np.array([t.id for t in tracks], np.int32)
        self._forget_dead()
        return item.frame, result

    def _forget_dead(self) -> None:
        live = set(self.tracker.tracks) | {t for p in self.pending for t in p.tracks}
        if self.single is not None:
            live.add(self.single)
        for store in (self.history, self.filters):
            for key in [k for k in store if k not in live]:
                del store[key]


def _finite(value: dict[str, np.ndarray]) -> bool:
    return all(np.isfinite(v).all() for v in value.values())
