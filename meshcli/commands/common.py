"""Options and the run/report step shared by every task command."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .. import weights as store
from ..errors import MeshcliError
from ..methods import method_module, methods_for
from ..methods.base import choose_variant
from ..pipeline import Pipeline, Progress, RunSummary, SinkFactory

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

Inputs = Annotated[list[str], typer.Argument(help="Images, folders, globs (quoted) or videos.", show_default=False)]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder; outputs are named after each input.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Frames (or crops) per device batch.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
Weights = Annotated[Path | None, typer.Option("--weights", help="Use this checkpoint file instead of the store's.",
                                               show_default=False)]
RandomWeights = Annotated[bool, typer.Option("--random-weights", help="Untrained weights, to check an install or "
                                             "measure speed; every output is stamped as untrained.")]
Variant = Annotated[str | None, typer.Option("--variant", help="Model variant (default: the method's first).",
                                             show_default=False)]
Annotate = Annotated[bool, typer.Option("--annotate/--no-annotate", help="Write the annotated image/video.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


def choose_method(task: str, method: str, variant: str | None, weights: Path | None, random_weights: bool):
    """(method module, variant, weights file or None for random weights) for a task command.

    Unknown names and a missing checkpoint are one-line errors, before any frame is read.
    """
    if method not in methods_for(task):
        raise MeshcliError(None, f"--method {method} is not a {task} method", f"use {', '.join(methods_for(task))}")
    module = method_module(method)
    variant = choose_variant(module.VARIANTS, variant, method)
    return module, variant, store.resolve(method, variant, weights, random_weights)


def fail(err: MeshcliError, code: int = 2) -> "typer.Exit":
    err_console.print(f"[red]error:[/red] {err.line()}", markup=True)
    return typer.Exit(code)


def run_and_report(predictor, inputs: list[str], out: Path, batch_size: int, annotate: bool, quiet: bool,
                   extra_sinks: list[SinkFactory] = ()) -> RunSummary:
    """Run the pipeline, print what was written and what failed; exit non-zero on any failure."""
    pipeline = Pipeline(predictor, out, batch_size=batch_size, annotate=annotate, extra_sinks=extra_sinks,
                        progress=Progress(enabled=not quiet))
    summary = pipeline.run(inputs)
    if not quiet:
        for path in summary.written:
            err_console.print(f"wrote {path}")
    if summary.failures:
        for failure in summary.failures:
            err_console.print(f"[red]error:[/red] {failure.line()}", markup=True)
        err_console.print(f"{len(summary.failures)} input(s) or file(s) failed; the others finished.")
        raise typer.Exit(1)
    return summary


def guarded(fn):
    """Turn MeshcliError raised while setting up (bad weights, options) into a one-line error."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MeshcliError as err:
            raise fail(err) from None
    return wrapper
