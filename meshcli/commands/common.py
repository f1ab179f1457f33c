"""Options and the run/report step shared by every task command."""
from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from ..errors import MeshcliError
from ..methods import METHODS, methods_for
from ..options import TemporalOptions

if TYPE_CHECKING:  # the engines and the pipeline import torch: `meshcli --help` must not
    from ..engine import BatchOptions, BatchReport, Job, JobBuilder
    from ..pipeline import SinkFactory

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

Inputs = Annotated[list[str], typer.Argument(help="Images, folders, globs (quoted) or videos.", show_default=False)]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder; outputs are named after each input.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Frames (or crops) per device batch.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
Half = Annotated[bool, typer.Option("--half", help="Run the networks in fp16 (autocast) on a CUDA GPU: faster, "
                                    "outputs differ slightly from float32. Refused on the CPU.")]
Weights = Annotated[Path | None, typer.Option("--weights", help="Use this checkpoint file instead of the store's.",
                                               show_default=False)]
RandomWeights = Annotated[bool, typer.Option("--random-weights", help="Untrained weights, to check an install or "
                                             "measure speed; every output is stamped as untrained.")]
Annotate = Annotated[bool, typer.Option("--annotate/--no-annotate", help="Write the annotated image/video.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
RenderWorkers = Annotated[int | None, typer.Option(
    "--render-workers", min=1, help="Threads drawing the overlay, several frames at once; outputs are still "
    "written in frame order (default: one per CPU, at most 4).", show_default=False)]
KeepPartial = Annotated[bool, typer.Option("--keep-partial", help="Keep the outputs of a video that ends before "
                                           "the frame count or duration its container announces (marked incomplete "
                                           "in the NPZ; "
                                           "still reported, exit 1).")]


def variant_option(task: str | None = None):
    """``--variant``, its help listing every variant of the task's methods (the default first)."""
    names = methods_for(task) if task else list(METHODS)
    listed = "; ".join(f"{m}: {', '.join(METHODS[m].variants)}" for m in names)
    return Annotated[str | None, typer.Option("--variant", help=f"Model variant, default the first ({listed}).",
                                              show_default=False)]
Track = Annotated[bool | None, typer.Option(
    "--track/--no-track", help="Give every NPZ row a track_id that follows the person across frames "
    "(default: on for videos and image folders, off for single images).", show_default=False)]
TrackMaxAge = Annotated[int | None, typer.Option(
    "--track-max-age", min=0, help="Frames a person may go unseen and keep their track_id "
    "(default: half a second of the input's frames).", show_default=False)]
TrackMinHits = Annotated[int, typer.Option(
    "--track-min-hits", min=1, help="Consecutive frames a new person must be seen in before they get a "
    "track_id; rows of people seen for fewer are left out (1 keeps every detection).")]
Smooth = Annotated[str, typer.Option(
    "--smooth", help="Temporal smoothing along each track: none (the method's per-frame output), oneeuro "
    "(causal One-Euro filter) or offline (zero-lag local quadratic fit over 0.2 s each side). Per-frame "
    "values stay in the NPZ as <key>_raw.")]
SmoothMinCutoff = Annotated[float, typer.Option(
    "--smooth-min-cutoff", help="oneeuro: cutoff frequency (Hz) at rest; lower is smoother.")]
SmoothBeta = Annotated[float, typer.Option(
    "--smooth-beta", help="oneeuro: how fast the cutoff rises with speed (speeds in person sizes per "
    "second); higher lags less.")]


def fail(err: MeshcliError, code: int = 2) -> "typer.Exit":
    err_console.print(f"[red]error:[/red] {err.line()}", markup=True)
    return typer.Exit(code)


TEMPORAL_OPTIONS = {  # parameter: (option, default, TemporalOptions field)
    "track": (Track, None, "track"), "track_max_age": (TrackMaxAge, None, "max_age"),
    "track_min_hits": (TrackMinHits, 1, "min_hits"), "smooth": (Smooth, "none", "smooth"),
    "smooth_min_cutoff": (SmoothMinCutoff, 1.0, "min_cutoff"), "smooth_beta": (SmoothBeta, 20.0, "beta"),
}


def temporal_options(params: dict[str, Any]) -> TemporalOptions:
    """The track/smooth options taken out of a command's parameters, checked."""
    return TemporalOptions(**{field: params.pop(name) for name, (_, _, field) in TEMPORAL_OPTIONS.items()})


def with_temporal_options(command):
    """Give a task command the track/smooth options (before ``--out``); it receives them checked, before any
    frame is read, as one ``temporal: TemporalOptions`` argument."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "temporal"]
    at = next(k for k, p in enumerate(own) if p.name == "out")
    added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=option)
             for name, (option, default, _) in TEMPORAL_OPTIONS.items()]
    parameters = own[:at] + added + own[at:]

    @functools.wraps(command)
    def wrapper(**kwargs):
        return command(temporal=temporal_options(kwargs), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=parameters)
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper


# A command's body ends by handing its predictor to the batch engine (``hand_to_engine``); the engine
# then runs the inputs in this process (local) or has each Ray worker run the body to build its own.
_COMMANDS: dict[str, Callable] = {}  # command name -> its undecorated body
_HANDOVER: contextvars.ContextVar[list | None] = contextvars.ContextVar("meshcli_handover", default=None)

Engine = Annotated[str, typer.Option("--engine", help="local (this process) or ray (workers on a Ray cluster; "
                                     'needs `pip install "meshcli\\[ray]"`).', rich_help_panel="Batch")]
RayAddress = Annotated[str | None, typer.Option(
    "--ray-address", help="Ray cluster to run on (default: the one `ray start` runs on this machine, else a "
    "local Ray started for the run).", show_default=False, rich_help_panel="Batch")]
Workers = Annotated[int | None, typer.Option(
    "--workers", min=1, help="Ray workers, each holding one loaded model (default: one per GPU, or one per 2 "
    "CPUs without GPUs).", show_default=False, rich_help_panel="Batch")]
GpusPerWorker = Annotated[float | None, typer.Option(
    "--gpus-per-worker", min=0, help="GPUs each Ray worker holds (default: 1 when the cluster has GPUs).",
    show_default=False, rich_help_panel="Batch")]
InputsFrom = Annotated[Path | None, typer.Option(
    "--inputs-from", help="A text file of inputs, one path per line (# comments and blank lines skipped).",
    show_default=False, rich_help_panel="Batch")]
Resume = Annotated[bool, typer.Option(
    "--resume", help="Skip inputs that OUT/meshcli_run/ records as done with the same settings and whose outputs "
    "are intact; run the rest.", rich_help_panel="Batch")]
BATCH_OPTIONS = {"engine": (Engine, "local"), "ray_address": (RayAddress, None), "workers": (Workers, None),
                 "gpus_per_worker": (GpusPerWorker, None), "inputs_from": (InputsFrom, None), "resume": (Resume, False),
                 "render_workers": (RenderWorkers, None)}


# The engines' dispatcher lives here, above both engines, so that meshcli.engine never imports its Ray module.
def run_batch(build: JobBuilder, args: list[str], out: Path, options: BatchOptions) -> BatchReport:
    from ..engine import ENGINES, run_local

    if options.engine not in ENGINES:
        raise MeshcliError(None, f"unknown --engine {options.engine}", f"use one of {', '.join(ENGINES)}")
    if not args:
        raise MeshcliError(None, "no inputs given", "name images, folders, globs or videos, or use --inputs-from")
    if options.engine == "ray":
        from ..engine.cluster import run_on_ray  # Ray is imported only for --engine ray

        return run_on_ray(build, args, Path(out), options)
    return run_local(build(), args, options)


def hand_to_engine(predictor, out: Path, batch_size: int, annotate: bool, extra_sinks: list[SinkFactory] = (),
                   keep_partial: bool = False, temporal: TemporalOptions | None = None) -> None:
    """The end of a task command's body: the batch engine takes the predictor and runs the inputs."""
    _HANDOVER.get().append((predictor, Path(out), batch_size, annotate, list(extra_sinks), keep_partial, temporal))


def build_job(command: str, options: dict[str, Any]) -> Job:
    """Run a command's body up to its handover: its predictor, built once in this process."""
    import torch

    from ..engine import Job
    from ..engine.ledger import settings_of

    if command not in _COMMANDS:
        from .. import cli  # noqa: F401 - a fresh Ray worker: registering the commands fills _COMMANDS
    handed: list = []
    token = _HANDOVER.set(handed)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # --random-weights: the same untrained network in every process and worker
            _COMMANDS[command](**options)
    finally:
        _HANDOVER.reset(token)
    predictor, out, batch_size, annotate, extra_sinks, keep_partial, temporal = handed[0]
    return Job(predictor, out, batch_size, annotate, extra_sinks, settings_of(command, predictor, options),
               keep_partial, temporal)


def batch_command(fn):
    """Give a task command the batch options (--engine, --resume, ...) and run its inputs through an engine."""
    _COMMANDS[fn.__name__] = fn

    @functools.wraps(fn)
    def command(*, engine: str, ray_address, workers, gpus_per_worker, inputs_from, resume, render_workers,
                **options):
        from ..engine import BatchOptions, read_inputs_from

        options["inputs"] = [*(options.get("inputs") or []), *read_inputs_from(inputs_from)]
        # workers may run elsewhere: every path they get is absolute
        options = {k: v.absolute() if isinstance(v, Path) else v for k, v in options.items()}
        batch = BatchOptions(engine, ray_address, workers, gpus_per_worker, resume, options["quiet"], render_workers)
        report = run_batch(functools.partial(build_job, fn.__name__, options), options["inputs"],
                           options["out"], batch)
        print_report(report, batch)

    signature = inspect.signature(fn, eval_str=True)
    params = [p.replace(default=None) if p.name == "inputs" else p for p in signature.parameters.values()]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
               for name, (annotation, default) in BATCH_OPTIONS.items()]
    command.__signature__ = signature.replace(parameters=params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def print_report(report: BatchReport, batch: BatchOptions) -> None:
    """What was written, skipped, retried and failed; exit 1 on any failure."""
    if not batch.quiet:
        for path in report.written:
            err_console.print(f"wrote {path}")
        if report.startup is not None:
            err_console.print(f"ray: workers ready in {report.startup:.1f} s; {report.frames} frames in "
                              f"{report.wall:.1f} s")
    for retried in report.retried:
        err_console.print(f"retried {retried}")
    if batch.resume or report.retried or not batch.quiet:
        err_console.print(f"{len(report.done)} done, {len(report.skipped)} skipped (done before), "
                          f"{len(report.failures)} failed")
    if report.failures:
        for failure in report.failures:
            err_console.print(f"[red]error:[/red] {failure.line()}", markup=True)
        err_console.print(f"{len(report.failures)} input(s) or file(s) failed; the others finished.")
        raise typer.Exit(1)


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
