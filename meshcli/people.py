"""Who is in a frame: every person source body methods crop and reconstruct.

Body-mesh methods (HMR, SPIN, I2L-MeshNet) regress one body from one person
crop. A *person source* says, per frame, which people to crop:

``--detector full``   the whole frame is one person (HMR's and SPIN's demo rule
                      when nothing else is given);
``--openpose PATH``   OpenPose keypoint JSON per image or video frame;
``--boxes FILE``      person boxes per frame from a JSON file (format below);
``--bbox x,y,w,h``    one fixed box in every frame (I2L-MeshNet's demo);
``--detector dekr``   person boxes from DEKR's multi-person keypoints;
``--detector hog``    person boxes from OpenCV's built-in HOG people detector
                      (no download: weak, but real and offline).

Each source yields ``Person`` records (a box, and keypoints where known); the
method turns each into its own crop by its own rule. Sources know nothing of
crops, so every body method can share them.

All sources have one interface, in two steps so that a network detector can
run as its own pipeline stage on device batches of frames::

    prepared = source.prepare(frame)            # CPU, decode thread
    people   = source.find([prepared, ...])     # one list of Person per frame, in order

File-based sources find people frame by frame (``people(frame)``); a
``NetworkPersonSource`` (DEKR) has ``on_device`` set, and the pipeline runs its
``find`` in a detect stage on the model side. ``runs_on(frame)`` decides per
frame whether the network runs; other frames get ``between(frame)`` (nobody,
unless a subclass carries people over, as a tracker does).

``--boxes`` JSON format
-----------------------
::

    {"format": "xywh",                       # optional: "xywh" (default) or "xyxy"
     "frames": {"im1954.jpg": [[x, y, w, h], ...],   # by image file name
                "clip.mp4#12": [[x, y, w, h, score]],  # by video frame name
                "12": [[x, y, w, h]]}}                # or by frame index

Boxes are in original-image pixels, an optional fifth number is a score. A
frame missing from ``frames`` has nobody in it. ``{"bbox": [x, y, w, h]}``
(SPIN's demo format) gives one box for every frame.

OpenPose files
--------------
``PATH`` is one JSON file (used for every frame) or a folder of OpenPose's
per-frame outputs: ``<image stem>_keypoints.json`` (or ``<image stem>.json``)
for images, ``<video stem>_<12-digit frame>_keypoints.json`` for videos. People
are ``people[k]["pose_keypoints_2d"]`` (``"pose_keypoints"`` in old OpenPose),
x, y, confidence triplets.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Protocol

import cv2
import numpy as np

from .errors import MeshcliError
from .options import parse_floats
from .types import Frame, FrameResult, Person

OPENPOSE_THRESHOLD = 0.2  # confidence above which a keypoint counts (HMR's and SPIN's demos)


def keypoint_person(keypoints: np.ndarray, threshold: float = OPENPOSE_THRESHOLD) -> Person | None:
    """A person from keypoints: the box of those above ``threshold``; None if they span no extent."""
    kps = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    ok = kps[:, 2] > threshold
    if not ok.any():
        return None
    xy = kps[ok, :2]
    if not (xy.max(0) > xy.min(0)).any():  # one point (or all at one place): no size to crop by
        return None
    return Person(np.concatenate([xy.min(0), xy.max(0)]), "keypoints", kps, float(kps[ok, 2].mean()))


def choose_people(people: list[Person], rule: str) -> list[Person]:
    """Who to reconstruct when a source lists several people: "all", "first" (SPIN's demo) or
    "most_confident" (HMR's demo: highest mean keypoint confidence, the first of equals)."""
    if rule == "all" or not people:
        return people
    if rule == "first":
        return people[:1]
    if rule == "most_confident":
        return [max(people, key=lambda p: p.score)]
    raise ValueError(f"unknown person choice {rule!r}")


class PersonSource:
    """Gives the people of each frame; ``name`` is what the NPZ records as ``detector``."""

    name: ClassVar[str]
    on_device: ClassVar[bool] = False  # a network: the pipeline runs ``find`` in its detect stage

    def prepare(self, frame: Frame) -> Any:
        """The frame's CPU work before ``find`` (decode thread)."""
        return frame

    def find(self, prepared: list[Any]) -> list[list[Person]]:
        """The people of each prepared frame, in order."""
        return [self.people(frame) for frame in prepared]

    def metadata(self) -> dict[str, Any]:
        """Per-input NPZ fields that describe the source, besides its ``name``."""
        return {}

    def people(self, frame: Frame) -> list[Person]:
        raise NotImplementedError


class WholeFrame(PersonSource):
    """The whole frame is one person (the image is a person crop)."""

    name = "full"

    def people(self, frame: Frame) -> list[Person]:
        h, w = frame.image.shape[:2]
        return [Person(np.array([0.0, 0.0, w, h]), "frame")]


def _frame_stem(frame: Frame) -> tuple[str, int | None]:
    """(file stem, video frame index or None) of a frame name: "x.jpg" or "clip.mp4#12"."""
    name, sep, index = frame.name.rpartition("#")
    if sep and index.isdigit():
        return Path(name).stem, int(index)
    return Path(frame.name).stem, None


class OpenPoseJson(PersonSource):
    """People from OpenPose JSON output: one file, or a folder of per-frame files."""

    name = "openpose"

    def __init__(self, path: str | Path, threshold: float = OPENPOSE_THRESHOLD):
        self.path = Path(path)
        self.threshold = threshold
        if not self.path.exists():
            raise MeshcliError(self.path, "OpenPose JSON file or folder not found (from --openpose)",
                               "give OpenPose's --write_json output: a file, or the folder of per-frame files")
        self._single = self._read(self.path) if self.path.is_file() else None

    def _file_for(self, frame: Frame) -> Path:
        stem, index = _frame_stem(frame)
        names = ([f"{stem}_{index:012d}_keypoints.json"] if index is not None
                 else [f"{stem}_keypoints.json", f"{stem}.json"])
        for name in names:
            if (self.path / name).is_file():
                return self.path / name
        raise MeshcliError(self.path / names[0], f"no OpenPose JSON for frame {frame.name}",
                           "run OpenPose with --write_json on the same input, or use --detector")

    def _read(self, path: Path) -> list[Person]:
        try:
            data = json.loads(path.read_text())
            people = data["people"]
            out = []
            for p in people:
                kps = p.get("pose_keypoints_2d", p.get("pose_keypoints"))
                if kps is None:
                    raise KeyError("pose_keypoints_2d")
                person = keypoint_person(np.asarray(kps, dtype=np.float64), self.threshold)
                if person is not None:
                    out.append(person)
            return out
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise MeshcliError(path, f"not an OpenPose keypoint JSON ({type(err).__name__}: {err})",
                               "expected {\"people\": [{\"pose_keypoints_2d\": [x, y, c, ...]}, ...]}") from None

    def people(self, frame: Frame) -> list[Person]:
        if self._single is not None:
            return list(self._single)
        return self._read(self._file_for(frame))


class BoxesJson(PersonSource):
    """People from a JSON file of per-frame boxes (format in the module docstring)."""

    name = "boxes"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise MeshcliError(self.path, "boxes JSON file not found (from --boxes)", "check the path")
        try:
            data = json.loads(self.path.read_text())
            if "bbox" in data:
                self.every: list[Person] | None = self._boxes([data["bbox"]], "xywh")
                self.frames: dict[str, list[Person]] = {}
            else:
                fmt = data.get("format", "xywh")
                if fmt not in ("xywh", "xyxy"):
                    raise ValueError(f"format {fmt!r} is not xywh or xyxy")
                self.every = None
                self.frames = {str(k): self._boxes(v, fmt) for k, v in data["frames"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise MeshcliError(self.path, f"not a boxes JSON ({type(err).__name__}: {err})",
                               'expected {"frames": {"<file name or frame index>": [[x, y, w, h], ...]}} '
                               "(see `meshcli body --help`)") from None

    @staticmethod
    def _boxes(rows, fmt: str) -> list[Person]:
        people = []
        for row in rows:
            v = np.asarray(row, dtype=np.float64)
            if v.shape not in ((4,), (5,)) or not np.isfinite(v).all():
                raise ValueError(f"box {row!r} is not 4 numbers (+ an optional score)")
            x0, y0, a, b = v[:4]
            box = np.array([x0, y0, x0 + a, y0 + b] if fmt == "xywh" else [x0, y0, a, b])
            if box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"box {row!r} has no area")
            people.append(Person(box, "box", None, float(v[4]) if len(v) == 5 else 1.0))
        return people

    def people(self, frame: Frame) -> list[Person]:
        if self.every is not None:
            return list(self.every)
        for key in (frame.name, str(frame.source_position)):
            if key in self.frames:
                return list(self.frames[key])
        return []


class FixedBox(PersonSource):
    """One person in every frame, in the box given as x, y, w, h (``--bbox``)."""

    name = "bbox"

    def __init__(self, xywh):
        x, y, w, h = parse_floats(xywh, 4, "--bbox", "139.4,102.3,222.4,241.6")
        if not (w > 0 and h > 0):
            raise MeshcliError(None, f"--bbox {xywh} has no area", "give x,y,width,height with a positive size")
        self.box = np.array([x, y, x + w, y + h])

    def people(self, frame: Frame) -> list[Person]:
        return [Person(self.box.copy(), "box")]


class HogPeople(PersonSource):
    """People from OpenCV's HOG + linear SVM pedestrian detector (Dalal and Triggs), built into OpenCV.

    The frame is shrunk so its longer side is ``long_side`` pixels (the detector's
    64x128 window then finds people from about a quarter of that side upwards, at
    a tenth of a second per frame); boxes scoring below ``min_score`` are left
    out, and a box mostly inside a larger one (a part of the same person) too.
    """

    name = "hog"

    def __init__(self, long_side: int = 480, min_score: float = 0.3, inside: float = 0.6):
        self.long_side, self.min_score, self.inside = long_side, min_score, inside
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def people(self, frame: Frame) -> list[Person]:
        image = frame.image
        scale = min(1.0, self.long_side / max(image.shape[:2]))
        small = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        found, scores = self.hog.detectMultiScale(small, winStride=(8, 8), padding=(16, 16), scale=1.05)
        if len(found) == 0:
            return []
        boxes = np.asarray(found, np.float64).reshape(-1, 4) / scale
        boxes[:, 2:] += boxes[:, :2]
        scores = np.asarray(scores, np.float64).ravel()
        keep = scores >= self.min_score
        boxes, scores = boxes[keep], scores[keep]
        area = (boxes[:, 2:] - boxes[:, :2]).prod(1)
        people: list[Person] = []
        for k in np.argsort(-area, kind="stable"):  # larger boxes first: they swallow parts of the same person
            if people:
                kept = np.array([p.box for p in people])
                overlap = np.minimum(boxes[k, 2:], kept[:, 2:]) - np.maximum(boxes[k, :2], kept[:, :2])
                if (np.clip(overlap, 0, None).prod(1) / area[k] > self.inside).any():
                    continue
            people.append(Person(boxes[k], "box", None, float(scores[k])))
        return people


class FrameNetwork(Protocol):
    """A predictor in the pipeline's three steps (``meshcli.methods.base.Predictor``)."""

    def preprocess(self, frame: Frame) -> Any: ...

    def infer(self, prepared: list[Any]) -> list[Any]: ...

    def postprocess(self, prepared: Any, raw: Any) -> FrameResult: ...


class NetworkPersonSource(PersonSource):
    """People from a network run on device batches of frames (the pipeline's detect stage).

    ``runs_on(frame)`` says whether the network sees a frame; the others get
    ``between(frame)``. Both are called in frame order, so a subclass can carry
    people from detected frames to the frames between them.
    """

    on_device = True

    every = 1  # the network sees every N-th frame (``--detect-every``; the body method carries people between)

    def __init__(self, network: FrameNetwork):
        self.network = network

    def runs_on(self, frame: Frame) -> bool:
        return frame.index % self.every == 0

    def between(self, frame: Frame) -> list[Person]:
        return []

    def prepare(self, frame: Frame) -> tuple[Frame, Any]:
        return frame, (self.network.preprocess(frame) if self.runs_on(frame) else None)

    def people(self, frame: Frame) -> list[Person]:
        return self.find([self.prepare(frame)])[0]

    def find(self, prepared: list[tuple[Frame, Any]]) -> list[list[Person]]:
        inputs = [p for _, p in prepared if p is not None]
        raws = self.network.infer(inputs) if inputs else []
        found = iter([self.people_in(self.network.postprocess(p, raw)) for p, raw in zip(inputs, raws)])
        return [next(found) if p is not None else self.between(frame) for frame, p in prepared]

    def people_in(self, result: FrameResult) -> list[Person]:
        raise NotImplementedError


class DekrPeople(NetworkPersonSource):
    """People from DEKR's bottom-up multi-person COCO keypoints (``meshcli.methods.dekr``).

    DEKR regresses every joint of a person, so all 17 count; people scoring
    below ``min_score`` (DEKR's own drawing threshold by default) are left out.
    The network may run at a smaller input than its own (``--detect-size``):
    boxes need only coarse joints, and DEKR maps them back to image pixels.
    """

    name = "dekr"

    def __init__(self, network: FrameNetwork, min_score: float = 0.3):
        super().__init__(network)
        self.min_score = min_score

    def metadata(self) -> dict[str, Any]:
        return {"detect_size": self.network.input_size}

    def people_in(self, result: FrameResult) -> list[Person]:
        rows = result.rows
        out = []
        for kps, score, box in zip(rows["keypoints"], rows["scores"], rows["bbox"]):
            if float(score) >= self.min_score and (box[2:] > box[:2]).any():
                kps = np.asarray(kps, np.float64).copy()
                kps[:, 2] = 1.0
                out.append(Person(np.asarray(box, np.float64), "keypoints", kps, float(score)))
        return out
