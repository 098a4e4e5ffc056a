"""Batches prepared in data worker processes, in exactly the order one process makes them.

A task that decodes images splits its data in two (see ``training/data.py``): *plans*, the
micro-batches as samples with their captions chosen (reading shards, cheap), and ``prepare``,
which turns a plan into tensors (decoding and resizing images, tokenising: dear). With ``workers``
= N, each of N processes reads every plan and prepares every N-th (plan ``i`` in worker ``i % N``),
and torch's DataLoader hands them on round-robin, so the batches are the same, in the same order,
as ``workers`` = 0 makes them in the training process: a run and its resume see the same data
whatever N is. Why processes: on a GPU the training process must keep launching kernels while the
next batches are decoded (``benchmarks/README.md``, "Data workers").

Each prepared batch comes with the samples its plan passed over (empty captions, corrupt images),
added to the task's counter in the training process, where the logs and ``data_report.json``
read it. An error in a worker reaches the training process as itself (``InvalidInputError``: its
message alone, no worker traceback); any other as a RuntimeError carrying the worker's traceback.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from collections.abc import Callable, Iterator

import torch

from altdiffusion.errors import InvalidInputError
from altdiffusion.training.data import SkipCounter

MAX_AUTO_WORKERS = 4


def auto_workers(device_type: str, processes_on_node: int) -> int:
    """``--workers auto``: on a CUDA GPU up to 4 per training process, leaving one core per process
    for it; elsewhere none: on the CPU a worker takes cores from the training step itself
    (benchmarks/README.md, "Data workers"), and on Apple's MPS forking is not safe."""
    if device_type != "cuda":
        return 0
    cores = (os.cpu_count() or 1) // max(1, processes_on_node)
    return max(0, min(MAX_AUTO_WORKERS, cores - 1))


def prepared_batches(
    make_plans: Callable[[], Iterator],
    prepare: Callable,
    workers: int,
    skipped: SkipCounter,
    *,
    pin_memory: bool = False,
) -> Iterator:
    """``prepare(plan)`` for each plan of ``make_plans()``, in order; ``prepare`` returns (batch,
    passed-over counts), the counts go to ``skipped`` and the batch is yielded."""
    if workers < 0:
        raise InvalidInputError(f"--workers must be 0 or more, got {workers}")
    if workers == 0:
        for plan in make_plans():
            batch, counts = prepare(plan)
            skipped.merge(counts)
            yield batch
        return
    if sys.platform == "win32":
        raise InvalidInputError("--workers needs the fork start method (Linux, macOS); leave out --workers here")
    loader = torch.utils.data.DataLoader(
        _EveryNth(make_plans, prepare),
        batch_size=None,
        collate_fn=_unchanged,  # the default turns tuples into lists and numpy arrays into tensors
        num_workers=workers,
        multiprocessing_context="fork",  # the task (tokenizer, model folders) reaches the workers as is
        pin_memory=pin_memory,
        prefetch_factor=2,
    )
    for item in loader:
        if isinstance(item, _Failure):
            item.raise_it()
        batch, counts = item
        skipped.merge(counts)
        yield batch


def _unchanged(item):
    return item


class _EveryNth(torch.utils.data.IterableDataset):
    """Worker ``w`` of ``N``: every plan read, plans ``w``, ``w + N``, ... prepared."""

    def __init__(self, make_plans: Callable[[], Iterator], prepare: Callable):
        super().__init__()
        self.make_plans, self.prepare = make_plans, prepare

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        count, me = (info.num_workers, info.id) if info is not None else (1, 0)
        try:
            for i, plan in enumerate(self.make_plans()):
                if i % count == me:
                    yield self.prepare(plan)
        except Exception as err:  # every error must reach the training process
            yield _Failure.of(err)


class _Failure:
    """An error raised in a worker, in a form that survives the trip to the training process."""

    def __init__(self, error: BaseException):
        self.error = error

    @classmethod
    def of(cls, err: Exception) -> _Failure:
        if isinstance(err, InvalidInputError):
            try:
                pickle.dumps(err)
                return cls(err)
            except Exception:  # an unpicklable subclass: keep its message
                return cls(InvalidInputError(str(err)))
        return cls(RuntimeError(f"a data worker failed:\n{traceback.format_exc()}"))

    def raise_it(self):
        raise self.error


class PlannedBatches:
    """A task whose data comes as ``plans`` + ``prepare`` (and a ``skipped`` counter): ``batches``
    prepares them in the calling process, for code that wants a task's batches outside the loop."""

    def batches(self, start_step: int, micro: int, rank: int, world: int, grad_accum: int) -> Iterator:
        def make_plans():
            return self.plans(start_step, micro, rank, world, grad_accum)

        return prepared_batches(make_plans, self.prepare, 0, self.skipped)
