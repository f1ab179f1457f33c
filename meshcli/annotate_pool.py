"""Frames annotated on a pool of threads, handed back in the order they were submitted.

The pipeline's render thread submits each frame to ``OrderedPool`` and writes what ``ready`` hands back to the
sinks, oldest first, so videos, image sets and NPZ rows stay in frame order however the workers finish. At most
``depth`` frames are in flight (look-ahead bounded, memory flat). Threads suffice: the overlay's time goes to
calls that release the GIL (OpenGL draws and read-back, OpenCV's drawing, numpy). Each worker thread owns the
render resources it makes (an OpenGL context is bound to its thread) and frees them (``on_exit``) as the pool
closes.
"""
from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

MAX_DEFAULT_WORKERS = 4  # beyond this the GIL-held part of each annotation (scene setup) stops paying off


def default_workers() -> int:
    """One annotate worker per CPU this process may use, at most ``MAX_DEFAULT_WORKERS`` (measured on 2 CPUs:
    2 workers beat 1 for both renderers, 1 and 5 people)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, usable))


class OrderedPool:
    """``work(item)`` on ``workers`` threads; results come back in submission order."""

    def __init__(self, work: Callable[[Any], Any], workers: int, depth: int | None = None,
                 on_exit: Callable[[], None] = lambda: None, name: str = "meshcli-annotate"):
        self.workers = max(1, workers)
        self.depth = depth or 2 * self.workers  # in flight: every worker busy, and as many queued behind them
        self._work, self._on_exit = work, on_exit
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: deque[tuple[Any, Future]] = deque()
        self._retired = False
        self._threads = [threading.Thread(target=self._serve, daemon=True, name=f"{name}-{k}")
                         for k in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, item: Any) -> None:
        if self._retired:
            raise RuntimeError("OrderedPool.submit after retire")
        future: Future = Future()
        self._pending.append((item, future))
        self._jobs.put((future, item))

    def ready(self, wait: bool = False) -> Iterator[tuple[Any, Any]]:
        """(item, result) oldest first: those already done, then, while more than ``depth`` are in flight (or
        any, with ``wait``), the oldest once it is done. A worker's exception is raised for its item."""
        while self._pending and (wait or len(self._pending) > self.depth or self._pending[0][1].done()):
            item, future = self._pending.popleft()
            yield item, future.result()

    def discard(self) -> None:
        """Forget every item in flight (their input failed): those no worker has started are never run."""
        for _, future in self._pending:
            future.cancel()
        self._pending.clear()

    def retire(self) -> None:
        """Let the workers end once they finish what they are running, each freeing its resources on the way
        out, without waiting for them (the caller can finish its own work meanwhile); nothing more is run."""
        if not self._retired:
            self._retired = True
            for _ in self._threads:
                self._jobs.put(None)

    def close(self) -> None:
        """Forget what is in flight, retire the workers and wait until they have ended."""
        self.discard()
        self.retire()
        for thread in self._threads:
            thread.join()

    def _serve(self) -> None:
        try:
            while (job := self._jobs.get()) is not None:
                future, item = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(self._work(item))
                except BaseException as err:  # noqa: BLE001 - handed to whoever takes the result
                    future.set_exception(err)
        finally:
            self._on_exit()
