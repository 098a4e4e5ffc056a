"""Choosing a device and dtype: automatic by default, overridable, validated."""

from __future__ import annotations

import torch

from altdiffusion.errors import InvalidInputError

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}

# What each device type can run well; fp16 on CPU is missing many kernels and slow.
SUPPORTED = {
    "cpu": (torch.float32, torch.bfloat16),
    "cuda": (torch.float16, torch.bfloat16, torch.float32),
    "mps": (torch.float16, torch.float32),
}


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given (validated), else CUDA, then Apple MPS, then CPU."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInputError(f"unknown device {device!r}; use cpu, cuda, cuda:N, mps or auto") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} was asked for but CUDA is not available here; use --device cpu")
    if chosen.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidInputError(f"device {device!r} was asked for but MPS is not available here; use --device cpu")
    if chosen.type not in SUPPORTED:
        raise InvalidInputError(f"device type {chosen.type!r} is not supported; use cpu, cuda or mps")
    return chosen


def select_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """``dtype`` if given (validated for the device), else fp16 on CUDA/MPS and fp32 on CPU."""
    if dtype is None or str(dtype) == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    else:
        key = str(dtype).removeprefix("torch.")
        if key not in DTYPES:
            raise InvalidInputError(f"unknown dtype {dtype!r}; use fp32, fp16, bf16 or auto")
        chosen = DTYPES[key]
    if chosen not in SUPPORTED[device.type]:
        names = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED[device.type])
        raise InvalidInputError(f"dtype {chosen} is not supported on {device.type}; use one of {names}")
    return chosen
