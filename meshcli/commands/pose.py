"""`meshcli pose`: bottom-up multi-person 2D keypoints (DEKR)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from .. import weights as store
from ..device import resolve_device
from ..errors import MeshcliError
from ..io.sinks import JsonSink
from .common import (
    Annotate,
    BatchSize,
    Device,
    Inputs,
    Out,
    Quiet,
    RandomWeights,
    Variant,
    Weights,
    batch_command,
    choose_method,
    guarded,
    hand_to_engine,
)

COCO_ID = re.compile(r"^0*(\d+)$")


def coco_sink(module):
    """DIR/<input>.coco.json in COCO results format; image_id from COCO file names, else the frame index."""
    def factory(inp, out_dir: Path, fields):
        def records(frame, result):
            stem = Path(frame.name).stem if not inp.is_video else ""
            match = COCO_ID.match(stem)
            image_id = int(match.group(1)) if match else frame.index
            return module.coco_results(result, image_id)
        return JsonSink(out_dir / f"{inp.name}.coco.json", records)
    return factory


def rescore_options(variant: str, rescore: bool, rescore_weights: Path | None, random_weights: bool,
                    required: bool = True) -> dict:
    """DEKR's rescoring net: the given file, else the store's for the variant's dataset.

    Untrained runs rescore with an untrained net. When ``required`` is False (benchmarks) a
    missing store file turns rescoring off instead of failing.
    """
    if not rescore or random_weights:
        return {"rescore": rescore, "rescore_weights": None}
    entry = store.entry_for("dekr", f"rescore-{variant.split('-', 1)[1]}")
    if rescore_weights is None and not entry.present():
        if not required:
            return {"rescore": False, "rescore_weights": None}
        raise MeshcliError(entry.path, "DEKR's rescoring net is not in the weights store",
                           f"{entry.how_to_get()}; or pass --rescore-weights PATH, or --no-rescore")
    return {"rescore": True, "rescore_weights": store.resolve("dekr", entry.variant, rescore_weights, False)}


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise MeshcliError(None, f"--scales {text!r} is not a comma-separated list of numbers",
                           "e.g. --scales 0.5,1,2") from None
    if 1.0 not in scales or any(s <= 0 for s in scales):
        raise MeshcliError(None, f"--scales {text!r} must be positive and include 1 (the reference scale)",
                           "e.g. --scales 0.5,1,2")
    return scales


def register(app: typer.Typer) -> None:
    @app.command(no_args_is_help=True)
    @guarded
    @batch_command
    def pose(
        inputs: Inputs,
        method: Annotated[str, typer.Option("--method", "-m", help="dekr")] = "dekr",
        variant: Variant = None,
        weights: Weights = None,
        rescore_weights: Annotated[Path | None, typer.Option(
            "--rescore-weights", help="DEKR's rescoring net (final_rescore_*_kpt.pth); default: the store's.",
            show_default=False)] = None,
        rescore: Annotated[bool, typer.Option("--rescore/--no-rescore",
                                              help="Rescore people with DEKR's OKS net (official default).")] = True,
        scales: Annotated[str, typer.Option(
            "--scales", help="Test scales, e.g. 0.5,1,2 (official multi-scale).")] = "1",
        nms_threshold: Annotated[float | None, typer.Option(
            "--nms-threshold", help="Pose NMS threshold; default 0.05 single-scale, 0.15 multi-scale "
            "(the official README's multi-scale setting).", show_default=False)] = None,
        flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Flip test (official default).")] = True,
        out: Out = Path("meshcli_out"),
        batch_size: BatchSize = 4,
        device: Device = "auto",
        random_weights: RandomWeights = False,
        annotate: Annotate = True,
        quiet: Quiet = False,
    ) -> None:
        """Multi-person 2D keypoints: annotated image/video, NPZ and COCO results JSON per input."""
        module, variant, path = choose_method("pose", method, variant, weights, random_weights)
        predictor = module.Predictor(path, variant=variant, device=resolve_device(device),
                                     scales=parse_scales(scales), flip=flip, nms_threshold=nms_threshold,
                                     **rescore_options(variant, rescore, rescore_weights, random_weights))
        hand_to_engine(predictor, out, batch_size, annotate, [coco_sink(module)])
