"""``--engine ray``: whole inputs on Ray actors, each holding one loaded model.

Each worker (an actor) runs the command's setup once, so it builds the same
predictor the local engine would (weights read from the path the driver
resolved, which every node must see), then runs the local ``Pipeline`` on one
input at a time. An input is written into a private staging folder inside OUT
and moved into place only when all of it is finished, so a worker that dies
(killed, node lost, out of memory) leaves nothing partial: the driver deletes
its staging folder and gives the input to another worker, at most
``MAX_ATTEMPTS`` times. Ctrl-C kills the workers and does the same clean-up.
The driver alone writes the run ledger.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from ..errors import MeshcliError, first_line
from ..io.sources import Input, expand_inputs
from ..pipeline import RunSummary
from . import BatchOptions, BatchReport, JobBuilder, input_bytes, plan, unfinished_error
from .ledger import Ledger, output_record, settings_hash

STAGING_DIR = ".meshcli_staging"
KILL_WAIT_S = 30.0  # how long Ctrl-C waits for killed workers to stop
MAX_ATTEMPTS = 3  # workers an input is given to when the ones running it die


def import_ray():
    try:
        import ray
    except ImportError:
        raise MeshcliError(None, "--engine ray needs Ray, which is not installed",
                           'pip install "meshcli[ray]" (on every node of the cluster)') from None
    return ray


class BatchWorker:
    """A Ray actor: the command's predictor, built once, and the local pipeline run on whole inputs."""

    def __init__(self, build: JobBuilder, render_workers: int | None = None):
        import ray

        node = ray.get_runtime_context().get_node_id()
        address = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node), node)
        self.name = f"{address} pid {os.getpid()}"  # the node as the cluster knows it
        self.frames = 0  # frames this worker has finished, the input in progress included
        self.job, self.setup_error = None, None
        self.render_workers = render_workers  # --render-workers
        try:
            self.job = build()
        except MeshcliError as err:  # reported by hello(), as the local engine would report it
            self.setup_error = err

    def hello(self, probe: str, token: str) -> dict[str, Any]:
        """Who this worker is, what it built, and whether it sees OUT: it reads the driver's probe file
        and writes one back for the driver to read."""
        if self.setup_error is not None:
            return {"worker": self.name, "error": self.setup_error}
        out = self.job.out_dir
        reply = f"{probe}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        try:
            seen = (out / probe).read_text()
            (out / reply).write_text(token)
        except OSError as err:
            seen = f"({err.strerror})"
        if seen != token:
            return {"worker": self.name, "error": MeshcliError(
                out, f"the output folder is not visible from the worker on node {self.name} {seen or ''}",
                "give --out a folder on storage every node mounts at the same path")}
        return {"worker": self.name, "settings": self.job.settings, "extensions": sorted(self.job.extensions()),
                "reply": reply, "error": None}

    def run_input(self, inp: Input, attempt: str) -> dict[str, Any]:
        """One input through the pipeline into OUT/.meshcli_staging/ATTEMPT, then moved into OUT."""
        out = self.job.out_dir
        staging = out / STAGING_DIR / attempt
        ended: dict[str, Any] = {}
        summary = RunSummary()
        start = time.perf_counter()

        def on_end(_inp: Input, written: list[Path], frames: int, error: MeshcliError | None) -> None:
            ended.update(written=list(written), frames=frames, error=error)

        try:
            pipeline = self.job.pipeline(staging, on_input_end=on_end, render_workers=self.render_workers)
            for _ in pipeline.stream([inp], summary):
                self.frames += 1
            failures = [f for f in summary.failures if f is not ended.get("error")]
            if "written" not in ended or ended["error"] is not None:
                return {"error": ended.get("error") or unfinished_error(inp, summary.failures),
                        "warnings": failures}
            written = publish(staging, out, inp, ended["written"])
            return {"error": None, "warnings": failures, "frames": ended["frames"],
                    "outputs": [output_record(out, p) for p in written], "written": written,
                    "seconds": time.perf_counter() - start}
        except MeshcliError as err:
            return {"error": err, "warnings": []}
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def frames_done(self) -> int:
        return self.frames


def publish(staging: Path, out: Path, inp: Input, written: list[Path]) -> list[Path]:
    """Move an input's finished outputs (files, or folders of them) from its staging folder into OUT."""
    tops = sorted({Path(p).relative_to(staging).parts[0] for p in written})
    sources = [f.resolve() for f in inp.files]
    for top in tops:
        target = (out / top).resolve()
        if any(f == target or target in f.parents for f in sources):
            raise MeshcliError(inp.arg, f"its outputs in {out} would overwrite the input", "choose another --out")
    for top in tops:
        target = out / top
        if (staging / top).is_dir() and target.is_dir():  # a whole folder replaces the old one
            aside = out / STAGING_DIR / f"{top}.replaced.{uuid.uuid4().hex[:8]}"
            os.replace(target, aside)
            os.replace(staging / top, target)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(staging / top, target)
    return [out / Path(p).relative_to(staging) for p in written]


