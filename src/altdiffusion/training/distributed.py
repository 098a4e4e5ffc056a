"""Process set-up (accelerate) and the one collective the contrastive loss needs.

Runs unchanged under ``python``, ``accelerate launch`` (DDP, DeepSpeed ZeRO, FSDP through the
configs in ``training/configs/``) and ``torchrun``; on CPU the backend is gloo.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def make_accelerator(mixed_precision: str, grad_accum: int, log_dir=None, tensorboard: bool = True):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    log_with = None
    if tensorboard:
        try:
            import tensorboard

            log_with = "tensorboard"
        except ImportError:
            log_with = None
    # accelerate only forms a gloo group from torchrun's environment when told it runs on CPU;
    # without this each process would silently train alone.
    on_cpu = not torch.cuda.is_available() and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    )
    return Accelerator(
        cpu=on_cpu,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=grad_accum,
        log_with=log_with,
        project_dir=str(log_dir) if log_dir else None,
        # We step the LR schedule ourselves once per optimizer step, whatever the world size.
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
    )


def gather_features(local: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, in rank order, with gradient flowing through this rank's rows only.

    Every rank then computes the loss over the global batch; DDP averages gradients, so the
    caller multiplies the loss by the world size to get the 1-process gradient.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    parts = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.detach().contiguous())
    parts[dist.get_rank()] = local
    return torch.cat(parts)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
