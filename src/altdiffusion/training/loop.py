"""The training loop every stage shares: optimise, log, checkpoint atomically, resume exactly.

A *task* (teacher learning, contrastive learning, ...) supplies the model, a deterministic
batch stream that can start at any step, a loss, and an export. The loop owns everything
else, so resuming restores the same model, optimizer, LR schedule, RNG state and data
position, and an interrupted run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from altdiffusion.errors import InvalidInputError, TrainingDivergedError
from altdiffusion.training.distributed import make_accelerator
from altdiffusion.training.guard import DivergenceGuard
from altdiffusion.training.params import TrainSettings
from altdiffusion.training.precision import (
    SAVE_DTYPES,
    dtype_name,
    finalize_weight_files,
    non_finite,
    to_master_weights,
)
from altdiffusion.training.prefetch import auto_workers, prepared_batches

if TYPE_CHECKING:
    from accelerate import Accelerator

STATE_FILE = "trainer_state.json"


class Task(Protocol):
    name: str
    model: nn.Module

    def batches(self, start_step: int, micro_batch: int, rank: int, world: int, grad_accum: int) -> Iterator:
        """Micro-batches for this rank, in order, starting at optimizer step ``start_step``. A task may
        instead give ``plans`` (same arguments) and ``prepare(plan) -> (batch, passed-over counts)``
        and a ``skipped`` counter: the loop then prepares its batches in ``--workers`` processes."""

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]: ...

    def export(self, model: nn.Module, folder: Path) -> None: ...

    # Optional: checkpoint_objects() -> objects with state_dict/load_state_dict saved with each
    # checkpoint; on_step_end(model, step, is_main) -> None after every optimizer step;
    # source_dtype: the dtype the checkpoint was stored in, when the task loaded it in another
    # (the default --save-dtype; otherwise the model's dtype when training starts).


def lr_factor(step: int, settings: TrainSettings) -> float:
    """Linear warmup, then constant or cosine decay to ``min_lr``."""
    if settings.warmup_steps and step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    if settings.lr_schedule == "constant":
        return 1.0
    span = max(1, settings.steps - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / span)
    floor = settings.min_lr / settings.lr
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(params, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW; ``adamw8bit`` keeps its moments in 8 bits (bitsandbytes) to save GPU memory."""
    if settings.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise InvalidInputError(
                "--optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes (CUDA machines)"
            ) from None
        return bnb.optim.AdamW8bit(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)


def checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder counts once its state file exists)."""
    folder = output_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _resume_point(settings: TrainSettings) -> Path | None:
    if settings.resume is None:
        return None
    if settings.resume == "auto":
        found = checkpoints(settings.output_dir)
        return found[-1] if found else None
    path = Path(settings.resume)
    if not (path / STATE_FILE).is_file():
        raise InvalidInputError(f"--resume {path}: not a complete checkpoint (no {STATE_FILE})")
    return path


def train(task: Task, settings: TrainSettings) -> Path:
    """Run ``task`` to ``settings.steps``; returns the exported model folder."""
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    session = _set_up(task, settings)
    start = _resume(session.acc, settings)
    if session.acc.is_main_process and session.acc.log_with:
        session.acc.init_trackers(task.name)
    try:
        _run_steps(task, settings, session, start)
        final = _export(task, session, settings)
    except TrainingDivergedError:
        _shut_down(session.acc)
        raise
    _shut_down(session.acc)
    return final


@dataclass
class _Session:
    """What a run prepares once: the accelerator, and the model, optimizer and LR schedule it wraps."""

    acc: Accelerator
    model: nn.Module
    params: list[nn.Parameter]  # the trained ones (clipped together)
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    micro: int  # samples per process per micro-step
    source_dtype: torch.dtype  # the checkpoint's; the weights train in float32 whatever it is
    guard: DivergenceGuard


def _set_up(task: Task, settings: TrainSettings) -> _Session:
    from accelerate.utils import set_seed

    out = settings.output_dir
    acc = make_accelerator(settings.mixed_precision, settings.grad_accum, out / "tensorboard", settings.tensorboard)
    set_seed(settings.seed)
    micro = settings.micro_batch(acc.num_processes)
    model = task.model
    loaded_dtype = to_master_weights(model)
    source_dtype = getattr(task, "source_dtype", None) or loaded_dtype
    if settings.gradient_checkpointing and hasattr(model, "enable_gradient_checkpointing"):
        model.enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InvalidInputError(f"{task.name}: nothing to train (every parameter is frozen)")
    optimizer = make_optimizer(params, settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, settings))
    model, optimizer = acc.prepare(model, optimizer)
    acc.register_for_checkpointing(schedule)
    for extra in getattr(task, "checkpoint_objects", lambda: [])():  # e.g. an EMA copy of the weights
        acc.register_for_checkpointing(extra)
    guard = DivergenceGuard(acc, settings, params)
    return _Session(acc, model, params, optimizer, schedule, micro, source_dtype, guard)


def _resume(acc: Accelerator, settings: TrainSettings) -> int:
    """The step to start at: a checkpoint's (model, optimizer, schedule and RNG restored), or 0."""
    resume_from = _resume_point(settings)
    if resume_from is not None:
        acc.load_state(str(resume_from))
        start = json.loads((resume_from / STATE_FILE).read_text())["step"]
        acc.print(f"resumed from {resume_from} at step {start}")
        return start
    if settings.resume == "auto":
        acc.print(f"--resume: no checkpoint in {settings.output_dir / 'checkpoints'} yet; starting at step 0")
    return 0


