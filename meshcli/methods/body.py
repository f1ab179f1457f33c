"""What the crop-and-regress body methods (HMR, SPIN) share.

Per frame, ``preprocess`` takes the people the person source found (see
``meshcli.people``; a network source such as DEKR runs in the pipeline's detect
stage) and cuts each person's crop by the method's own rule;
``infer`` stacks the crops of every frame in the batch, runs the network and
SMPL on them together (in chunks), and hands each frame its people back;
``postprocess`` maps cameras and joints to original-image pixels and fills the
NPZ rows. A method subclass provides the crop rule (``crop``), the network and
SMPL step (``regress``) and the camera back to the image (``to_image``).

NPZ rows, one per person per frame:
    bbox (4) person box x0 y0 x1 y1 from the source; crop_box (4) the image
    region the crop covers; score; global_orient (3) and body_pose (69) as
    axis-angle; betas (10); cam (3) the method's own camera; cam_t (3) the
    method's own perspective translation of the mesh, with focal_length (2)
    and principal_point (2) the pinhole camera in original-image pixels in
    which that translation renders the person as the official demo does;
    joints3d (J,3) model space; joints2d (J,2) original-image pixels (the
    method's own projection); vertices (6890,3) model space, with
    ``--save-vertices``. Pixel coordinates are OpenCV's (integers at pixel
    centres), as in ``meshcli.render``.

The overlay draws everyone of a frame in one pass through one camera (focal
``method focal x max(H, W) / crop size``, principal point at the image
centre), each person translated so that camera reproduces the person's own
projection (``meshcli.render.weak_perspective_to_translation``); for a
whole-frame crop this is the official demo's camera.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .. import records
from ..device import resolve_device, to_device
from ..draw import person_colours, track_labels
from ..errors import MeshcliError
from ..io.smplfile import require_smpl
from ..options import check_choice
from ..people import PersonSource, WholeFrame, choose_people, keypoint_person
from ..render import BACKENDS, MeshRenderer, weak_perspective_to_translation
from ..smpl import SMPLModel
from ..types import BodyResult, Frame, Person, WeightsInfo, file_sha256
from . import METHODS
from .base import Predictor

CROP_CHUNK = 64  # crops per network call: bounds device memory whatever the frame batch holds
# rows in original-image terms are float64 (pixels of large images); model outputs stay float32
IMAGE_SPACE = ("bbox", "crop_box", "score", "cam_t", "focal_length", "principal_point", "joints2d")


def resolve_smpl(path: str | Path | None) -> Path:
    """``--smpl`` if given, else the SMPL model imported into the weights store; a clear error if neither."""
    try:
        stored = records.record("smpl").path
    except MeshcliError:  # a manifest without an SMPL entry
        stored = None
    return require_smpl(path, stored)


@dataclass
class PersonCrop:
    """One person's network input and what maps its outputs back to the image."""

    input: np.ndarray  # (3, S, S) float32, normalised as the network expects
    region: np.ndarray  # (4,) x0 y0 x1 y1: the image region the crop covers
    params: dict[str, Any]  # the method's crop parameters (scale, centre, ...)


@dataclass
class BodyFrame:
    """A frame's people, cropped: what ``preprocess`` hands to ``infer``."""

    index: int
    image_size: tuple[int, int]  # (H, W)
    people: list[Person]
    crops: list[PersonCrop]
    image: np.ndarray | None = None  # a frame between detections: cropped in ``infer``, once the frame before is


