"""What the routes share: the configuration, models, LoRAs, the one worker and its job state.

One job at a time: a single worker thread runs generations and model switches from a
queue of at most ``max_queue`` waiting jobs (see runner.py); a request that finds the queue
full gets 429. A client that disconnects while waiting frees its place: a queued job is
dropped and a running one is interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from altdiffusion.serve.config import ServeConfig
from altdiffusion.serve.jobs import run_generation
from altdiffusion.serve.loras import LoraRegistry
from altdiffusion.serve.plans import Plan, Planner
from altdiffusion.serve.progress import ProgressReporter
from altdiffusion.serve.registry import ModelRegistry
from altdiffusion.serve.responses import generation_response
from altdiffusion.serve.runner import JobState, Worker

logger = logging.getLogger("altdiffusion.serve")

DISCONNECT_POLL_S = 0.25
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; nobody reads it


class Service:
    """Built once per app from a validated :class:`ServeConfig`; resolves (and preloads) models first,
    so a wrong model fails before any thread starts."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.models = ModelRegistry(config)
        self.models.resolve_all()
        if config.preload:
            self.models.load()
        self.loras = LoraRegistry(config.lora_dir)
        self.planner = Planner(config, self.models, self.loras)
        self.state = JobState(time_limit=config.max_job_seconds)
        self.progress = ProgressReporter(self.state)
        self.worker = Worker(config.max_queue)
        self.models.hash_in_background()

    def ensure_worker(self) -> None:
        """A worker again when the app is served after a shutdown stopped the previous one."""
        if not self.worker.alive():
            self.worker = Worker(self.config.max_queue)

    async def shutdown(self) -> None:
        self.state.interrupt()
        await run_in_threadpool(self.worker.stop)

    async def generate(self, request: Request, plan: Plan):
        """Run ``plan`` on the worker; the A1111 response (encoded there, off the event loop)."""

        def job(future: Future) -> dict[str, Any]:
            return generation_response(plan, run_generation(plan, self.models, self.state, future))

        return await self.run(request, job)

    async def run(self, request: Request, job: Callable[[Future], Any]):
        """``job(future)``'s result from the worker, or a 499 response if the client went away first."""
        future = self.worker.submit(job)  # QueueFull (429) when max_queue jobs are waiting
        waiter = asyncio.wrap_future(future)
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=DISCONNECT_POLL_S)
            if done:
                return waiter.result()
            if await request.is_disconnected():
                self._abandon(future, waiter)
                return Response(status_code=CLIENT_CLOSED_REQUEST)

    def _abandon(self, future: Future, waiter: asyncio.Future) -> None:
        if not self.worker.cancel(future):
            self.state.interrupt(future)
        logger.info("client went away; its job was %s", "dropped" if future.cancelled() else "interrupted")
        with contextlib.suppress(BaseException):
            waiter.cancel()
