"""One generation at a time: a single worker thread fed by a bounded queue.

Every job that touches the model (generation, model switch, unload/reload) is a callable
run by the one worker thread, so the GPU never sees two jobs at once and the order of
switches and generations is the order of arrival. ``submit`` never blocks: when
``max_queue`` jobs are already waiting it raises :class:`QueueFull` (the API answers 429).
The running job does not count towards ``max_queue``.

:class:`JobState` is what ``/sdapi/v1/progress`` reports and what ``interrupt``/``skip``
act on; the pipeline checks it between steps through ``should_stop``.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger("altdiffusion.serve")


class QueueFull(Exception):
    """The bounded job queue has no free slot."""


class JobState:
    """Progress of the running job (A1111's ``shared.state``), guarded by one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.job = ""
        self.job_count = 0
        self.job_no = 0
        self.job_timestamp = "0"
        self.sampling_step = 0
        self.sampling_steps = 0
        self.started = 0.0
        self.interrupted = False
        self.skipped = False
        self.future: Future | None = None
        self.preview = None  # the running model's latents -> RGB map (pipelines/preview.py)
        self.latents = None  # latest latents of the running iteration (a CPU/GPU tensor)
        self.latents_version = 0

    # -- called by the worker / the job
    def begin(self, job: str, job_count: int, future: Future | None, preview) -> None:
        with self.lock:
            self._reset()
            self.job = job
            self.job_count = job_count
            self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
            self.started = time.monotonic()
            self.future = future
            self.preview = preview

    def next_iteration(self, job_no: int) -> None:
        with self.lock:
            self.job_no = job_no
            self.sampling_step = 0
            self.sampling_steps = 0
            self.skipped = False
            self.latents = None

    def next_unit(self) -> None:
        """A new pipeline call within the iteration: forget the previous call's latents."""
        with self.lock:
            self.sampling_step = 0
            self.latents = None

    def step(self, step: int, total: int, latents) -> None:
        with self.lock:
            self.sampling_step = step
            self.sampling_steps = total
            self.latents = latents
            self.latents_version += 1

    def end(self) -> None:
        with self.lock:
            self._reset()

    def should_stop(self) -> bool:
        return self.interrupted or self.skipped

    # -- called by request handlers
    def interrupt(self, future: Future | None = None) -> bool:
        """Stop the running job (only if it is ``future``, when given); True if one was running."""
        with self.lock:
            if not self.job or (future is not None and self.future is not future):
                return False
            self.interrupted = True
            return True

    def skip(self) -> bool:
        with self.lock:
            if not self.job:
                return False
            self.skipped = True
            return True

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "job": self.job,
                "job_count": self.job_count,
                "job_no": self.job_no,
                "job_timestamp": self.job_timestamp,
                "sampling_step": self.sampling_step,
                "sampling_steps": self.sampling_steps,
                "started": self.started,
                "interrupted": self.interrupted,
                "skipped": self.skipped,
                "latents": self.latents,
                "latents_version": self.latents_version,
                "preview": self.preview,
            }


class Worker:
    """A daemon thread running submitted callables one after another."""

    def __init__(self, max_queue: int) -> None:
        if not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be a whole number >= 1, got {max_queue!r}")
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="altdiffusion-worker", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Future], Any]) -> Future:
        """Queue ``fn(future)``; its result or exception lands in the returned future."""
        if self._stop.is_set():
            raise QueueFull("the server is shutting down")
        future: Future = Future()
        try:
            self.queue.put_nowait((fn, future))
        except queue.Full:
            raise QueueFull(f"{self.queue.maxsize} jobs are already waiting") from None
        return future

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                fn, future = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                if not future.set_running_or_notify_cancel():
                    continue  # cancelled while waiting (its client went away)
                try:
                    result = fn(future)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            except Exception:  # never let the worker die
                logger.exception("worker: unexpected error")
            finally:
                self.queue.task_done()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        while True:  # fail whatever is still waiting
            try:
                _, future = self.queue.get_nowait()
            except queue.Empty:
                break
            with contextlib.suppress(Exception):
                future.cancel()
        self._thread.join(timeout)
