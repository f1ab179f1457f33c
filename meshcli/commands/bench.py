"""`meshcli bench`: per-stage throughput, end-to-end frames/s and peak memory of a method on real input."""
from __future__ import annotations

import dataclasses
import json
import statistics
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..methods import METHODS, spec
from ..options import TemporalOptions
from .common import (
    Annotate,
    BatchSize,
    Device,
    Half,
    RenderWorkers,
    RandomWeights,
    Weights,
    guarded,
    temporal_options,
    variant_option,
)


# The pipeline's threads and the stages each one runs in turn (see meshcli.pipeline): the render stage runs on
# the pool of annotate threads; the render thread runs the track/smooth stage and writes what they drew (encode).
THREADS = {"decode": ("decode", "preprocess"), "detect": ("detect",), "model": ("model", "postprocess"),
           "annotate": ("render",), "write": ("track", "encode")}
THREAD_NAMES = {"decode": "the decode thread", "detect": "the detect thread", "model": "the model thread",
                "annotate": "the annotate pool", "write": "the render thread (track/smooth, writing the sinks)"}


def benchmark(inputs: list[str], method: str, variant: str | None = None, weights: Path | None = None,
              random_weights: bool = False, batch_size: int = 8, device: str = "auto",
              options: dict | None = None, annotate: bool = True, progress: bool = False, repeat: int = 1,
              temporal=None, half: bool = False, render_workers: int | None = None) -> dict:
    """Run the whole pipeline ``repeat`` times (outputs to a temporary folder); the median of each timing.

    Each stage's share is its seconds over the wall time; the render stage's seconds are summed over the
    annotate threads, so its share may pass 100 %. A thread (or pool) is busy for its stages' seconds divided by
    its thread count; the busiest bounds the run: the bottleneck is its biggest stage, and
    ``wall_over_bottleneck`` is the wall time over that busy time (1.0: the stages overlap perfectly).
    """
    from ..api import load, run

    options = dict(options or {})
    if method == "dekr":  # DEKR rescores with the store's net when it is there
        options.setdefault("rescore", "auto")
    predictor = load(method, variant, weights, device=device, half=half, random_weights=random_weights, **options)
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="meshcli-bench-") as out:
            runs.append(run(predictor, inputs, out, batch_size=batch_size, annotate=annotate, progress=progress,
                            temporal=temporal, render_workers=render_workers))
    frames = runs[-1].times.frames
    wall = statistics.median(r.times.wall for r in runs)
    seconds = {stage: statistics.median(r.times.seconds[stage] for r in runs) for stage in runs[-1].times.seconds}
    workers = {thread: max(runs[-1].times.workers.get(stages[0], 1), 1) for thread, stages in THREADS.items()}
    busy = {thread: sum(seconds[s] for s in stages) / workers[thread] / wall if wall else 0.0
            for thread, stages in THREADS.items()}
    bottleneck_thread = max(busy, key=busy.get)
    return {
        "method": method, "variant": predictor.variant, "device": str(predictor.device), "half": half,
        "batch_size": batch_size,
        "annotate": annotate, "untrained": predictor.weights.untrained, "inputs": inputs, "frames": frames,
        "repeat": repeat, "temporal": dataclasses.asdict(temporal or TemporalOptions()),
        "settings": {k: v for k, v in predictor.metadata().items() if isinstance(v, (bool, int, float, str))},
        "failures": [f.line() for r in runs for f in r.failures],
        "stages": {stage: {"seconds": round(sec, 4), "ms_per_frame": round(1000 * sec / max(frames, 1), 2),
                           "fps": round(frames / sec, 2) if sec > 0 else None,
                           "share": round(sec / wall, 3) if wall else None}
                   for stage, sec in seconds.items()},
        "threads": {thread: round(share, 3) for thread, share in busy.items()},
        "workers": workers,
        "bottleneck": max(THREADS[bottleneck_thread], key=seconds.get),
        "wall_over_bottleneck": round(1 / busy[bottleneck_thread], 3) if busy[bottleneck_thread] else None,
        "wall_seconds": round(wall, 3),
        "end_to_end_fps": round(frames / wall, 3) if wall else None,
        "peak_rss_mb": round(max(r.peak_rss_mb for r in runs), 1),
        "peak_cuda_mb": round(max(r.peak_cuda_mb for r in runs), 1),
    }


