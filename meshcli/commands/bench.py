"""`meshcli bench`: per-stage throughput, end-to-end frames/s and peak memory of a method on real input."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .. import weights as store
from ..device import resolve_device
from ..methods import METHODS, method_module
from ..pipeline import Pipeline, Progress
from .common import (
    Annotate,
    BatchSize,
    Device,
    RandomWeights,
    Variant,
    Weights,
    guarded,
)
from .pose import rescore_options


def benchmark(inputs: list[str], method: str, variant: str | None = None, weights: Path | None = None,
              random_weights: bool = False, batch_size: int = 8, device: str = "auto",
              options: dict | None = None, annotate: bool = True, progress: bool = False) -> dict:
    """Run the whole pipeline (outputs to a temporary folder) and return its timings."""
    module = method_module(method)
    variant = variant or next(iter(module.VARIANTS))
    path = store.resolve(method, variant, weights, random_weights)
    dev = resolve_device(device)
    options = dict(options or {})
    if method == "dekr":  # DEKR rescores with the store's net when it is there
        options = {**rescore_options(variant, True, None, random_weights, required=False), **options}
    predictor = module.Predictor(path, variant=variant, device=dev, **options)
    with tempfile.TemporaryDirectory(prefix="meshcli-bench-") as out:
        summary = Pipeline(predictor, out, batch_size=batch_size, annotate=annotate,
                           progress=Progress(enabled=progress)).run(inputs)
    frames = summary.times.frames
    return {
        "method": method, "variant": variant, "device": str(dev), "batch_size": batch_size, "annotate": annotate,
        "untrained": path is None, "inputs": inputs, "frames": frames,
        "settings": {k: v for k, v in predictor.metadata().items() if isinstance(v, (bool, int, float, str))},
        "failures": [f.line() for f in summary.failures],
        "stages": {stage: {"seconds": round(sec, 4), "ms_per_frame": round(1000 * sec / max(frames, 1), 2),
                           "fps": round(frames / sec, 2) if sec > 0 else None}
                   for stage, sec in summary.times.seconds.items()},
        "wall_seconds": round(summary.times.wall, 3),
        "end_to_end_fps": round(frames / summary.times.wall, 3) if summary.times.wall else None,
        "peak_rss_mb": round(summary.peak_rss_mb, 1),
        "peak_cuda_mb": round(summary.peak_cuda_mb, 1),
    }


def register(app: typer.Typer) -> None:
    @app.command(no_args_is_help=True)
    @guarded
    def bench(
        inputs: Annotated[list[str], typer.Argument(help="Image, folder or video to run on.")],
        method: Annotated[str, typer.Option("--method", "-m", help=", ".join(METHODS))],
        variant: Variant = None,
        weights: Weights = None,
        random_weights: RandomWeights = False,
        smpl: Annotated[Path | None, typer.Option("--smpl", help="SMPL model (body methods).",
                                                  show_default=False)] = None,
        batch_size: BatchSize = 8,
        device: Device = "auto",
        annotate: Annotate = True,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Per-stage throughput (decode, preprocess, model, postprocess, render, encode) and peak memory.

        Stages run in overlapping threads, so end-to-end frames/s is set by the slowest stage, not their sum.
        Body methods crop the whole frame as one person here (no detector), so their numbers are the
        method's own; DEKR rescores when its rescoring net is in the weights store.
        """
        options = {"smpl": smpl} if smpl is not None else {}
        result = benchmark(inputs, method, variant, weights, random_weights, batch_size, device, options,
                           annotate, progress=not as_json)
        if as_json:
            typer.echo(json.dumps(result, indent=1))
            if result["failures"]:
                raise typer.Exit(1)
            return
        table = Table(title=f"meshcli bench: {method} {result['variant']} on {result['device']}, "
                            f"batch {batch_size}, {result['frames']} frames"
                            + (" (untrained weights)" if result["untrained"] else ""))
        for col in ("stage", "seconds", "ms/frame", "frames/s"):
            table.add_column(col, justify="right" if col != "stage" else "left")
        for stage, row in result["stages"].items():
            table.add_row(stage, f"{row['seconds']:.3f}", f"{row['ms_per_frame']:.1f}",
                          f"{row['fps']:.1f}" if row["fps"] else "-")
        table.add_row("end to end", f"{result['wall_seconds']:.3f}",
                      f"{1000 * result['wall_seconds'] / max(result['frames'], 1):.1f}",
                      f"{result['end_to_end_fps'] or 0:.2f}", style="bold")
        console = Console()
        console.print(table)
        console.print(f"peak memory: {result['peak_rss_mb']:.0f} MB RSS"
                      + (f", {result['peak_cuda_mb']:.0f} MB CUDA" if result["peak_cuda_mb"] else ""))
        for failure in result["failures"]:
            console.print(f"[red]error:[/red] {failure}")
        if result["failures"]:
            raise typer.Exit(1)
