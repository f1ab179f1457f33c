"""Batch engines: a layer above the per-input pipeline that decides which inputs run, where, and records them.

The driver expands the inputs once (output names unique across the whole
batch), consults the run ledger (``ledger.py``) and hands whole inputs to an
engine:

    local   one in-process ``Pipeline`` over every input still to run (the embedded default)
    ray     Ray actors, each building the predictor once and running the same ``Pipeline``
            on one input at a time (``cluster.py``)

Both write the same ledger, so either can resume the other's run.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MeshcliError
from ..io.sources import Input, expand_inputs
from ..options import TemporalOptions
from ..pipeline import Pipeline, Progress, SinkFactory
from .ledger import Ledger, output_record

ENGINES = ("local", "ray")


@dataclass
class BatchOptions:
    engine: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    resume: bool = False
    quiet: bool = False
    render_workers: int | None = None  # annotate threads of each pipeline (None: the pipeline's default)


@dataclass
class Job:
    """A command's predictor and output settings, built once per process (the driver, or each worker)."""

    predictor: Any
    out_dir: Path
    batch_size: int
    annotate: bool
    extra_sinks: list[SinkFactory]
    settings: dict[str, Any]  # what decides the outputs (ledger.settings_of)
    keep_partial: bool = False  # --keep-partial: keep a video that ends early, marked incomplete
    temporal: TemporalOptions | None = None  # tracking and smoothing across frames

    def pipeline(self, out_dir: Path | None = None, **kwargs) -> Pipeline:
        return Pipeline(self.predictor, out_dir or self.out_dir, batch_size=self.batch_size, annotate=self.annotate,
                        extra_sinks=self.extra_sinks, keep_partial=self.keep_partial, temporal=self.temporal,
                        **kwargs)

    def extensions(self) -> set[str]:
        return self.pipeline().extensions()


# Builds the command's Job in the calling process; picklable, so that Ray workers can build their own.
JobBuilder = Callable[[], Job]


@dataclass
class BatchReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[MeshcliError] = field(default_factory=list)  # failed inputs, and bad files inside folders
    retried: list[str] = field(default_factory=list)  # "INPUT (why)"
    written: list[Path] = field(default_factory=list)
    frames: int = 0
    wall: float = 0.0
    startup: float | None = None  # Ray: seconds until every worker had built its predictor and seen OUT


def read_inputs_from(path: Path | None) -> list[str]:
    """``--inputs-from FILE``: one path per line; blank lines and lines starting with # are skipped."""
    if path is None:
        return []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise MeshcliError(path, f"cannot read the list of inputs ({err.strerror})",
                           "give a text file with one input path per line") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def plan(inputs: list[Input], ledger: Ledger, resume: bool) -> tuple[list[Input], list[Input]]:
    """(inputs to run, inputs skipped because the ledger has them done with these settings)."""
    if not resume:
        return list(inputs), []
    todo, skipped = [], []
    for inp in inputs:
        (skipped if ledger.is_done(inp) else todo).append(inp)
    return todo, skipped


def input_bytes(inp: Input) -> int:
    """How much an input has to read: schedules the largest inputs first."""
    return sum(f.stat().st_size for f in inp.files if f.exists())


def unfinished_error(inp: Input, failures: list[MeshcliError]) -> MeshcliError:
    """The error that ended an input before its outputs were written (one naming it or its file)."""
    names = {inp.arg, *(str(f) for f in inp.files)}
    return next((f for f in failures if f.path in names),
                MeshcliError(inp.arg, "did not finish; its outputs were not written", "run it again with --resume"))


def run_local(job: Job, args: list[str], options: BatchOptions) -> BatchReport:
    """Every input still to run through one in-process pipeline, recording each in the ledger as it ends."""
    report = BatchReport()
    start = time.perf_counter()
    ledger = Ledger(job.out_dir, job.settings)
    inputs, errors = expand_inputs(args, job.extensions())
    report.failures.extend(errors)
    todo, skipped = plan(inputs, ledger, options.resume)
    report.skipped = [inp.arg for inp in skipped]
    ended: set[str] = set()
    started: dict[str, float] = {}

    def on_start(inp: Input) -> None:
        started[inp.name] = time.perf_counter()
        ledger.running(inp, "local", 1)

    def on_end(inp: Input, written: list[Path], frames: int, error: MeshcliError | None) -> None:
        ended.add(inp.name)
        if error is None:
            ledger.done(inp, [output_record(job.out_dir, p) for p in written], frames, "local", 1,
                        time.perf_counter() - started.get(inp.name, start))
            report.done.append(inp.arg)
        else:
            ledger.failed(inp, error.line(), "local", 1)

    pipeline = job.pipeline(progress=Progress(enabled=not options.quiet), on_input_start=on_start,
                            on_input_end=on_end, render_workers=options.render_workers)
    summary = None
    try:
        if todo:
            summary = pipeline.run(todo)
    finally:  # also on Ctrl-C: what started and did not end is recorded as failed, so --resume runs it again
        failures = summary.failures if summary else []
        for inp in todo:
            if inp.name in started and inp.name not in ended:
                ledger.failed(inp, unfinished_error(inp, failures).line(), "local", 1)
    report.failures.extend(summary.failures if summary else [])
    report.written = list(summary.written) if summary else []
    report.frames = summary.times.frames if summary else 0
    report.wall = time.perf_counter() - start
    return report