def command_options(app: typer.Typer, method: str, tokens: list[str]) -> tuple[list[str], dict, TemporalOptions]:
    """The inputs, method options and track/smooth options in ``tokens``, parsed by the command that runs
    ``method`` (pose, body or hand), so bench takes every option that command takes; of the method's options
    only those given are returned."""
    task = spec(method).task
    command = typer.main.get_command(app).commands[task]
    ctx = command.make_context(f"meshcli bench --method {method}", list(tokens))
    given = {name: value for name, value in ctx.params.items()
             if name in spec(method).options and getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}
    return ctx.params["inputs"], given, temporal_options(dict(ctx.params))


def register(app: typer.Typer) -> None:
    @app.command(no_args_is_help=True, context_settings={"ignore_unknown_options": True})
    @guarded
    def bench(
        inputs: Annotated[list[str], typer.Argument(
            help="Image, folder or video to run on, and any option of the command that runs the method "
            "(pose, body or hand), e.g. --depth-format nyu.")],
        method: Annotated[str, typer.Option("--method", "-m", help=", ".join(METHODS))],
        variant: variant_option() = None,
        weights: Weights = None,
        random_weights: RandomWeights = False,
        smpl: Annotated[Path | None, typer.Option("--smpl", help="SMPL model (body methods).",
                                                  show_default=False)] = None,
        detector: Annotated[str, typer.Option(
            "--detector", help="Body methods: full (the whole frame is one person: the method's own numbers) or "
            "dekr (DEKR finds the people first: its time is the detect stage).")] = "full",
        batch_size: BatchSize = 8,
        device: Device = "auto",
        half: Half = False,
        annotate: Annotate = True,
        render_workers: RenderWorkers = None,
        repeat: Annotated[int, typer.Option("--repeat", min=1, help="Run N times; report each timing's median.")] = 1,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Per-stage throughput (decode, preprocess, detect, model, postprocess, track, render, encode) and peak memory.

        Stages run in overlapping threads, so end-to-end frames/s is set by the slowest stage, not their sum;
        each stage's share of the wall time is printed and the bottleneck named. The render stage runs on
        --render-workers threads at once: its seconds are their sum (its share may pass 100 %), and it is
        busy for that sum over the thread count.
        Body methods crop the whole frame as one person unless --detector dekr; DEKR rescores when its
        rescoring net is in the weights store.
        """
        inputs, options, temporal = command_options(app, method, inputs)
        if spec(method).task == "body":
            given_people = "boxes" in options or "openpose" in options  # they choose the people instead
            options = {"smpl": smpl, **({} if given_people else {"detector": detector}), **options}
        result = benchmark(inputs, method, variant, weights, random_weights, batch_size, device, options,
                           annotate, progress=not as_json, repeat=repeat, temporal=temporal, half=half,
                           render_workers=render_workers)
        if as_json:
            typer.echo(json.dumps(result, indent=1))
            if result["failures"]:
                raise typer.Exit(1)
            return
        table = Table(title=f"meshcli bench: {method} {result['variant']} on {result['device']}"
                            + (" in fp16" if half else "") + ", "
                            f"batch {batch_size}, {result['frames']} frames"
                            + (f", median of {repeat} runs" if repeat > 1 else "")
                            + (" (untrained weights)" if result["untrained"] else ""))
        for col in ("stage", "seconds", "ms/frame", "frames/s", "share of wall"):
            table.add_column(col, justify="right" if col != "stage" else "left")
        for stage, row in result["stages"].items():
            table.add_row(stage, f"{row['seconds']:.3f}", f"{row['ms_per_frame']:.1f}",
                          f"{row['fps']:.1f}" if row["fps"] else "-",
                          f"{100 * row['share']:.0f} %" if row["share"] is not None else "-",
                          style="bold red" if stage == result["bottleneck"] else None)
        table.add_row("end to end", f"{result['wall_seconds']:.3f}",
                      f"{1000 * result['wall_seconds'] / max(result['frames'], 1):.1f}",
                      f"{result['end_to_end_fps'] or 0:.2f}", "100 %", style="bold")
        console = Console()
        console.print(table)
        thread = next(t for t, stages in THREADS.items() if result["bottleneck"] in stages)
        pool = f" of {result['workers'][thread]} threads" if result["workers"][thread] > 1 else ""
        console.print(f"bottleneck: {result['bottleneck']} ({THREAD_NAMES[thread]}{pool} is busy "
                      f"{100 * result['threads'][thread]:.0f} % of the wall time; the wall time is "
                      f"{result['wall_over_bottleneck'] or 0:.2f} × its busy time)")
        console.print(f"peak memory: {result['peak_rss_mb']:.0f} MB RSS"
                      + (f", {result['peak_cuda_mb']:.0f} MB CUDA" if result["peak_cuda_mb"] else ""))
        for failure in result["failures"]:
            console.print(f"[red]error:[/red] {failure}")
        if result["failures"]:
            raise typer.Exit(1)
