"""How close to the machine's arithmetic peak a run is: FLOPs counted, matmul peak measured.

A speed-up goal can only be met if the work fits: FLOPs per image divided by the dtype's measured
matmul peak is the fastest that image can be made in that dtype on this machine, whatever the software.

    count_flops(fn)        FLOPs of one call, torch's FlopCounterMode plus the CPU's flash attention
    matmul_peak(dtype)     GFLOP/s of large square matmuls (oneDNN): the best over sizes and tries
"""

from __future__ import annotations

import time

import torch
from torch.utils import flop_counter

# FlopCounterMode has formulas for the CUDA attention kernels but not the CPU's, which SDPA uses here.
if torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default not in flop_counter.flop_registry:

    @flop_counter.register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
    def _cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn, *args, **kwargs) -> int:
    """FLOPs (multiply and add counted apart) of ``fn(*args, **kwargs)``, run eagerly once."""
    with flop_counter.FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def matmul_peak(dtype: torch.dtype, sizes=(1024, 2048), calls: int = 8, tries: int = 3) -> float:
    """GFLOP/s of square matmuls in ``dtype`` on the CPU: the best mean of ``calls`` over sizes and tries."""
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b  # oneDNN's first call picks and packs
        for _ in range(tries):
            start = time.perf_counter()
            for _ in range(calls):
                a @ b
            best = max(best, 2 * size**3 * calls / (time.perf_counter() - start) / 1e9)
    return best