def _run_steps(task: Task, settings: TrainSettings, session: _Session, start: int) -> None:
    acc, model = session.acc, session.model
    stream = _batches(task, settings, session, start)
    log = _StepLog(acc, settings, start, task.name)
    model.train()
    for step in range(start, settings.steps):
        done = step + 1
        loss, metrics = _optimizer_step(task, settings, session, stream, done)
        session.schedule.step()
        log.count(settings.batch_size)
        if hasattr(task, "on_step_end"):  # EMA updates, validation images
            task.on_step_end(acc.unwrap_model(model), done, acc.is_main_process)
        if done % settings.log_every == 0 or done == settings.steps:
            if session.guard.scaled:
                metrics["skipped_steps"] = session.guard.skipped_total
            log.write(done, loss, metrics, session.schedule.get_last_lr()[0])
        log.advance()
        # The last step too: a later run with more --steps and --resume continues from it.
        if done % settings.save_every == 0:
            session.guard.check_weights(model, done)  # a checkpoint is always a good one
            _save_checkpoint(acc, settings, done)
    log.close()
    if session.guard.skipped_total:
        acc.print(f"fp16: the gradient scaler skipped {session.guard.skipped_total} of the updates")


def _batches(task: Task, settings: TrainSettings, session: _Session, start: int) -> Iterator:
    """The task's micro-batches from step ``start`` on; a task whose data comes as plans (images not
    yet decoded) has them prepared in ``--workers`` processes (training/prefetch.py)."""
    acc = session.acc
    where = (start, session.micro, acc.process_index, acc.num_processes, settings.grad_accum)
    if getattr(task, "plans", None) is None:
        if settings.workers not in ("auto", 0):
            raise InvalidInputError(
                f"--workers {settings.workers}: {task.name} makes its batches in the training process (its data "
                "is text or a few images); leave out --workers"
            )
        return task.batches(*where)
    workers = settings.workers
    if workers == "auto":
        workers = auto_workers(acc.device.type, int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes)))
    if workers:
        acc.print(f"data: {workers} worker process{'es' if workers > 1 else ''} per training process")
    return prepared_batches(
        lambda: task.plans(*where), task.prepare, workers, task.skipped, pin_memory=acc.device.type == "cuda"
    )


