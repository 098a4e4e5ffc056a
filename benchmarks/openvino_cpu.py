#!/usr/bin/env python
"""Our CPU default (torch, float32) against OpenVINO's CPU runtime, in one run (issue 17, item 5).

Full-size random-weight AltDiffusion-m9 (XLM-R large + SD v1.4 UNet + SD VAE, ``speed_memory.py``'s
``build_parts``), our pipeline at 256 px, 20 PNDM steps, CFG 7.5, batch 1, twice per backend:

    torch     the pipeline as it ships (float32: bf16 is emulated on CPUs without AVX-512 BF16)
    openvino  the same pipeline, its UNet (about 95% of an image's time) run by OpenVINO:
              ``openvino.convert_model`` of the torch UNet, compiled for "CPU" at OpenVINO's
              default precision for this CPU (recorded)

measured: the conversion and compile seconds, s/image of each backend (ABBA order, median; the
first call of each is a warm-up at 2 steps), their ratio, and the PSNR of OpenVINO's image against
torch's (same seed). Text encoder, scheduler and VAE decoder are torch in both, so the ratio is the
UNet's backend and nothing else.

Why not optimum-intel: ``pip install "optimum-intel[openvino]"`` pulls torchvision 0.29.1 and with it
torch 2.14.1 and the CUDA 13 wheels (``pip install --dry-run`` lists them), and installed with
``--no-deps`` it does not import against this project's transformers (a Qwen2-VL name it expects is
gone). Its Stable Diffusion export converts each component with the same ``openvino.convert_model``
and runs it with the same runtime, so this compares the runtime it would use.

    pip install openvino                               # no torch among its dependencies
    python benchmarks/openvino_cpu.py                  # about 10 minutes on 2 cores
    python benchmarks/openvino_cpu.py --smoke          # tiny random m9, seconds: checks the script
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from procinfo import cpu_name, mem_available_mib, print_and_save
from speed_memory import build_parts, pipeline_generate, psnr, timed

RESULTS = Path(__file__).resolve().parent / "results"


class OpenVINOUNet(torch.nn.Module):
    """A UNet whose forward runs on OpenVINO; config, dtype and device are the torch UNet's."""

    def __init__(self, unet: torch.nn.Module, compiled):
        super().__init__()
        self.config, self.dtype, self.device = unet.config, unet.dtype, unet.device
        self.compiled = compiled

    def forward(self, sample, timestep, encoder_hidden_states, **_):
        inputs = [sample.numpy(), np.asarray(timestep, dtype=np.int64), encoder_hidden_states.numpy()]
        return SimpleNamespace(sample=torch.from_numpy(self.compiled(inputs)[0].copy()))


def convert_unet(unet: torch.nn.Module) -> tuple[OpenVINOUNet, dict]:
    """The UNet converted and compiled for OpenVINO's CPU device, and how long each took."""
    import openvino as ov

    class SampleOnly(torch.nn.Module):  # convert_model traces tensors in, tensors out
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states=encoder_hidden_states).sample

    cross = unet.config.cross_attention_dim
    example = (torch.randn(2, unet.config.in_channels, 32, 32), torch.tensor(999), torch.randn(2, 77, cross))
    start = time.perf_counter()
    with torch.no_grad():
        model = ov.convert_model(SampleOnly().eval(), example_input=example)
    converted = time.perf_counter() - start
    compiled = ov.Core().compile_model(model, "CPU")
    facts = {
        "convert_s": converted,
        "compile_s": time.perf_counter() - start - converted,
        "openvino": ov.__version__,
        "inference_precision": str(compiled.get_property("INFERENCE_PRECISION_HINT")),
        "openvino_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
    }
    return OpenVINOUNet(unet, compiled), facts


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny random m9 at 32 px, 3 steps")
    p.add_argument("--pairs", type=int, default=1, help="ABBA pairs per backend (each pair: two images each)")
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/openvino-cpu-DATE.json")
    args = p.parse_args(argv)
    size, steps = (32, 3) if args.smoke else (256, 20)
    torch.set_grad_enabled(False)

    from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline

    parts = build_parts("m9", args.smoke)
    torch_pipe = AltDiffusionPipeline(**parts, name="bench")
    ov_unet, facts = convert_unet(parts["unet"])
    ov_pipe = AltDiffusionPipeline(**{**parts, "unet": ov_unet}, name="bench")
    backends = {"torch": pipeline_generate(torch_pipe), "openvino": pipeline_generate(ov_pipe)}
    for generate in backends.values():
        generate(1, size, 2)  # warm-up: first-call allocations, OpenVINO's first inference

    seconds, images = {name: [] for name in backends}, {}
    for i in range(2 * args.pairs):
        for name in list(backends) if i % 2 == 0 else list(backends)[::-1]:
            row = timed(backends[name], "cpu", 1, size, steps)
            seconds[name].append(row["seconds"])
            images[name] = row["images"]
            print(f"{name}: {row['seconds']:.1f} s", file=sys.stderr, flush=True)

    figures = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "model": "tiny random m9" if args.smoke else "full-size random AltDiffusion-m9",
        "size": size,
        "steps": steps,
        **facts,
        "s_per_image": {name: statistics.median(v) for name, v in seconds.items()},
        "calls_s": seconds,
        "torch_over_openvino": statistics.median(seconds["torch"]) / statistics.median(seconds["openvino"]),
        "psnr_openvino_vs_torch_db": psnr(images["openvino"], images["torch"]),
        "mem_available_mib_at_end": round(mem_available_mib()),
    }
    out = args.out or (None if args.smoke else RESULTS / f"openvino-cpu-{dt.date.today()}.json")
    print_and_save(figures, out)


if __name__ == "__main__":
    main()
