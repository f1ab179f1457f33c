"""`meshcli pose`: bottom-up multi-person 2D keypoints (DEKR)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..options import TemporalOptions
from .common import (
    Annotate,
    BatchSize,
    Device,
    Half,
    Inputs,
    KeepPartial,
    Out,
    Quiet,
    RandomWeights,
    variant_option,
    Weights,
    batch_command,
    guarded,
    hand_to_engine,
    with_temporal_options,
)


def register(app: typer.Typer) -> None:
    @app.command(no_args_is_help=True)
    @guarded
    @batch_command
    @with_temporal_options
    def pose(
        inputs: Inputs,
        method: Annotated[str, typer.Option("--method", "-m", help="dekr")] = "dekr",
        variant: variant_option('pose') = None,
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
        person_thr: Annotated[float | None, typer.Option(
            "--person-thr", help="Draw people scoring at least this (default 0.3, the official demo's; 0 with "
            "--random-weights, whose scores are meaningless). Drawing only: the NPZ keeps everyone.",
            show_default=False)] = None,
        kpt_thr: Annotated[float, typer.Option(
            "--kpt-thr", help="Draw joints scoring at least this (drawing only).")] = 0.0,
        backend: Annotated[str, typer.Option(
            "--backend", help="Network runtime: torch, or onnxruntime (CPU only, faster there; the "
            'first run of a checkpoint exports it, seconds to a minute; needs pip install "meshcli[onnx]").')] = "torch",
        out: Out = Path("meshcli_out"),
        batch_size: BatchSize = 4,
        device: Device = "auto",
        half: Half = False,
        random_weights: RandomWeights = False,
        annotate: Annotate = True,
        keep_partial: KeepPartial = False,
        quiet: Quiet = False,
        temporal: TemporalOptions | None = None,  # the track/smooth options, from with_temporal_options
    ) -> None:
        """Multi-person 2D keypoints: annotated image/video, NPZ and COCO results JSON per input."""
        from ..api import load, output_sinks
        from ..methods import spec

        spec(method, "pose")
        predictor = load(method, variant, weights, device=device, half=half, random_weights=random_weights,
                         scales=scales, flip=flip, nms_threshold=nms_threshold, rescore=rescore,
                         rescore_weights=rescore_weights, person_thr=person_thr, kpt_thr=kpt_thr, backend=backend)
        hand_to_engine(predictor, out, batch_size, annotate, output_sinks(predictor), keep_partial, temporal)
