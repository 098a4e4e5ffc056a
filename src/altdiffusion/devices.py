"""Choosing a device and dtype: automatic by default, overridable, validated; naming one."""

from __future__ import annotations

import os
import platform

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


CPU_DTYPE_VARIABLE = "ALTDIFFUSION_CPU_DTYPE"  # auto | fp32 | bf16: image generation's CPU default


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


def select_generation_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """:func:`select_dtype` for image generation, except that on the CPU the automatic choice is bf16
    where the CPU computes bf16 natively: there it is about twice as fast as fp32 and the image stays
    within PSNR 48 dB of fp32's (benchmarks/README.md). ``ALTDIFFUSION_CPU_DTYPE`` (auto, fp32, bf16)
    sets that choice; fp32 gives a seed the same image on every machine."""
    if device.type != "cpu" or not (dtype is None or str(dtype) == "auto"):
        return select_dtype(device, dtype)
    setting = os.environ.get(CPU_DTYPE_VARIABLE, "auto").strip().lower() or "auto"
    if setting == "auto":
        return torch.bfloat16 if cpu_computes_bf16() else torch.float32
    if DTYPES.get(setting) not in SUPPORTED["cpu"]:
        raise InvalidInputError(f"{CPU_DTYPE_VARIABLE}={setting!r} is not a CPU dtype; set it to auto, fp32 or bf16")
    return DTYPES[setting]


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX). Without it PyTorch emulates bf16
    matmuls and convolutions, about 30x slower than fp32 (benchmarks/README.md)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up with care
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def describe_device(device: torch.device) -> str:
    """The GPU's name, or the CPU's kind and the threads torch uses on it (where a figure was measured)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
