"""The method registry: every method meshcli runs, described once.

A ``MethodSpec`` names a method's task, how its inputs are decoded, its
predictor class and how a downloaded checkpoint is checked (or converted) on
import. Classes and functions are named as ``"module:attribute"`` and imported
on first use, so listing methods (``meshcli --help``) loads no network code.
Variants and their weights records come from ``meshcli.records``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import records
from ..errors import MeshcliError

TASKS = ("pose", "body", "hand")


def _attribute(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    task: str  # "pose" | "body" | "hand": the CLI verb
    predictor: str  # "module:Class" of its Predictor subclass
    # "module:function" (src, variant) checking a checkpoint against the architecture; stored as is
    validator: str | None = None
    # "module:function" (src, dst, variant) checking a checkpoint and writing the store's converted copy
    converter: str | None = None
    reader: str = "rgb"  # "rgb" (images, videos) or "depth" (depth images, .npy)
    options: tuple[str, ...] = ()  # the method's own options (keyword arguments of meshcli.load)

    @property
    def variants(self) -> tuple[str, ...]:
        return records.variants(self.name)

    def choose_variant(self, variant: str | None) -> str:
        """``variant``, or the default (the first) when None; an unknown name is a one-line error."""
        name = variant or self.variants[0]
        if name not in self.variants:
            raise MeshcliError(None, f"unknown --variant {name} for {self.name}",
                               f"use one of {', '.join(self.variants)}")
        return name

    def record(self, variant: str | None = None) -> records.WeightsRecord:
        return records.record_for(self.name, self.choose_variant(variant))

    def predictor_class(self):
        return _attribute(self.predictor)

    def store_checkpoint(self, src: Path, dst: Path, variant: str, copy: Callable[[Path, Path], None]) -> None:
        """Check ``src`` for ``variant`` and write what the store keeps to ``dst``."""
        if self.converter is not None:
            _attribute(self.converter)(src, dst, variant)  # validates while converting
        else:
            _attribute(self.validator)(src, variant)
            copy(src, dst)


# Options every body method takes; ``detector``, ``openpose``, ``boxes`` and ``bbox`` choose the people,
# ``detect_size`` is the DEKR detector's input size.
BODY_OPTIONS = ("smpl", "detector", "detect_size", "openpose", "boxes", "save_vertices", "renderer", "detect_every")

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("dekr", "pose", "meshcli.methods.dekr:DekrPredictor", validator="meshcli.methods.dekr:validate_checkpoint",
               options=("scales", "flip", "nms_threshold", "rescore", "rescore_weights", "person_thr", "kpt_thr",
                        "input_size", "backend")),
    MethodSpec("hmr", "body", "meshcli.methods.hmr:HmrPredictor", converter="meshcli.methods.hmr:convert_checkpoint",
               options=BODY_OPTIONS),
    MethodSpec("spin", "body", "meshcli.methods.spin:SpinPredictor", validator="meshcli.methods.spin:validate_checkpoint",
               options=BODY_OPTIONS),
    MethodSpec("i2l", "body", "meshcli.methods.i2l:I2LPredictor", validator="meshcli.methods.i2l:validate_checkpoint",
               options=BODY_OPTIONS + ("bbox", "stage", "focal", "principal_point", "root_depth")),
    MethodSpec("srn", "hand", "meshcli.methods.srn:SrnPredictor", validator="meshcli.methods.srn:validate_checkpoint",
               reader="depth", options=("intrinsics", "depth_format", "depth_scale", "centre", "centres",
                                        "centres_format", "cube", "mirror", "order")),
)}


def spec(name: str, task: str | None = None) -> MethodSpec:
    """The method called ``name`` (of ``task`` when given); unknown names are one-line errors."""
    known = methods_for(task) if task else list(METHODS)
    if name not in known:
        where = f"a {task} method" if task else "a method meshcli knows"
        raise MeshcliError(None, f"--method {name} is not {where}", f"use one of {', '.join(known)}")
    return METHODS[name]


def methods_for(task: str) -> list[str]:
    return [m for m, s in METHODS.items() if s.task == task]
