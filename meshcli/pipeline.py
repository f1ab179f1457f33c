"""The streamed pipeline: source -> detect -> crop -> batch -> predict -> track/smooth -> render -> sinks.

Threads overlap the work and bounded queues join them, so memory stays flat
however long a video is:

    decode thread   frames of every input, decoded and preprocessed
    detect thread   only when the method's people come from a network (``predictor.detector``):
                    device batches of frames through the detector, then each frame's crops
    model thread    device batches through ``predictor.infer`` and ``postprocess``
    render thread   the track/smooth stage (``meshcli.temporal``), then hands each frame it releases to a
                    pool of annotate threads (``predictor.annotate``, several frames at once) and writes
                    what comes back, in frame order, to the sinks (video, images, NPZ, ...)

The calling thread only collects results (``Pipeline.stream`` yields them).

Inputs flow one after another through the same threads (each annotate thread
owns its own OpenGL context, which must stay on one thread). A failing input is
aborted (its sinks delete what they wrote) and reported; the others go on, and
any failure, an unexpected one included, ends only the input it happened in.
"""
from __future__ import annotations

import queue
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .annotate_pool import OrderedPool, default_workers
from .draw import stamp
from .errors import MeshcliError
from .io.sinks import (ANNOTATED_EXTENSIONS, ImageSink, NpzSink, SingleImageSink, Sink, VideoSink, annotated_name,
                       disk_error, remove_leftovers)
from .io.sources import Input, VideoEndsEarly, VideoInfo, expand_inputs, iter_frames, probe_video
from .methods.base import Predictor
from .options import TemporalOptions
from .schema import SCHEMA_VERSION
from .temporal import TemporalStage, adapter_for
from .types import Frame, FrameResult

STAGES = ("decode", "preprocess", "detect", "model", "postprocess", "track", "render", "encode")

# Extra sinks per input, e.g. the pose command's COCO JSON: (input, out_dir, fields) -> Sink
SinkFactory = Callable[[Input, Path, dict], Sink]
# Called by the render thread as each input starts, and as it ends: (input, files written, frames, error or None)
InputStart = Callable[[Input], None]
InputEnd = Callable[[Input, list[Path], int, "MeshcliError | None"], None]


@dataclass
class StageTimes:
    seconds: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    frames: int = 0
    wall: float = 0.0
    workers: dict[str, int] = field(default_factory=dict)  # stages run by several threads at once: how many

    def add(self, stage: str, dt: float) -> None:
        self.seconds[stage] += dt  # each stage is added up by a single thread, so no lock needed


@dataclass
class RunSummary:
    written: list[Path] = field(default_factory=list)
    failures: list[MeshcliError] = field(default_factory=list)
    times: StageTimes = field(default_factory=StageTimes)
    peak_rss_mb: float = 0.0
    peak_cuda_mb: float = 0.0


@dataclass
class _Start:
    input: Input
    video: VideoInfo | None
    num_frames: int


@dataclass
class _End:
    input: Input
    error: MeshcliError | None = None
    last: bool = False  # no input follows this one


@dataclass
class _Item:
    frame: Frame
    prepared: Any = None
    result: FrameResult | None = None


_STOP = object()


