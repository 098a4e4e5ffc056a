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

import collections
import datetime
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger("altdiffusion.serve")


class QueueFull(Exception):
    """The bounded job queue has no free slot."""


class JobTimeLimit(Exception):
    """The running job took longer than the server allows one request (``--max-job-seconds``)."""


class JobState:
    """Progress of the running job (A1111's ``shared.state``), guarded by one lock."""

    def __init__(self, time_limit: float | None = None) -> None:
        self.lock = threading.Lock()
        self.time_limit = time_limit  # seconds a job may run; should_stop() says stop after that
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
        self.timed_out = False
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
        if self.time_limit is not None and self.job and time.monotonic() - self.started > self.time_limit:
            self.timed_out = True
        return self.interrupted or self.skipped or self.timed_out

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
    """A daemon thread running submitted callables one after another, at most ``max_queue`` waiting."""

    def __init__(self, max_queue: int) -> None:
        if not isinstance(max_queue, int) or max_queue < 1:
            raise ValueError(f"max_queue must be a whole number >= 1, got {max_queue!r}")
        self.max_queue = max_queue
        self.waiting: collections.deque[tuple[Callable[[Future], Any], Future]] = collections.deque()
        self.ready = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="altdiffusion-worker", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Future], Any]) -> Future:
        """Queue ``fn(future)``; its result or exception lands in the returned future."""
        if self._stop.is_set():
            raise QueueFull("the server is shutting down")
        future: Future = Future()
        with self.ready:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{self.max_queue} jobs are already waiting")
            self.waiting.append((fn, future))
            self.ready.notify()
        return future

    def cancel(self, future: Future) -> bool:
        """Drop ``future``'s job if it is still waiting, freeing its place at once; False if it runs."""
        with self.ready:
            if not future.cancel():
                return False
            self.waiting = collections.deque(job for job in self.waiting if job[1] is not future)
            return True

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop.is_set()

    def _next(self) -> tuple[Callable[[Future], Any], Future] | None:
        with self.ready:
            while not self.waiting and not self._stop.is_set():
                self.ready.wait(0.2)
            return self.waiting.popleft() if self.waiting else None

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self._next()
            if job is not None:
                _run(*job)
            del job  # while the worker waits, nothing of the last job (its plan, its images) stays alive

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self.ready:  # fail whatever is still waiting
            for _, future in self.waiting:
                future.cancel()
            self.waiting.clear()
            self.ready.notify_all()
        self._thread.join(timeout)


def _run(fn: Callable[[Future], Any], future: Future) -> None:
    try:
        if not future.set_running_or_notify_cancel():
            return  # cancelled while waiting
        try:
            result = fn(future)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
    except Exception:  # never let the worker die
        logger.exception("worker: unexpected error")