class BodyPredictor(Predictor):
    """Crop-and-regress body method over a person source; see the module docstring."""

    task = "body"
    result_type = BodyResult
    focal: ClassVar[float]  # the method's camera focal length, in crop pixels
    # OpenPose files hold several people; the official demos reconstruct one of them.
    openpose_choice: ClassVar[str] = "all"  # "all" | "most_confident" | "first"
    meshes_in_camera_space: ClassVar[bool] = False  # a result's vertices: in model space, placed by cam_t

    def __init__(self, weights: str | Path | None, variant: str | None = None,
                 device: str | torch.device = "cpu", *, smpl: str | Path | SMPLModel | None = None,
                 people: PersonSource | None = None, save_vertices: bool = False, renderer: str = "auto",
                 detect_every: int = 1):
        self.renderer_choice = check_choice(renderer, BACKENDS, "--renderer")
        if detect_every < 1:
            raise MeshcliError(None, f"--detect-every {detect_every} is not a positive number of frames",
                               "use 1 (every frame) or more")
        self.detect_every = detect_every
        self.variant = METHODS[self.method].choose_variant(variant)
        record = records.record_for(self.method, self.variant)
        self.crop_size = record.input_size
        self.joint_names = record.joint_names
        self.device = device if isinstance(device, torch.device) else resolve_device(str(device))
        self.weights = WeightsInfo.of(self._weights_file(weights))
        if not isinstance(smpl, SMPLModel):
            smpl = resolve_smpl(smpl)
            self.smpl_name, self.smpl_sha256 = smpl.name, file_sha256(smpl)
            smpl = SMPLModel.from_file(smpl)
        else:
            self.smpl_name, self.smpl_sha256 = "(given)", ""
        self.smpl = smpl.to(self.device)
        self.source = people or WholeFrame()
        self.detector = self.source if self.source.on_device else None
        self.save_vertices = save_vertices
        self._renderer: MeshRenderer | None = None  # made at the first annotate: an OpenGL probe costs time
        if self.detector is not None:
            self.detector.every = detect_every  # the network skips the frames between
        self._last: tuple[BodyFrame, dict[str, np.ndarray]] | None = None  # the frame ``infer`` ran last
        self._renderer_lock = threading.Lock()  # annotate workers ask for it at once: one renderer for all

    @property
    def renderer_used(self) -> MeshRenderer | None:
        """The overlay renderer, once ``annotate`` has made it."""
        return self._renderer

    @property
    def renderer(self) -> MeshRenderer:
        with self._renderer_lock:
            if self._renderer is None:
                self._renderer = MeshRenderer(self.smpl.faces, backend=self.renderer_choice)
            return self._renderer

    # -- what a method provides ------------------------------------------------------------------

    def _weights_file(self, weights: str | Path | None) -> str | Path | None:
        """The file whose name and sha256 are stamped into outputs."""
        return weights

    def crop(self, image: np.ndarray, person: Person) -> PersonCrop:
        raise NotImplementedError

    def regress(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Crops (N,3,S,S) on the device -> per-person tensors: global_orient (N,3), body_pose (N,69),
        betas (N,10), cam (N,3), joints3d (N,J,3), vertices (N,6890,3), and whatever ``to_image`` needs."""
        raise NotImplementedError

    def to_image(self, crop: PersonCrop, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One person's outputs -> joints2d (J,2), and cam_t (3), focal_length (2), principal_point (2):
        the method's own perspective camera, carried from the crop to the original image."""
        raise NotImplementedError

    # -- the pipeline steps ----------------------------------------------------------------------
    def image_joints(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        """(P, J, 2) each person's joints in image pixels."""
        return rows["joints2d"]

    def image_keypoints(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        """(P, J, 3) ``image_joints`` with a score of 1 each: what carries people to the next frame and what
        the tracker compares them by."""
        joints = self.image_joints(rows)
        return np.concatenate([joints, np.ones((*joints.shape[:2], 1))], -1)

    def preprocess(self, frame: Frame, people: list[Person] | None = None) -> BodyFrame:
        if frame.index % self.detect_every:  # between detections: the people come from the frame before
            return BodyFrame(frame.index, frame.image.shape[:2], [], [], image=frame.image)
        if people is None:
            people = self.source.people(frame)
        if self.source.name == "openpose":
            people = choose_people(people, self.openpose_choice)
        crops = [self.crop(frame.image, p) for p in people]
        return BodyFrame(frame.index, frame.image.shape[:2], people, crops)

    def infer(self, prepared: list[BodyFrame]) -> list[dict[str, np.ndarray]]:
        """Frames between detections wait for the frame before them; the others run together."""
        raws: list[dict[str, np.ndarray]] = []
        ready = 0  # prepared[ready:] have not run yet
        for k, frame in enumerate(prepared):
            if frame.image is not None:
                raws += self._regress_frames(prepared[ready:k])
                ready = k
                if k:
                    self._last = prepared[k - 1], raws[k - 1]
                self._carry(frame)
        raws += self._regress_frames(prepared[ready:])
        if prepared:
            self._last = prepared[-1], raws[-1]
        return raws

    def _carry(self, frame: BodyFrame) -> None:
        """Crop ``frame``'s people where the previous frame's joints put them."""
        if self._last is not None:
            rows = self.postprocess(*self._last).rows
            for keypoints in self.image_keypoints(rows):
                person = keypoint_person(keypoints, 0.0)
                if person is not None:
                    frame.people.append(person)
                    frame.crops.append(self.crop(frame.image, person))
        frame.image = None

    @torch.no_grad()
    def _regress_frames(self, prepared: list[BodyFrame]) -> list[dict[str, np.ndarray]]:
        crops = [c.input for f in prepared for c in f.crops]
        outs: list[dict[str, np.ndarray]] = []
        for start in range(0, len(crops), CROP_CHUNK):
            x = to_device(torch.from_numpy(np.stack(crops[start:start + CROP_CHUNK])), self.device)
            outs.append({k: v.float().cpu().numpy() for k, v in self.regress(x).items()})
        if outs:
            merged = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
        else:
            merged = {}
        raws, start = [], 0
        for f in prepared:
            n = len(f.crops)
            raws.append({k: v[start:start + n] for k, v in merged.items()})
            start += n
        return raws

    def postprocess(self, prepared: BodyFrame, raw: dict[str, np.ndarray]) -> BodyResult:
        n = len(prepared.crops)
        if n == 0:
            return BodyResult(prepared.index, self.empty_rows())
        image = [self.to_image(c, {k: v[i] for k, v in raw.items()}) for i, c in enumerate(prepared.crops)]
        rows = {
            "bbox": np.stack([p.box for p in prepared.people]).astype(np.float64),
            "crop_box": np.stack([c.region for c in prepared.crops]).astype(np.float64),
            "score": np.array([p.score for p in prepared.people], np.float64),
            "global_orient": raw["global_orient"], "body_pose": raw["body_pose"], "betas": raw["betas"],
            "cam": raw["cam"],
            **{k: np.stack([im[k] for im in image]).astype(np.float64)
               for k in ("cam_t", "focal_length", "principal_point")},
            "joints3d": raw["joints3d"],
            "joints2d": np.stack([im["joints2d"] for im in image]).astype(np.float64),
        }
        if self.save_vertices:
            rows["vertices"] = raw["vertices"]
        return BodyResult(prepared.index, rows, vertices=raw["vertices"])

    def empty_rows(self) -> dict[str, np.ndarray]:
        j = len(self.joint_names)
        rows = {"bbox": (4,), "crop_box": (4,), "score": (), "global_orient": (3,), "body_pose": (69,),
                "betas": (10,), "cam": (3,), "cam_t": (3,), "focal_length": (2,), "principal_point": (2,),
                "joints3d": (j, 3), "joints2d": (j, 2)}
        if self.save_vertices:
            rows["vertices"] = (6890, 3)
        return {k: np.zeros((0, *s), np.float64 if k in IMAGE_SPACE else np.float32) for k, s in rows.items()}

    def release_render_resources(self) -> None:
        if self._renderer is not None:
            self._renderer.close()

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta.update(self.source.metadata())
        meta.update({"detector": self.source.name, "smpl": self.smpl_name,
                     "smpl_sha256": self.smpl_sha256,
                     "renderer": self._renderer.backend if self._renderer is not None else "none (no overlay drawn)",
                     "joint_names": np.array(self.joint_names), "crop_size": self.crop_size})
        return meta

    def frame_camera(self, image_size: tuple[int, int]) -> tuple[float, np.ndarray]:
        """(focal, principal point) of the one camera the overlay renders a frame's people with."""
        h, w = image_size
        return self.focal * max(h, w) / self.crop_size, np.array([(w - 1) / 2, (h - 1) / 2])

    def shared_translations(self, rows: dict[str, np.ndarray], image_size: tuple[int, int]) -> np.ndarray:
        """Each person's translation (P, 3) in ``frame_camera``, from its own camera's rows."""
        focal, principal = self.frame_camera(image_size)
        # the person's camera is the method's crop camera scaled by (crop side in the image) / crop size
        side = self.crop_size * rows["focal_length"].mean(1) / self.focal
        return weak_perspective_to_translation(rows["cam"], rows["principal_point"], side, focal, principal)

    def annotate(self, image: np.ndarray, result: BodyResult) -> np.ndarray:
        if not result.num_people:
            return image.copy()
        focal, principal = self.frame_camera(image.shape[:2])
        cam_t = self.shared_translations(result.rows, image.shape[:2])
        colours = person_colours(result.rows, result.num_people)
        out = self.renderer.render(image, result.vertices, cam_t, focal, principal, colours=colours)
        track_labels(out, result.rows, colours)
        return out
