"""What every method provides, so that one pipeline can run them all.

A method module (``meshcli/methods/<name>.py``) holds its network, the mapping
from the official checkpoint onto it, and its pre/post-processing. It exposes a
``Predictor`` subclass; the pipeline drives it in three steps so that each can
be timed and overlapped:

    prepared = predictor.preprocess(frame)       # CPU, one frame, worker thread
    raws     = predictor.infer([prepared, ...])  # device batch, same order
    result   = predictor.postprocess(prepared, raw)   # -> FrameResult
    image    = predictor.annotate(frame.image, result)  # drawing, render thread

``infer`` may split, pad or regroup the batch internally (DEKR groups frames of
equal input size, body methods stack person crops of many frames); it returns
one raw output per prepared item, in order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import MeshcliError


@dataclass
class Frame:
    """One image of an input, as decoded.

    ``image`` is HxWx3 uint8 RGB for colour inputs, or HxW float32 depth in
    millimetres for depth inputs. ``index`` counts the frames delivered for the input
    (the NPZ's ``frame_index``); a bad file in a folder is skipped and not counted.
    """

    image: np.ndarray
    index: int
    name: str  # file name of this frame (images) or "<video>#<index>"
    time: float | None = None  # seconds from the start, videos only
    position: int | None = None  # place in the input's own list of files; differs from index after a bad file

    @property
    def source_position(self) -> int:
        """Where per-frame side inputs (centres files, boxes by index) look this frame up."""
        return self.index if self.position is None else self.position


@dataclass
class FrameResult:
    """What a method found in one frame.

    ``rows`` holds per-person arrays with a common leading dimension P (P may
    be 0). Sinks stack rows of all frames of an input into the NPZ and add a
    ``frame_index`` column. ``info`` holds frame-level values that are not
    per person (e.g. a status string).
    """

    frame_index: int
    rows: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_people(self) -> int:
        return len(next(iter(self.rows.values()))) if self.rows else 0


@dataclass(frozen=True)
class WeightsInfo:
    """Where a predictor's weights came from: stamped into every output."""

    path: str | None  # None for --random-weights
    sha256: str | None

    @property
    def untrained(self) -> bool:
        return self.path is None

    @classmethod
    def of(cls, path: str | Path | None) -> "WeightsInfo":
        if path is None:
            return cls(None, None)
        return cls(str(path), file_sha256(path))

    def npz_fields(self, prefix: str = "weights") -> dict[str, Any]:
        return {
            prefix: "untrained (random weights)" if self.untrained else Path(self.path).name,
            f"{prefix}_sha256": self.sha256 or "",
        }


def choose_variant(variants: dict[str, dict], variant: str | None, method: str) -> str:
    """``variant``, or the method's default (its first) when None; an unknown name is a one-line error."""
    name = variant or next(iter(variants))
    if name not in variants:
        raise MeshcliError(None, f"unknown --variant {name} for {method}", f"use one of {', '.join(variants)}")
    return name


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Predictor:
    """Base class of a method's predictor; see the module docstring."""

    task: ClassVar[str]  # "pose" | "body" | "hand": the CLI verb
    method: ClassVar[str]  # "dekr", "hmr", ...
    input_kind: ClassVar[str] = "rgb"  # "rgb" or "depth": how sources decode frames

    variant: str
    device: torch.device
    weights: WeightsInfo

    def preprocess(self, frame: Frame) -> Any:
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
        return meta

    def __call__(self, frames: list[Frame]) -> list[FrameResult]:
        """Run the whole method on a list of frames (Python API, no threads)."""
        prepared = [self.preprocess(f) for f in frames]
        raws = self.infer(prepared) if prepared else []
        return [self.postprocess(p, r) for p, r in zip(prepared, raws)]
