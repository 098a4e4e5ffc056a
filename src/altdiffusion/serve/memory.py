"""``/sdapi/v1/memory``: system RAM and CUDA memory, in A1111's shape (bytes)."""

from __future__ import annotations

import os
from typing import Any

import torch


def memory_stats() -> dict[str, Any]:
    return {"ram": ram_stats(), "cuda": cuda_stats()}


def ram_stats() -> dict[str, Any]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return {"free": vm.available, "used": vm.total - vm.available, "total": vm.total}
    except Exception:  # psutil is optional: fall back to sysconf
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total, free = page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
        return {"free": free, "used": total - free, "total": total}
    except (AttributeError, ValueError, OSError) as exc:
        return {"error": f"cannot read system memory: {exc}"}


# A1111's names for torch.cuda.memory_stats() counters (current and peak of each).
CUDA_COUNTERS = {
    "active": "active_bytes.all",
    "allocated": "allocated_bytes.all",
    "reserved": "reserved_bytes.all",
    "inactive": "inactive_split_bytes.all",
}


def cuda_stats() -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {"error": "CUDA is not available"}
    try:
        free, total = torch.cuda.mem_get_info()
        stats = torch.cuda.memory_stats()
    except Exception as exc:
        return {"error": str(exc)}
    out: dict[str, Any] = {"system": {"free": free, "used": total - free, "total": total}}
    for name, key in CUDA_COUNTERS.items():
        out[name] = {"current": stats.get(f"{key}.current", 0), "peak": stats.get(f"{key}.peak", 0)}
    out["events"] = {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)}
    return out
