"""Dtype rules every training command shares, and the finiteness checks behind them.

- The optimizer updates float32 *master* weights whatever dtype the checkpoint was stored in:
  an AdamW step on float16 weights overflows (its update divides by ``sqrt(v) + eps`` with
  ``eps`` = 1e-8, below float16's range) and turns the model into NaN within a few steps.
  ``--mixed-precision bf16|fp16`` lowers only the *compute* (autocast), never the weights.
- The exported model is written in ``--save-dtype``: by default the source checkpoint's dtype,
  so a float16 download trains into a float16 export of the same size.
- Nothing non-finite is exported: every tensor of every written weight file is checked, after
  the cast too (a float32 value beyond 65504 becomes inf in float16).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from altdiffusion.errors import TrainingDivergedError

SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def floating_dtype(module: nn.Module) -> torch.dtype:
    """The dtype most of ``module``'s floating-point parameters have (float32 when it has none)."""
    counts = Counter()
    for p in module.parameters():
        if p.is_floating_point():
            counts[p.dtype] += p.numel()
    return counts.most_common(1)[0][0] if counts else torch.float32


def stored_dtype(folder: Path) -> torch.dtype | None:
    """The floating dtype of most of the weights stored in ``folder``'s safetensors files (or in
    one such file), read from their headers (no tensor is loaded); None when there is no such file."""
    from safetensors import safe_open

    counts: Counter = Counter()
    paths = [Path(folder)] if Path(folder).is_file() else sorted(Path(folder).glob("*.safetensors"))
    for path in paths:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open has no __iter__
                tensor = fh.get_slice(key)
                dtype = SAFETENSORS_DTYPES.get(tensor.get_dtype())
                if dtype is not None:
                    counts[dtype] += math.prod(tensor.get_shape()) * dtype.itemsize
    return counts.most_common(1)[0][0] if counts else None


def to_master_weights(model: nn.Module) -> torch.dtype:
    """Cast ``model`` to float32 in place (the same Parameter objects); returns its former dtype."""
    source = floating_dtype(model)
    if source != torch.float32:
        model.float()
    return source


def non_finite(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [name for name, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def finalize_weight_files(folder: Path, dtype: torch.dtype | None) -> list[Path]:
    """Check every tensor of every safetensors file under ``folder`` and rewrite the floating ones
    in ``dtype`` (None keeps them); raises :class:`TrainingDivergedError` naming the bad tensors."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from altdiffusion.models.weights import save_safetensors

    files = sorted(Path(folder).rglob("*.safetensors"))
    for path in files:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata()
        state = load_file(str(path))
        bad = non_finite(state.items())
        if dtype is not None:
            state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
            bad = bad or [f"{name} (overflows {dtype_name(dtype)})" for name in non_finite(state.items())]
        if bad:
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            raise TrainingDivergedError(
                f"not exporting: {path.name} would hold non-finite values in {shown}; "
                "lower --lr, or save in float32 (--save-dtype float32) if only the cast overflows"
            )
        save_safetensors(state, path, metadata)
    return files