def _optimizer_step(
    task: Task, settings: TrainSettings, session: _Session, stream: Iterator, step: int
) -> tuple[torch.Tensor, dict[str, float]]:
    """``grad_accum`` micro-batches, then one (clipped) update; the last micro-batch's loss and metrics.
    A non-finite loss or gradient stops the run here, before the update can spread it."""
    acc, model, optimizer, guard = session.acc, session.model, session.optimizer, session.guard
    metrics: dict[str, float] = {}
    for _ in range(settings.grad_accum):
        batch = next(stream)
        with acc.accumulate(model):
            loss, metrics = task.loss(model, batch)
            guard.check_loss(loss, step)
            acc.backward(loss)
            if acc.sync_gradients:
                guard.clip_and_check_gradients(step)
            optimizer.step()
            if acc.sync_gradients:
                guard.count_skipped(optimizer, step)
            optimizer.zero_grad(set_to_none=True)
    return loss, metrics


class _StepLog:
    """``log.jsonl``, the tracker and the progress bar; samples/s is measured per logging window."""

    def __init__(self, acc: Accelerator, settings: TrainSettings, start: int, name: str):
        self.acc, self.path = acc, settings.output_dir / "log.jsonl"
        self.bar = _progress(acc.is_main_process and settings.progress, start, settings.steps, name)
        self.window_start, self.window_samples = time.perf_counter(), 0

    def count(self, samples: int) -> None:
        self.window_samples += samples

    def write(self, step: int, loss: torch.Tensor, metrics: dict, lr: float) -> None:
        acc = self.acc
        # A task may report a loss other than the one it backpropagates (see contrastive.py).
        reported = metrics.pop("loss", loss)
        loss_value = acc.reduce(reported.detach().float(), reduction="mean").item()
        elapsed = time.perf_counter() - self.window_start
        record = {
            "step": step,
            "loss": loss_value,
            "lr": lr,
            "samples_per_s": self.window_samples / max(elapsed, 1e-9),
            **metrics,
        }
        self.window_start, self.window_samples = time.perf_counter(), 0
        if acc.is_main_process:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            if acc.log_with:
                acc.log({k: v for k, v in record.items() if k != "step"}, step=step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss_value:.4g}", samples_s=f"{record['samples_per_s']:.1f}")

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _export(task: Task, session: _Session, settings: TrainSettings) -> Path:
    """Export to a temporary folder, then rename it to ``out/model``: never a half-written model,
    nor one with a non-finite tensor. Weight files are written in ``--save-dtype``."""
    acc, out = session.acc, settings.output_dir
    final = out / "model"
    model = acc.unwrap_model(session.model)
    dtype = session.source_dtype if settings.save_dtype == "source" else SAVE_DTYPES[settings.save_dtype]
    session.guard.check_weights(model, settings.steps)
    overflow = non_finite((name, t.to(dtype)) for name, t in model.state_dict().items())
    if overflow:
        session.guard.stop(
            settings.steps, f"{overflow[0]} overflows {dtype_name(dtype)}; export with --save-dtype float32"
        )
    acc.wait_for_everyone()
    if acc.is_main_process:
        tmp = out / ".model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        task.export(model, tmp)
        try:
            finalize_weight_files(tmp, dtype)
        except TrainingDivergedError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        why = "the source checkpoint's dtype" if settings.save_dtype == "source" else "--save-dtype"
        acc.print(f"exported {final} in {dtype_name(dtype)} ({why}; trained in float32)")
    acc.wait_for_everyone()
    return final


def _shut_down(acc: Accelerator) -> None:
    acc.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Shut gloo down while every rank is alive; left to interpreter teardown, DDP's reducer
        # can deadlock joining a gloo thread that waits for the GIL.
        acc.free_memory()
        torch.distributed.destroy_process_group()


def _save_checkpoint(acc, settings: TrainSettings, step: int) -> None:
    """Write to a temporary folder, then rename: a killed run never leaves a half checkpoint."""
    folder = settings.output_dir / "checkpoints"
    tmp = folder / f".tmp-step-{step}"
    final = folder / f"step-{step}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if acc.is_main_process:
        (tmp / STATE_FILE).write_text(
            json.dumps({"step": step, "batch_size": settings.batch_size, "seed": settings.seed})
        )
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoints(settings.output_dir)[: -settings.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def _progress(enabled: bool, start: int, total: int, name: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=name, unit="step")
