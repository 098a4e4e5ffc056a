#!/usr/bin/env python
"""One full-size UNet step on the CPU: fp32 against bf16, eager and compiled. Does bf16 pay on this
CPU, and what do torch.compile and inductor's freezing add?

SD v1.4's UNet (AltDiffusion-m9's), random weights, the CFG batch of 2 at 256 px (32x32 latents),
77 tokens. Variants (``--variants``, in this order by default):

    fp32          eager float32
    bf16          eager bfloat16
    bf16-compiled compiled as the speed mode compiles without freezing (channels-last, fused QKV)
    bf16-frozen   the same with inductor's freezing (the speed mode's CPU default)
    fp32 again    eager float32 once more: the two fp32 figures bracket the others against drifting load

Each variant: ``--calls`` timed calls after one untimed call (which compiles for the compiled
variants: its seconds are printed as the warm-up); printed: every call's seconds and the PSNR of the
variant's output against the first fp32's, and its GFLOP/s as a share of its dtype's matmul peak
(``roofline.py``: the step's FLOPs counted once, the peak measured on this machine first).

    python benchmarks/cpu_unet_dtype.py
    python benchmarks/cpu_unet_dtype.py --variants fp32,bf16    # the eager pair only, a minute
    python benchmarks/cpu_unet_dtype.py --variants fp32,bf16 --threads 1
"""

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import SD14_UNET
from roofline import count_flops, matmul_peak

VARIANTS = ("fp32", "bf16", "bf16-compiled", "bf16-frozen", "fp32 again")


def prepare(unet: UNet2DConditionModel, variant: str, cache_dir: str):
    """A copy of ``unet`` set up as ``variant`` says, and its dtype."""
    from altdiffusion.pipelines.speed import SpeedMode, compile_unet, configure_compile_cache

    dtype = torch.bfloat16 if variant.startswith("bf16") else torch.float32
    model = copy.deepcopy(unet).to(dtype)
    if variant in ("bf16-compiled", "bf16-frozen"):
        # Unfrozen graphs take the weights as inputs, so without a reset the frozen variant would reuse
        # the compiled variant's graph for this same-shaped copy instead of compiling its own.
        torch._dynamo.reset()
        speed = SpeedMode("default", 8, configure_compile_cache(cache_dir, 8), True, True, variant == "bf16-frozen")
        compile_unet(model, speed)
    return model, dtype


def psnr(output: torch.Tensor, reference: torch.Tensor) -> float:
    span = reference.max() - reference.min()
    return float(10 * torch.log10(span**2 / (output - reference).pow(2).mean()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    torch.manual_seed(1)
    unet = UNet2DConditionModel(**SD14_UNET).eval()
    x, cond, t = torch.randn(2, 4, 32, 32), torch.randn(2, 77, 768) * 0.5, torch.tensor(500)
    reference, cache_dir = None, tempfile.mkdtemp(prefix="inductor-")
    print(f"threads {torch.get_num_threads()}; {torch.backends.cpu.get_cpu_capability()}", flush=True)
    peaks = {dtype: matmul_peak(dtype) for dtype in (torch.float32, torch.bfloat16)}
    flops = count_flops(unet, x, t, encoder_hidden_states=cond)
    print(f"{flops / 1e9:.0f} GFLOP per step; matmul peak fp32 {peaks[torch.float32]:.0f}, "
          f"bf16 {peaks[torch.bfloat16]:.0f} GFLOP/s", flush=True)  # fmt: skip
    for variant in args.variants.split(","):
        model, dtype = prepare(unet, variant, cache_dir)
        inputs = (x.to(dtype), t)
        start = time.perf_counter()
        model(*inputs, encoder_hidden_states=cond.to(dtype))
        warm_up = time.perf_counter() - start
        seconds = []
        for _ in range(args.calls):
            start = time.perf_counter()
            output = model(*inputs, encoder_hidden_states=cond.to(dtype)).sample.float()
            seconds.append(time.perf_counter() - start)
        reference = output if reference is None else reference
        calls = ", ".join(f"{s:.2f}" for s in seconds)
        rate = flops / min(seconds) / 1e9
        print(f"{variant}: {calls} s (first call {warm_up:.1f} s); PSNR {psnr(output, reference):.1f} dB; "
              f"{rate:.0f} GFLOP/s, {rate / peaks[dtype]:.0%} of the {variant[:4]} matmul peak", flush=True)  # fmt: skip
        del model


if __name__ == "__main__":
    main()
