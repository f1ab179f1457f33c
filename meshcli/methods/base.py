"""What every method provides, so that one pipeline can run them all.

A method module (``meshcli/methods/<name>.py``) holds its network, the mapping
from the official checkpoint onto it, and its pre/post-processing. It exposes a
``Predictor`` subclass, registered in ``meshcli.methods.METHODS``; the pipeline
drives it in steps so that each can be timed and overlapped:

    prepared = predictor.preprocess(frame, people)   # CPU, one frame
    raws     = predictor.infer([prepared, ...])      # device batch, same order
    result   = predictor.postprocess(prepared, raw)  # -> FrameResult
    image    = predictor.annotate(frame.image, result)  # drawing, render thread

``infer`` may split, pad or regroup the batch internally (DEKR groups frames of
equal input size, body methods stack person crops of many frames); it returns
one raw output per prepared item, in order. A body method whose person source
is a network (``detector``) gets each frame's people from the pipeline's detect
stage; other predictors get ``people=None``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import MeshcliError
from ..io.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, read_rgb
from ..people import PersonSource
from ..types import Frame, FrameResult, Person, WeightsInfo
from . import METHODS


class Predictor:
    """Base class of a method's predictor; see the module docstring."""

    task: ClassVar[str]  # "pose" | "body" | "hand": the CLI verb
    method: ClassVar[str]  # "dekr", "hmr", ...
    result_type: ClassVar[type[FrameResult]] = FrameResult
    # what folders and globs pick up
    file_extensions: ClassVar[frozenset[str]] = frozenset(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS)

    variant: str
    device: torch.device
    weights: WeightsInfo
    detector: PersonSource | None = None  # a network person source: run by the pipeline's detect stage
    half: bool = False  # networks run under fp16 autocast (--half, CUDA only; set by meshcli.load)

    def read_image(self, path: Path) -> np.ndarray:
        """Decode one image file into what ``preprocess`` takes."""
        return read_rgb(path)

    def preprocess(self, frame: Frame, people: list[Person] | None = None) -> Any:
        raise NotImplementedError

    def infer(self, prepared: list[Any]) -> list[Any]:
        raise NotImplementedError

    def postprocess(self, prepared: Any, raw: Any) -> FrameResult:
        raise NotImplementedError

    def annotate(self, image: np.ndarray, result: FrameResult) -> np.ndarray:
        """Return a copy of ``image`` (HxWx3 uint8 RGB) with the result drawn on it."""
        raise NotImplementedError

    def release_render_resources(self) -> None:
        """Free what ``annotate`` holds for the calling thread (an OpenGL context, say); called by the
        pipeline's render thread when a run ends. ``annotate`` must work again afterwards."""

    def empty_rows(self) -> dict[str, np.ndarray]:
        """Zero-row arrays of every NPZ row key, so an input with nobody in it still has all keys."""
        return {}

    def metadata(self) -> dict[str, Any]:
        """Per-input NPZ fields that describe the method (not the input)."""
        meta = {"method": self.method, "variant": self.variant}
        meta.update(self.weights.npz_fields())
        meta["untrained"] = self.weights.untrained
        meta["half"] = self.half
        return meta

    def __call__(self, frames: list[Frame]) -> list[FrameResult]:
        """Run the whole method on a list of frames in this thread (the detector first, if any)."""
        people: list[list[Person] | None] = [None] * len(frames)
        if self.detector is not None and frames:
            people = self.detector.find([self.detector.prepare(f) for f in frames])
        prepared = [self.preprocess(f, p) for f, p in zip(frames, people)]
        raws = self.infer(prepared) if prepared else []
        return [self.postprocess(p, r) for p, r in zip(prepared, raws)]

    def predict(self, images) -> FrameResult | list[FrameResult]:
        """Results for one image (HxWx3 uint8 RGB, or an HxW depth map in mm for hand methods) or a list.

        A single image gives one result, a list a list; each result's ``plot()`` draws it on its image.
        """
        single = isinstance(images, np.ndarray)
        frames = [Frame(np.asarray(image), k, f"image{k}") for k, image in enumerate([images] if single else images)]
        depth = METHODS[self.method].reader == "depth"
        for image in (frame.image for frame in frames):
            if image.ndim != 2 if depth else image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                wanted = "HxW depth maps in mm" if depth else "HxWx3 uint8 RGB images"
                raise MeshcliError(None, f"{self.method} takes {wanted}, not a {image.dtype} array of shape "
                                         f"{image.shape}", f"give {wanted}")
        results = self(frames)
        for frame, result in zip(frames, results):
            result.image, result.annotator = frame.image, self.annotate
        return results[0] if single else results