class Pipeline:
    """Runs one predictor over inputs and writes outputs; the Python API behind the CLI."""

    def __init__(self, predictor: Predictor, out_dir: str | Path = "meshcli_out", *, batch_size: int = 8,
                 annotate: bool = True, extra_sinks: list[SinkFactory] = (), queue_size: int | None = None,
                 progress: "Progress | None" = None, on_input_start: InputStart | None = None,
                 on_input_end: InputEnd | None = None, keep_partial: bool = False,
                 temporal: TemporalOptions | None = None, render_workers: int | None = None):
        self.predictor = predictor
        self.out_dir = Path(out_dir)
        self.batch_size = max(1, batch_size)
        self.annotate = annotate
        self.extra_sinks = list(extra_sinks)
        self.queue_size = queue_size or 2 * self.batch_size
        self.progress = progress or Progress(enabled=False)
        self.on_input_start = on_input_start
        self.on_input_end = on_input_end
        self.keep_partial = keep_partial  # keep the outputs of a video that ends early, marked incomplete
        self.temporal = temporal or TemporalOptions()  # track ids and smoothing across frames
        if self.temporal.track is not False:  # a method that cannot be tracked or smoothed fails before any frame
            adapter_for(predictor, self.temporal.smooth)
        self.render_workers = render_workers or default_workers()  # threads annotating frames at once

    def extensions(self) -> set[str]:
        return set(self.predictor.file_extensions)

    def run(self, args: list[str | Input]) -> RunSummary:
        """Process every input (arguments, or inputs already expanded); returns what was written and what failed."""
        summary = RunSummary()
        for _ in self.stream(args, summary):
            pass
        return summary

    def stream(self, args: list[str | Input], summary: RunSummary | None = None
               ) -> Iterator[tuple[Input, Frame, FrameResult]]:
        """Yield (input, frame, result) as they are produced; outputs are written as a side effect."""
        summary = summary if summary is not None else RunSummary()
        self._check_out_dir()
        if args and all(isinstance(a, Input) for a in args):  # expanded by a batch engine, names already unique
            inputs, errors = list(args), []
        else:
            inputs, errors = expand_inputs(args, self.extensions())
        summary.failures.extend(errors)
        inputs = self._refuse_overwrites(inputs, summary)
        start = time.perf_counter()
        decoded: queue.Queue = queue.Queue(self.queue_size)
        cropped: queue.Queue = queue.Queue(self.queue_size)
        rendered: queue.Queue = queue.Queue(self.queue_size)
        results: queue.Queue = queue.Queue(self.queue_size)
        queues = (decoded, cropped, rendered, results)
        stop = threading.Event()
        times = summary.times

        def spawn(name: str, target, *args) -> threading.Thread:
            return threading.Thread(target=_ending_the_run_on_error(target, summary, stop), args=(*args, summary, stop),
                                    daemon=True, name=f"meshcli-{name}")

        threads = [spawn("decode", self._decode, inputs, decoded)]
        if self.predictor.detector is not None:
            threads.append(spawn("detect", self._batches, decoded, cropped, lambda b: self._detect(b, times),
                                  "detecting people"))
        else:
            cropped = decoded
        threads += [spawn("model", self._batches, cropped, rendered, lambda b: self._infer(b, times),
                           "running the model"),
                    spawn("render", self._render, rendered, results)]
        for thread in threads:
            thread.start()
        try:
            while True:
                got = _get(results, stop)
                if got is _STOP:
                    break
                yield got
        finally:
            stop.set()
            while any(thread.is_alive() for thread in threads):
                for q in queues:
                    _drain(q)
                time.sleep(0.01)
            summary.times.wall = time.perf_counter() - start
            summary.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            if torch.cuda.is_available():
                summary.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20
            self.progress.finish()

    def _check_out_dir(self) -> None:
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MeshcliError(self.out_dir, f"cannot create the output folder ({err.strerror})",
                               "choose another --out") from None
        try:  # a real file, as permissions do not tell for root or for folders like /proc
            with tempfile.TemporaryFile(dir=self.out_dir):
                pass
        except OSError as err:
            raise MeshcliError(self.out_dir, f"the output folder is not writable ({err.strerror})",
                               "choose another --out") from None
        remove_leftovers(self.out_dir)

    # -- decode thread -------------------------------------------------------------------------
    def _decode(self, inputs: list[Input], out: queue.Queue, summary: RunSummary, stop: threading.Event) -> None:
        times = summary.times
        detector = self.predictor.detector
        for k, inp in enumerate(inputs):
            if stop.is_set():
                break
            try:
                video = probe_video(inp.files[0]) if inp.is_video else None
            except MeshcliError as err:
                summary.failures.append(err)
                continue
            _put(out, _Start(inp, video, video.num_frames if video else len(inp.files)), stop)
            error = None
            try:
                frames = iter_frames(inp, self.predictor.read_image, video.rotation if video else 0,
                                     on_bad_file=summary.failures.append)
                while True:
                    if stop.is_set():
                        error = _cancelled(inp)
                        break
                    t0 = time.perf_counter()
                    frame = next(frames, None)
                    t1 = time.perf_counter()
                    if frame is None:
                        break
                    times.add("decode", t1 - t0)
                    # with a detector, the crops wait for its people (detect thread)
                    prepared = detector.prepare(frame) if detector is not None else self.predictor.preprocess(frame)
                    times.add("preprocess", time.perf_counter() - t1)
                    _put(out, _Item(frame, prepared), stop)
            except Exception as err:  # noqa: BLE001 - any failure ends this input only
                error = _as_error(err, inp, "reading or preprocessing")
            _put(out, _End(inp, error, last=k == len(inputs) - 1), stop)
        _put(out, _STOP, stop)

    # -- detect and model threads: device batches ---------------------------------------------
    def _detect(self, batch: list[_Item], times: StageTimes) -> None:
        """The detector on a batch of frames, then each frame's crops of the people it found."""
        t0 = time.perf_counter()
        people = self.predictor.detector.find([item.prepared for item in batch])
        t1 = time.perf_counter()
        for item, found in zip(batch, people):
            item.prepared = self.predictor.preprocess(item.frame, found)
        times.add("detect", t1 - t0)
        times.add("preprocess", time.perf_counter() - t1)

    def _infer(self, batch: list[_Item], times: StageTimes) -> None:
        t0 = time.perf_counter()
        raws = self.predictor.infer([item.prepared for item in batch])
        t1 = time.perf_counter()
        for item, raw in zip(batch, raws):
            item.result = self.predictor.postprocess(item.prepared, raw)
            item.prepared = None  # free tensors before the render stage holds the item
        times.add("model", t1 - t0)
        times.add("postprocess", time.perf_counter() - t1)

    def _batches(self, inp: queue.Queue, out: queue.Queue, process: Callable[[list[_Item]], None], doing: str,
                 summary: RunSummary, stop: threading.Event) -> None:
        """Group an input's frames into batches for ``process``; pass everything on in order.

        When frames are annotated, an input's batches grow 1, 2, 4 ... up to ``batch_size`` and, where its frame
        count is known, shrink to half of what is left towards its end: the overlay starts on the first frame
        instead of waiting for a full batch, and finishes soon after this stage instead of a whole batch later.
        Without an overlay nothing downstream is worth starting early, and every batch is full: small batches
        cost the network time (measured 1.12-1.24x the model stage of HMR, SPIN and SRN on 48 frames).
        """
        batch: list[_Item] = []
        current: Input | None = None
        error: MeshcliError | None = None  # the current input's first error here; its later frames are dropped
        first = 1 if self.annotate else self.batch_size
        limit, left = first, 0  # the size of the batch being filled; the input's frames not yet batched (0: unknown)

        def next_limit() -> int:
            if not self.annotate:
                return self.batch_size
            grown = min(2 * limit, self.batch_size)
            return max(1, min(grown, (left + 1) // 2)) if left > 0 else grown

        def flush() -> MeshcliError | None:
            if not batch:
                return None
            try:
                process(batch)
                for item in batch:
                    _put(out, item, stop)
                return None
            except Exception as err:  # noqa: BLE001 - any failure (a bug, out of memory) ends this input only
                return _as_error(err, current, doing)
            finally:
                batch.clear()

        while True:
            msg = _get(inp, stop)
            if isinstance(msg, _Item):
                if error is None:
                    batch.append(msg)
                    left -= 1
                    if len(batch) >= limit:
                        error = flush()
                        limit = next_limit()
                continue
            if isinstance(msg, _Start):
                current, limit, left = msg.input, first, msg.num_frames or 0
            elif isinstance(msg, _End):
                error = error or flush()
                msg.error = msg.error or error
                error = None
            _put(out, msg, stop)
            if msg is _STOP:
                return

    # -- render thread ---------------------------------------------------------------------------
    def _render(self, inp: queue.Queue, results: queue.Queue, summary: RunSummary, stop: threading.Event) -> None:
        times = summary.times
        sinks: list[Sink] = []
        current: _Start | None = None
        stage: TemporalStage | None = None
        # annotations run on the pool, several frames at once; this thread writes them in frame order
        pool = OrderedPool(self._annotated, self.render_workers if self.annotate else 1,
                           on_exit=self.predictor.release_render_resources)  # e.g. each worker's OpenGL context
        times.workers["render"] = pool.workers
        try:
            while True:
                msg = _get(inp, stop)
                if msg is _STOP:
                    if sinks:  # stopped in the middle of an input: nothing half-written stays
                        pool.discard()
                        self._abort(sinks, summary, _cancelled(current.input), current)
                    _put(results, _STOP, stop)
                    return
                try:
                    if isinstance(msg, _Start):
                        current, sinks, first_written, frames, stage = msg, [], len(summary.written), 0, None
                        if self.on_input_start is not None:
                            self.on_input_start(msg.input)
                        track = self.temporal.track
                        if track if track is not None else msg.input.kind != "image":
                            stage = TemporalStage(self.predictor, self.temporal, msg.video.fps if msg.video else 0)
                        self._open_sinks(msg, sinks, stage)
                        self.progress.start_input(msg.input, msg.num_frames)
                    elif isinstance(msg, _Item):
                        if not sinks:
                            continue
                        t0 = time.perf_counter()
                        ready = [(msg.frame, msg.result)] if stage is None else stage.push(msg.frame, msg.result)
                        times.add("track", time.perf_counter() - t0)
                        frames += self._write(pool, ready, sinks, current.input, times, results, stop)
                    elif isinstance(msg, _End):
                        if not sinks:  # the input already failed and was reported
                            continue
                        partial = self.keep_partial and isinstance(msg.error, VideoEndsEarly)
                        if msg.error is not None and not partial:
                            raise msg.error
                        frames += self._write(pool, stage.finish() if stage is not None else [], sinks,
                                              current.input, times, results, stop, wait=True)
                        if stop.is_set():  # the run was stopped (Ctrl-C, the caller left) before this input ended
                            raise _cancelled(msg.input)
                        if msg.last:  # nothing more to draw: the workers free their OpenGL contexts meanwhile
                            pool.retire()
                        self._check_some_frame_read(msg.input, sinks)
                        for sink in sinks:  # every output complete under its temporary name ...
                            if isinstance(sink, NpzSink):
                                sink.incomplete = partial
                            sink.finish()
                        for sink in sinks:  # ... before any replaces the previous run's
                            summary.written.extend(sink.commit())
                        sinks = []
                        if partial:  # kept, and still reported
                            summary.failures.append(msg.error)
                        if self.on_input_end is not None:
                            self.on_input_end(msg.input, summary.written[first_written:], frames,
                                              msg.error if partial else None)
                        self.progress.end_input(msg.input, ok=not partial)
                except Exception as err:  # noqa: BLE001 - any failure ends this input only
                    pool.discard()
                    self._abort(sinks, summary, _as_error(err, current.input if current else None,
                                                          "annotating or writing"), current)
                    sinks = []
        finally:
            pool.close()

    def _annotated(self, pair: tuple[Frame, FrameResult]) -> tuple[np.ndarray | None, float]:
        """An annotate worker's job: the frame with its result drawn (None when not annotating), and the seconds
        that took."""
        if not self.annotate:
            return None, 0.0
        frame, result = pair
        t0 = time.perf_counter()
        annotated = self.predictor.annotate(frame.image, result)
        if self.predictor.weights.untrained:
            stamp(annotated, "UNTRAINED WEIGHTS (--random-weights)")
        return annotated, time.perf_counter() - t0

    def _write(self, pool: OrderedPool, pairs: list[tuple[Frame, FrameResult]], sinks: list[Sink], inp: Input,
               times: StageTimes, results: queue.Queue, stop: threading.Event, wait: bool = False) -> int:
        """Hand each (frame, result) of ``pairs`` to the annotate pool and write every annotated frame it has
        ready (with ``wait``, all it holds) to the sinks, in frame order; how many were written."""
        written = 0
        for pair in pairs:
            pool.submit(pair)
            written += self._write_ready(pool.ready(), sinks, inp, times, results, stop)
        if wait:
            written += self._write_ready(pool.ready(wait=True), sinks, inp, times, results, stop)
        return written

    def _write_ready(self, ready: Iterator[tuple[tuple[Frame, FrameResult], tuple[np.ndarray | None, float]]],
                     sinks: list[Sink], inp: Input, times: StageTimes, results: queue.Queue,
                     stop: threading.Event) -> int:
        """Write the annotated frames ``ready`` hands over (in frame order) to every sink; how many it wrote."""
        written = 0
        for (frame, result), (annotated, seconds) in ready:
            t0 = time.perf_counter()
            for sink in sinks:
                sink.write(frame, annotated, result)
            times.add("render", seconds)  # summed over the annotate workers
            times.add("encode", time.perf_counter() - t0)
            times.frames += 1
            written += 1
            self.progress.advance()
            _put(results, (inp, frame, result), stop)
        return written

    @staticmethod
    def _check_some_frame_read(inp: Input, sinks: list[Sink]) -> None:
        """An image set none of whose files could be read gets no (empty) outputs."""
        npz = next(sink for sink in sinks if isinstance(sink, NpzSink))
        if npz.num_frames == 0 and inp.kind == "images":
            raise MeshcliError(inp.arg, f"none of its {len(inp.files)} image file(s) could be read (see the "
                               "errors above)", "fix or remove the files")

    def _abort(self, sinks: list[Sink], summary: RunSummary, err: MeshcliError, current: _Start | None) -> None:
        for sink in sinks:
            sink.abort()
        summary.failures.append(err)
        if current is not None:
            self.progress.end_input(current.input, ok=False)
            if self.on_input_end is not None:
                self.on_input_end(current.input, [], 0, err)

    def _open_sinks(self, start: _Start, sinks: list[Sink], stage: TemporalStage | None) -> None:
        """Append the input's sinks to ``sinks`` one by one, so a failure can abort those already made."""
        inp, video = start.input, start.video
        fields = {"schema_version": SCHEMA_VERSION, **self.predictor.metadata()}
        fields["input"] = inp.arg
        if video is not None:
            fields["fps"] = video.fps
            fields["files"] = np.array([inp.files[0].name])
        else:
            fields["fps"] = 0.0  # still images
        empty = self.predictor.empty_rows()
        if stage is not None:
            empty = stage.empty_rows(empty)
        outputs = self._outputs(inp)
        sinks.append(NpzSink(outputs["npz"], fields, empty, late_fields=self.predictor.metadata))
        if self.annotate:
            if video is not None:
                sinks.append(VideoSink(outputs["annotated"], video.fps, inp.files[0], video.time_base))
            elif inp.kind == "image":
                sinks.append(SingleImageSink(outputs["annotated"]))
            else:
                sinks.append(ImageSink(outputs["annotated"], [annotated_name(f.name) for f in inp.files]))
        for factory in self.extra_sinks:
            sinks.append(factory(inp, self.out_dir, fields))

    def _outputs(self, inp: Input) -> dict[str, Path]:
        """The input's NPZ and annotated output (a file, or a folder for an image set)."""
        outputs = {"npz": self.out_dir / f"{inp.name}.npz"}
        if inp.is_video:
            outputs["annotated"] = self.out_dir / f"{inp.name}.mp4"
        elif inp.kind == "image":
            suffix = inp.files[0].suffix
            outputs["annotated"] = self.out_dir / (inp.name + (suffix if suffix.lower() in ANNOTATED_EXTENSIONS
                                                               else ".png"))
        else:
            outputs["annotated"] = self.out_dir / inp.name
        return outputs

    def _refuse_overwrites(self, inputs: list[Input], summary: RunSummary) -> list[Input]:
        """Inputs whose outputs would replace a file of any input of the batch are refused, before any frame."""
        given: dict[Path, Path] = {}  # every input file, and every folder holding one, -> that file
        for f in (f for inp in inputs for f in inp.files):
            resolved = f.resolve()
            for place in (resolved, *resolved.parents):
                given.setdefault(place, f)
        kept = []
        for inp in inputs:
            hit = next((given[p] for p in (o.resolve() for o in self._outputs(inp).values()) if p in given), None)
            if hit is None:
                kept.append(inp)
            else:
                summary.failures.append(MeshcliError(
                    inp.arg, f"its outputs in {self.out_dir} would overwrite the input {hit}",
                    "choose another --out folder"))
        return kept


def _cancelled(inp: Input) -> MeshcliError:
    return MeshcliError(inp.arg, "cancelled before the end; its outputs were not written", "run it again")


def _as_error(err: BaseException, inp: Input | None, stage: str) -> MeshcliError:
    if isinstance(err, MeshcliError):
        return err
    where = inp.arg if inp else None
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return MeshcliError(where, f"out of memory while {stage}",
                            "try --batch-size 1, a smaller input, or a device with more memory")
    if isinstance(err, OSError) and err.errno is not None:
        return disk_error(err.filename or where or "", err)
    return MeshcliError(inp.arg if inp else None, f"internal error while {stage}: {err!r}",
                        "please report this with the command line")


def _ending_the_run_on_error(target: Callable, summary: RunSummary, stop: threading.Event) -> Callable:
    """``target`` run so that an error it does not handle ends the whole run (reported) instead of leaving
    a dead thread that the others would wait for."""
    def run(*args):
        try:
            target(*args)
        except BaseException as err:  # noqa: BLE001 - reported, and every other thread stops
            summary.failures.append(_as_error(err, None, f"in the pipeline's {threading.current_thread().name} thread"))
            stop.set()
    return run


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    """Blocking put that gives up once the run is stopped (nobody may be reading any more)."""
    while True:
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            if stop.is_set():
                return


def _get(q: queue.Queue, stop: threading.Event):
    """Blocking get that returns _STOP once the run is stopped and nothing is left."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _STOP


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


class Progress:
    """A rich progress bar on a terminal; plain lines otherwise (logs, CI)."""

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.fancy = enabled and self.stream.isatty()
        self._bar = None
        self._task = None
        self._count = 0
        self._t0 = 0.0
        self._last = 0.0

    def start_input(self, inp: Input, total: int) -> None:
        if not self.enabled:
            return
        self._count, self._t0 = 0, time.perf_counter()
        self._last = self._t0
        if self.fancy:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeRemainingColumn)

            if self._bar is None:
                self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                         TextColumn("{task.fields[fps]:.1f} fps"), TimeRemainingColumn(),
                                         transient=False)
                self._bar.start()
            self._task = self._bar.add_task(inp.name, total=total or None, fps=0.0)
        else:
            print(f"{inp.arg}: {total or '?'} frame(s)", file=self.stream, flush=True)

    def advance(self) -> None:
        if not self.enabled:
            return
        self._count += 1
        now = time.perf_counter()
        fps = self._count / max(now - self._t0, 1e-9)
        if self.fancy and self._task is not None:
            self._bar.update(self._task, advance=1, fps=fps)
        elif now - self._last > 5:
            self._last = now
            print(f"  {self._count} frames, {fps:.2f} fps", file=self.stream, flush=True)

    def end_input(self, inp: Input, ok: bool) -> None:
        if not self.enabled:
            return
        fps = self._count / max(time.perf_counter() - self._t0, 1e-9)
        if not self.fancy:
            print(f"{inp.arg}: {'done' if ok else 'FAILED'}, {self._count} frames, {fps:.2f} fps",
                  file=self.stream, flush=True)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
