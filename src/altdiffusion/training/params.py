"""Settings shared by every training command, and the batch arithmetic behind them.

The *global* batch is what the recipe specifies; each process runs
``global_batch / (world_size * grad_accum)`` samples per micro-step, so one run gives the
same gradients on 1 process or N (checked in tests) and the same schedule either way.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from altdiffusion.errors import InvalidInputError


@dataclass
class TrainSettings:
    output_dir: Path
    steps: int = 1000
    batch_size: int = 64  # global batch per optimizer step
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "cosine"  # cosine | constant
    min_lr: float = 0.0
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # no | bf16 | fp16: the compute's dtype; weights train in float32
    save_dtype: str = "source"  # source (the checkpoint's dtype) | float32 | float16 | bfloat16
    gradient_checkpointing: bool = False
    save_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    resume: str | None = None  # None, "auto" (latest in output_dir) or a checkpoint folder
    optimizer: str = "adamw"  # adamw | adamw8bit (bitsandbytes)
    workers: int | str = "auto"  # data worker processes per training process, or "auto" (training/prefetch.py)
    tensorboard: bool = True
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def micro_batch(self, world_size: int) -> int:
        per = world_size * self.grad_accum
        if self.batch_size % per:
            raise InvalidInputError(
                f"--batch-size {self.batch_size} must be divisible by processes x --grad-accum = "
                f"{world_size} x {self.grad_accum} = {per}"
            )
        return self.batch_size // per

    def validate(self) -> None:
        if self.steps <= 0:
            raise InvalidInputError(f"--steps must be positive, got {self.steps}")
        if self.batch_size <= 0 or self.grad_accum <= 0:
            raise InvalidInputError("--batch-size and --grad-accum must be positive")
        if not (self.lr > 0):
            raise InvalidInputError(f"--lr must be positive, got {self.lr}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise InvalidInputError(f"--lr-schedule must be cosine or constant, got {self.lr_schedule!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise InvalidInputError(f"--mixed-precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.save_dtype not in ("source", "float32", "float16", "bfloat16"):
            raise InvalidInputError(
                f"--save-dtype must be source, float32, float16 or bfloat16, got {self.save_dtype!r}"
            )
        if self.optimizer not in ("adamw", "adamw8bit"):
            raise InvalidInputError(f"--optimizer must be adamw or adamw8bit, got {self.optimizer!r}")
        if self.save_every <= 0 or self.log_every <= 0:
            raise InvalidInputError("--save-every and --log-every must be positive")
        if self.workers != "auto" and not (isinstance(self.workers, int) and self.workers >= 0):
            raise InvalidInputError(
                f"--workers must be auto or a number of processes (0 or more), got {self.workers!r}"
            )


def add_common_arguments(p: argparse.ArgumentParser, *, lr: float, batch_size: int, steps: int) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--output-dir", required=True, type=Path, help="checkpoints, logs and the final model go here")
    g.add_argument("--steps", type=int, default=steps, help="optimizer steps")
    g.add_argument("--batch-size", type=int, default=batch_size, help="global batch (all processes, all accumulation)")
    g.add_argument("--lr", type=float, default=lr)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--warmup-steps", type=int, default=0)
    g.add_argument("--lr-schedule", default="cosine", choices=["cosine", "constant"])
    g.add_argument("--min-lr", type=float, default=0.0, help="cosine schedule floor")
    g.add_argument("--grad-accum", type=int, default=1)
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="0 disables clipping")
    g.add_argument(
        "--mixed-precision",
        default="no",
        choices=["no", "bf16", "fp16"],
        help="compute in bf16/fp16 (autocast); the weights always train in float32",
    )
    g.add_argument(
        "--save-dtype",
        default="source",
        choices=["source", "float32", "float16", "bfloat16"],
        help="dtype of the exported weights (default: the source checkpoint's)",
    )
    g.add_argument("--gradient-checkpointing", action="store_true")
    g.add_argument(
        "--save-every",
        type=int,
        default=500,
        help="write a resumable checkpoint every N steps (the last step too, when N divides it)",
    )
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--resume", nargs="?", const="auto", default=None, help="continue from the latest checkpoint (or a given one)"
    )
    g.add_argument(
        "--optimizer", default="adamw", choices=["adamw", "adamw8bit"], help="adamw8bit needs bitsandbytes (GPU)"
    )
    g.add_argument(
        "--workers",
        type=_workers,
        default="auto",
        help="processes that decode the training images beside each training process, the batches "
        "unchanged (auto: none on the CPU, up to 4 on a GPU)",
    )
    g.add_argument("--no-tensorboard", action="store_true")
    g.add_argument("--no-progress", action="store_true")


def _workers(value: str) -> int | str:
    """``--workers``: "auto" or a count; anything else is left for ``validate`` to name."""
    return int(value) if value.strip().lstrip("-").isdigit() else value


def settings_from_args(args: argparse.Namespace, **overrides) -> TrainSettings:
    """The validated loop settings of a training command; ``overrides`` replace options
    whose default depends on the command (DreamBooth's per-mode ``lr`` and ``steps``)."""
    options = dict(
        output_dir=args.output_dir,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        lr_schedule=args.lr_schedule,
        min_lr=args.min_lr,
        grad_accum=args.grad_accum,
        max_grad_norm=args.max_grad_norm,
        mixed_precision=args.mixed_precision,
        save_dtype=args.save_dtype,
        gradient_checkpointing=args.gradient_checkpointing,
        save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints,
        log_every=args.log_every,
        seed=args.seed,
        resume=args.resume,
        optimizer=args.optimizer,
        workers=args.workers,
        tensorboard=not args.no_tensorboard,
        progress=not args.no_progress,
    )
    settings = TrainSettings(**{**options, **overrides})
    settings.validate()
    return settings
