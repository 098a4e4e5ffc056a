#!/usr/bin/env python
"""One full-size UNet step on the CPU in float32 and bfloat16: does bf16 pay on this CPU?

SD v1.4's UNet (AltDiffusion-m9's), random weights, the CFG batch of 2 at 256 px (32x32 latents),
77 tokens: fp32, bf16, fp32 again (the two fp32 calls bracket the bf16 one against drifting load),
and the PSNR of the bf16 output against fp32's. Used when the full pipeline run
(``speed_memory.py --device cpu``) does not fit the machine's time.

    python benchmarks/cpu_unet_dtype.py
"""

import sys
import time
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import SD14_UNET


def main() -> None:
    torch.set_grad_enabled(False)
    torch.manual_seed(1)
    unet = UNet2DConditionModel(**SD14_UNET).eval()
    x, cond, t = torch.randn(2, 4, 32, 32), torch.randn(2, 77, 768) * 0.5, torch.tensor(500)
    outputs = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp32 again", torch.float32)):
        unet = unet.to(dtype)
        start = time.perf_counter()
        outputs[name] = unet(x.to(dtype), t, encoder_hidden_states=cond.to(dtype)).sample.float()
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
    error = outputs["bf16"] - outputs["fp32"]
    span = outputs["fp32"].max() - outputs["fp32"].min()
    psnr = float(10 * torch.log10(span**2 / error.pow(2).mean()))
    print(
        f"bf16 vs fp32 PSNR {psnr:.1f} dB; threads {torch.get_num_threads()}; {torch.backends.cpu.get_cpu_capability()}"
    )


if __name__ == "__main__":
    main()