def start_workers(ray, build: JobBuilder, options: BatchOptions) -> list:
    resources = ray.cluster_resources()
    gpus, cpus = resources.get("GPU", 0), int(resources.get("CPU", 1))
    per_worker = options.gpus_per_worker if options.gpus_per_worker is not None else (1 if gpus else 0)
    count = options.workers or (int(gpus // per_worker) if per_worker else max(1, cpus // 2))
    if count * per_worker > gpus or count > cpus:
        raise MeshcliError(None, f"{count} worker(s) with {per_worker:g} GPU(s) each do not fit the cluster "
                                 f"({cpus} CPUs, {gpus:g} GPUs)",
                           "lower --workers or --gpus-per-worker, or add nodes")
    actor = ray.remote(BatchWorker).options(num_cpus=1, num_gpus=per_worker, max_restarts=MAX_ATTEMPTS,
                                            max_task_retries=0, max_concurrency=2)
    return [actor.remote(build, options.render_workers) for _ in range(count)]


def greet(ray, workers: list, out: Path) -> list[dict[str, Any]]:
    """Every worker's hello, after the OUT visibility probe; one error for the first that fails."""
    probe, token = f".meshcli_probe.{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    (out / probe).write_text(token)
    try:
        try:
            infos = ray.get([w.hello.remote(probe, token) for w in workers])
        except ray.exceptions.RayError as err:  # a worker died while building its predictor
            raise MeshcliError(None, f"a Ray worker could not start: {first_line(err)[:300]}",
                               "see the worker's log (ray logs), e.g. out of memory or a missing package") from None
        for info in infos:
            if info["error"] is not None:
                raise info["error"]
            if (out / info["reply"]).read_text() != token:
                raise MeshcliError(out, f"the driver cannot read what the worker on {info['worker']} wrote there",
                                   "give --out a folder on storage every node mounts at the same path")
            if settings_hash(info["settings"]) != settings_hash(infos[0]["settings"]):
                raise MeshcliError(None, f"the worker on {info['worker']} built other settings than the one on "
                                         f"{infos[0]['worker']} (weights files differ between nodes?)",
                                   "give every node the same weights and files")
        return infos
    finally:
        for path in out.glob(f"{probe}*"):
            path.unlink(missing_ok=True)


def run_on_ray(build: JobBuilder, args: list[str], out: Path, options: BatchOptions) -> BatchReport:
    ray = import_ray()
    start = time.perf_counter()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MeshcliError(out, f"cannot create the output folder ({err.strerror})", "choose another --out") from None
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=options.ray_address, include_dashboard=False, logging_level="WARNING")
        except (ConnectionError, ValueError, RuntimeError) as err:
            raise MeshcliError(None, f"cannot reach the Ray cluster at {options.ray_address}: {first_line(err)}",
                               "start it with `ray start --head`, or check --ray-address") from None
    workers = []
    try:
        workers = start_workers(ray, build, options)
        infos = greet(ray, workers, out)
        report = BatchReport(startup=time.perf_counter() - start)
        ledger = Ledger(out, infos[0]["settings"])
        inputs, errors = expand_inputs(args, set(infos[0]["extensions"]))
        report.failures.extend(errors)
        todo, skipped = plan(inputs, ledger, options.resume)
        report.skipped = [inp.arg for inp in skipped]
        # workers elsewhere read the inputs by absolute path; the NPZ keeps the argument as given
        todo = [Input(inp.arg, inp.kind, inp.name, [f.absolute() for f in inp.files]) for inp in todo]
        Scheduler(ray, workers, [info["worker"] for info in infos], ledger, report, options).run(todo)
        report.wall = time.perf_counter() - start
        return report
    finally:
        for worker in workers:
            ray.kill(worker, no_restart=True)
        _remove_empty(out / STAGING_DIR)
        if started_here:
            ray.shutdown()


class Scheduler:
    """Hands inputs, largest first, to idle workers; retries an input whose worker died on another one."""

    def __init__(self, ray, workers: list, names: list[str], ledger: Ledger, report: BatchReport,
                 options: BatchOptions):
        self.ray, self.workers, self.names = ray, workers, names
        self.ledger, self.report = ledger, report
        self.progress = Bar(enabled=not options.quiet)
        self.idle = list(range(len(workers)))
        self.alive = set(self.idle)
        self.deaths = [0] * len(workers)
        self.running: dict[Any, tuple[int, Input, str, int]] = {}  # task -> (worker, input, attempt folder, try)
        self.tried: dict[str, set[int]] = {}
        self.frames = [0] * len(workers)
        self.polled = 0.0

    def run(self, todo: list[Input]) -> None:
        pending = deque(sorted(todo, key=input_bytes, reverse=True))
        self.progress.start(len(pending))
        try:
            while pending or self.running:
                self._dispatch(pending)
                if not self.running:  # inputs left, but no worker that may take them
                    for inp in pending:
                        self._fail(inp, MeshcliError(inp.arg, "no worker left to run it", "run again with --resume"),
                                   "-", len(self.tried.get(inp.name, ())))
                    return
                done, _ = self.ray.wait(list(self.running), num_returns=1, timeout=1.0)
                for task in done:
                    self._collect(task, pending)
                self._poll_frames()
        except KeyboardInterrupt:
            for worker in self.workers:
                self.ray.kill(worker, no_restart=True)
            # ray.kill returns before the processes end: wait (bounded) until their tasks fail, so that no
            # worker is still writing into a staging folder when it is removed.
            self.ray.wait(list(self.running), num_returns=len(self.running), timeout=KILL_WAIT_S)
            for worker, inp, attempt, tries in self.running.values():
                shutil.rmtree(self.ledger.out_dir / STAGING_DIR / attempt, ignore_errors=True)
                self.ledger.failed(inp, "interrupted (Ctrl-C); its outputs were not written", self.names[worker],
                                   tries)
            raise
        finally:
            self.progress.finish()

    def _dispatch(self, pending: deque) -> None:
        for inp in list(pending):
            if not self.idle:
                return
            tried = self.tried.setdefault(inp.name, set())
            fresh = [w for w in self.idle if w not in tried]
            if not fresh and not self.alive <= tried:  # a worker that has not tried it will be free later
                continue
            worker = (fresh or self.idle)[0]
            self.idle.remove(worker)
            pending.remove(inp)
            tried.add(worker)
            attempt = f"{inp.name}.{uuid.uuid4().hex[:8]}"
            self.ledger.running(inp, self.names[worker], len(tried))
            self.running[self.workers[worker].run_input.remote(inp, attempt)] = (worker, inp, attempt, len(tried))

    def _collect(self, task, pending: deque) -> None:
        ray = self.ray
        worker, inp, attempt, tries = self.running.pop(task)
        try:
            result = ray.get(task)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError) as err:
            shutil.rmtree(self.ledger.out_dir / STAGING_DIR / attempt, ignore_errors=True)
            self.deaths[worker] += 1
            if self.deaths[worker] > MAX_ATTEMPTS:  # Ray restarts a dead worker that many times
                self.alive.discard(worker)
            else:
                self.idle.append(worker)
            why = f"the worker on {self.names[worker]} died: {first_line(err)[:120]}"
            if tries < MAX_ATTEMPTS and self.alive:
                self.report.retried.append(f"{inp.arg} ({why})")
                pending.appendleft(inp)
            else:
                self._fail(inp, MeshcliError(inp.arg, f"gave up after {tries} attempt(s); {why}",
                                             "run again with --resume"), self.names[worker], tries)
            return
        except ray.exceptions.RayTaskError as err:  # a bug in the worker: this input fails, the worker goes on
            result = {"error": MeshcliError(inp.arg, f"internal error in the worker: {first_line(err)[:200]}",
                                            "please report this with the command line"), "warnings": []}
        self.idle.append(worker)
        self.report.failures.extend(result["warnings"])
        if result["error"] is not None:
            self._fail(inp, result["error"], self.names[worker], tries)
            return
        self.ledger.done(inp, result["outputs"], result["frames"], self.names[worker], tries, result["seconds"])
        self.report.done.append(inp.arg)
        self.report.written.extend(result["written"])
        self.report.frames += result["frames"]
        self.progress.advance(inp, self.names[worker])

    def _fail(self, inp: Input, error: MeshcliError, worker: str, tries: int) -> None:
        self.ledger.failed(inp, error.line(), worker, tries)
        self.report.failures.append(error)
        self.progress.advance(inp, worker, ok=False)

    def _poll_frames(self) -> None:
        """Frames/s over all workers, from each live worker's count (the inputs in progress included)."""
        if not self.progress.enabled or time.perf_counter() - self.polled < 1:
            return
        self.polled = time.perf_counter()
        live = sorted(self.alive)
        counts = [self.workers[w].frames_done.remote() for w in live]
        ready, _ = self.ray.wait(counts, num_returns=len(counts), timeout=0.5)
        for w, ref in zip(live, counts):
            if ref in ready:
                try:
                    self.frames[w] = max(self.frames[w], self.ray.get(ref))
                except self.ray.exceptions.RayError:
                    pass  # died since: its input's retry is counted where it runs next
        self.progress.frames(sum(self.frames))


class Bar:
    """One progress bar over inputs with frames/s over all workers (plain lines when not on a terminal)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.fancy = enabled and sys.stderr.isatty()
        self._bar = self._task = None
        self._t0 = time.perf_counter()
        self._finished = 0
        self._total = 0

    def start(self, total: int) -> None:
        self._t0, self._total = time.perf_counter(), total
        if self.fancy:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("inputs"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[fps]:.1f} frames/s"), TimeRemainingColumn())
            self._bar.start()
            self._task = self._bar.add_task("inputs", total=total, fps=0.0)

    def frames(self, count: int) -> None:
        if self.fancy:
            self._bar.update(self._task, fps=count / max(time.perf_counter() - self._t0, 1e-9))

    def advance(self, inp: Input, worker: str, ok: bool = True) -> None:
        self._finished += 1
        if self.fancy:
            self._bar.update(self._task, advance=1)
        elif self.enabled:
            print(f"[{self._finished}/{self._total}] {inp.arg}: {'done' if ok else 'FAILED'} ({worker})",
                  file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # absent, or holds what a worker still writes
