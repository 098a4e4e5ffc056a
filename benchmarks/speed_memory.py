#!/usr/bin/env python
"""Speed and memory modes versus diffusers' AltDiffusionPipeline, in one run (one process).

GPU (the default when CUDA is there): full-size random-weight AltDiffusion-m9 (XLM-R large + SD v1.4
UNet + SD VAE) and -m18 (SD 2.1-base UNet), float16, PNDM, CFG 7.5:

    diffusers   diffusers' deprecated AltDiffusionPipeline out of the box (SDPA attention)
    default     ours, every component resident
    speed       ours, pipe.enable_speed_mode() (compile, channels-last, fused QKV)
    balanced    ours, pipe.enable_memory_mode("balanced")
    low         ours, pipe.enable_memory_mode("low")

measured: s/image and it/s at 512 px, 50 steps, batch 1 and 4 (after one warm-up call; the speed
mode's warm-up, which compiles, is reported), peak VRAM (torch.cuda.max_memory_allocated) per mode,
peak VRAM at 1024 and 2048 px (2 steps: the UNet's and the decode's peaks at that size; OOM is
recorded), and the PSNR of the speed mode's image against the default mode's (same seed and dtype).
Every mode starts from deep copies of the same CPU weights. A time budget (``--budget-s``) skips
what would not fit, and says so in the results.

CPU (``--device cpu``): 256 px, 20 steps, batch 1: diffusers fp32, ours fp32, ours bf16, ours bf16 in speed
mode (compiled, frozen weights; its warm-up reported), with ``--int8`` ours in speed mode with the int8 UNet
(pipelines/int8.py; its warm-up quantizes: export, calibration, compile), with speed-up and PSNR against diffusers fp32;
and the roofline (``roofline.py``): the image's FLOPs, each row's GFLOP/s as a share of its dtype's
matmul peak measured on this machine, and the fastest the image could be at the bf16 peak.

``--smoke``: the same code on a tiny random m9 on the CPU (32 px, 3 steps), all modes, in about a minute.

Usage::

    python benchmarks/speed_memory.py                 # GPU, m9 and m18, within --budget-s 420
    python benchmarks/speed_memory.py --device cpu    # CPU run
    python benchmarks/speed_memory.py --device cpu --int8 --budget-s 2400    # with the int8 row
    python benchmarks/speed_memory.py --smoke

Results: ``benchmarks/results/speed_memory-<date>-<device>.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from fullsize import SD14_UNET, SD14_VAE, SD21_BASE_UNET, XLMR_LARGE_M9, XLMR_LARGE_M18
from generation import _diffusers_text_encoder
from roofline import count_flops, matmul_peak

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.append(str(HERE.parent))  # the tests package: the real XLM-R tokenizer

PROMPT = "一只穿着唐装的猫，国画风格，古建筑"
GUIDANCE, SEED = 7.5, 1234
GPU_MODES = ("diffusers", "default", "low", "balanced", "speed")  # the compiling mode last: it may not fit


# ---------------------------------------------------------------------------------------------- building


def build_parts(model: str, smoke: bool) -> dict:
    """Tokenizer, our text encoder, UNet, VAE and scheduler on the CPU (float32), seeded."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    from altdiffusion.models.text_encoder import AltTextEncoder, text_config_from_dict
    from altdiffusion.models.tiny import SCHEDULER_CONFIG

    scheduler = PNDMScheduler.from_config({k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")})
    if smoke:
        from altdiffusion.models.tiny import write_tiny_altdiffusion
        from altdiffusion.pipelines.components import load_components

        c = load_components(write_tiny_altdiffusion(Path(tempfile.mkdtemp()) / model, model, safety_checker=False))
        return dict(tokenizer=c.tokenizer, text_encoder=c.text_encoder, unet=c.unet, vae=c.vae, scheduler=scheduler)
    from tests.xlmr_tokenizer import real_xlmr_tokenizer

    text, unet = (XLMR_LARGE_M18, SD21_BASE_UNET) if model == "m18" else (XLMR_LARGE_M9, SD14_UNET)
    torch.manual_seed(0)
    text_encoder = AltTextEncoder(text_config_from_dict(dict(text)), head=model).eval()
    torch.manual_seed(1)
    unet = UNet2DConditionModel(**unet).eval()
    torch.manual_seed(2)
    vae = AutoencoderKL(**SD14_VAE).eval()
    return dict(tokenizer=real_xlmr_tokenizer(), text_encoder=text_encoder, unet=unet, vae=vae, scheduler=scheduler)


def make_generate(mode: str, parts: dict, device: str, dtype: torch.dtype, compile_mode: str = "default"):
    """``generate(batch, size, steps) -> (B, H, W, 3) floats`` for one mode, on fresh copies of the weights."""
    fresh = {k: copy.deepcopy(v) for k, v in parts.items()}
    if mode == "diffusers":
        return _diffusers_generate(fresh, device, dtype)
    from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline

    pipe = AltDiffusionPipeline(**fresh, name="bench").to(device, dtype)
    if mode in ("speed", "speed-int8"):
        pipe.enable_speed_mode(compile_mode=compile_mode, int8=mode == "speed-int8")
    elif mode in ("balanced", "low"):
        pipe.enable_memory_mode(mode)
    return pipeline_generate(pipe)


def pipeline_generate(pipe):
    """``generate(batch, size, steps)`` for one of our pipelines: the benchmark's prompt, seed and CFG."""

    def generate(batch: int, size: int, steps: int) -> np.ndarray:
        return pipe(PROMPT, num_inference_steps=steps, guidance_scale=GUIDANCE, height=size, width=size,
                    seed=SEED, num_images_per_prompt=batch, output_type="np", progress=False)  # fmt: skip

    return generate


def _diffusers_generate(parts: dict, device: str, dtype: torch.dtype):
    from diffusers import AltDiffusionPipeline as DiffusersAltDiffusionPipeline

    pipe = DiffusersAltDiffusionPipeline(
        vae=parts["vae"], text_encoder=_diffusers_text_encoder(parts["text_encoder"]), tokenizer=parts["tokenizer"],
        unet=parts["unet"], scheduler=parts["scheduler"], safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    ).to(device, dtype)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)

    def generate(batch: int, size: int, steps: int) -> np.ndarray:
        generator = torch.Generator("cpu").manual_seed(SEED)
        return pipe(PROMPT, num_inference_steps=steps, guidance_scale=GUIDANCE, height=size, width=size,
                    num_images_per_prompt=batch, generator=generator, output_type="np").images  # fmt: skip

    return generate


# ---------------------------------------------------------------------------------------------- measuring


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(generate, device: str, batch: int, size: int, steps: int) -> dict:
    """One call: seconds, s/image, it/s and (CUDA) peak allocated GiB; or the OOM."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        images = generate(batch, size, steps)
    except torch.OutOfMemoryError:
        return {"oom": True}
    _sync(device)
    seconds = time.perf_counter() - start
    row = {"seconds": seconds, "s_per_image": seconds / batch, "it_per_s": steps / seconds, "images": images}
    if device.startswith("cuda"):
        row["peak_vram_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def bench_mode(mode: str, parts: dict, args, budget: Budget) -> dict:
    """Warm-up, then 512 px (or the smoke size) at batch 1 and 4, then peaks at the larger sizes."""
    start = time.perf_counter()
    generate = make_generate(mode, parts, args.device, args.torch_dtype, args.compile_mode)
    result = {"build_s": time.perf_counter() - start}
    warm = timed(generate, args.device, 1, args.size, 2)
    result["warmup_s"] = warm.get("seconds")
    for batch in args.batches:
        # The speed mode's batch > 1 is a new shape bucket: a compile, so it needs the compile reserve.
        needed = args.compile_reserve_s / 2 if mode == "speed" and batch != 1 else args.reserve_s
        if budget.left() < needed:
            result[f"batch{batch}"] = {"skipped": "budget"}
            continue
        if mode == "speed" and batch != 1:  # compile the new bucket outside the timed call
            result[f"warmup_batch{batch}_s"] = timed(generate, args.device, batch, args.size, 2).get("seconds")
        steps = args.steps if mode != "low" else args.low_steps
        result[f"batch{batch}"] = {**timed(generate, args.device, batch, args.size, steps), "steps": steps}
    for size in args.large_sizes if mode != "speed" else ():
        if budget.left() < args.reserve_s:
            result[f"size{size}"] = {"skipped": "budget"}
            continue
        result[f"size{size}"] = timed(generate, args.device, 1, size, 2)
    del generate
    gc.collect()
    return result


def bench_model(model: str, args, budget: Budget, out: dict, save) -> None:
    """Every mode of ``model`` into ``out``; ``save()`` after each, so a run cut short keeps what it
    measured, and a mode that fails (a compile error, a cuBLAS allocation) is recorded, not fatal."""
    start = time.perf_counter()
    parts = build_parts(model, args.smoke)
    out.update(build_s=time.perf_counter() - start, modes={})
    for mode in args.modes:
        needed = args.compile_reserve_s if mode == "speed" else args.reserve_s  # compiling takes minutes
        if budget.left() < needed:
            out["modes"][mode] = {"skipped": "budget"}
            continue
        try:
            out["modes"][mode] = bench_mode(mode, parts, args, budget)
        except Exception as error:  # one device call: keep the other modes' figures
            out["modes"][mode] = {"error": repr(error)[:2000]}
        print(f"[{model}] {mode}: {'failed' if 'error' in out['modes'][mode] else 'done'}, "
              f"{budget.left():.0f} s of budget left", file=sys.stderr, flush=True)  # fmt: skip
        save()
    modes = out["modes"]
    if "images" in modes.get("speed", {}).get("batch1", {}) and "images" in modes.get("default", {}).get("batch1", {}):
        out["psnr_speed_vs_default_db"] = psnr(modes["speed"]["batch1"]["images"], modes["default"]["batch1"]["images"])


def bench_cpu_dtypes(args, budget: Budget) -> dict:
    """CPU: diffusers fp32, ours fp32, ours bf16, ours bf16 in speed mode at one size, each timed twice
    (order A B C D, then D C B A, so drifting load falls on all alike; the mean of the two), and ours'
    speed-up and PSNR against diffusers fp32. One copy of the weights at a time."""
    parts = build_parts("m9", args.smoke)
    peaks = {dtype: matmul_peak(dtype) for dtype in (torch.float32, torch.bfloat16)}  # again at the end
    configs = (("diffusers-fp32", "diffusers", torch.float32), ("ours-fp32", "default", torch.float32),
               ("ours-bf16", "default", torch.bfloat16), ("ours-bf16-speed", "speed", torch.bfloat16),
               ("ours-int8-speed", "speed-int8", torch.bfloat16))  # fmt: skip
    if not args.int8:
        configs = configs[:-1]
    calls, warm_ups, images = {name: [] for name, _, _ in configs}, {name: [] for name, _, _ in configs}, {}
    for order in (configs, configs[::-1]):
        for name, mode, dtype in order:
            if budget.left() < args.reserve_s:
                continue
            generate = make_generate(mode, parts, "cpu", dtype)
            warm_ups[name].append(timed(generate, "cpu", 1, args.size, 2)["seconds"])  # speed mode: compiles
            row = timed(generate, "cpu", 1, args.size, args.steps)
            calls[name].append(row["s_per_image"])
            images[name] = row["images"]
            del generate  # one copy of the weights at a time
            torch._dynamo.reset()  # compiled graphs (with frozen weights) would outlive their pipeline
            gc.collect()
            print(f"[cpu] {name}: {row['s_per_image']:.1f} s/image", file=sys.stderr, flush=True)
    rows = {name: {"s_per_image": float(np.mean(v)), "calls_s": v, "warmup_s": warm_ups[name]} if v
            else {"skipped": "budget"} for name, v in calls.items()}  # fmt: skip
    base = rows["diffusers-fp32"].get("s_per_image")
    for name in [name for name, _, _ in configs][1:]:
        if base and "s_per_image" in rows[name]:
            rows[name]["speedup_over_diffusers_fp32"] = base / rows[name]["s_per_image"]
            rows[name]["psnr_vs_diffusers_fp32_db"] = psnr(images[name], images["diffusers-fp32"])
    if "s_per_image" in rows.get("ours-int8-speed", {}) and "s_per_image" in rows["ours-bf16-speed"]:
        rows["ours-int8-speed"]["speedup_over_bf16_speed"] = (
            rows["ours-bf16-speed"]["s_per_image"] / rows["ours-int8-speed"]["s_per_image"]
        )
    if base and budget.left() > args.reserve_s:
        dtypes = {name: dtype for name, mode, dtype in configs if mode != "speed-int8"}  # int8: no peak measured
        rows["roofline"] = cpu_roofline(parts, args, rows, dtypes, peaks)
    return rows


def cpu_roofline(parts: dict, args, rows: dict, dtypes: dict, peaks_before: dict) -> dict:
    """The image's FLOPs (counted on ours in bf16, eager), the machine's matmul peaks (the better of the
    run's start and end: a shared machine's neighbours only lower it), each row's share of its dtype's
    peak, and the most any bf16 pipeline could gain over diffusers fp32 on this machine."""
    from altdiffusion.training.precision import dtype_name

    flops = count_flops(make_generate("default", parts, "cpu", torch.bfloat16), 1, args.size, args.steps)
    peaks = {dtype: max(before, matmul_peak(dtype)) for dtype, before in peaks_before.items()}
    for name, dtype in dtypes.items():
        if "s_per_image" in rows[name]:
            rows[name]["share_of_matmul_peak"] = flops / rows[name]["s_per_image"] / 1e9 / peaks[dtype]
    at_peak = flops / 1e9 / peaks[torch.bfloat16]
    return {"gflop_per_image": flops / 1e9,
            "matmul_peak_gflop_per_s": {dtype_name(d): v for d, v in peaks.items()},
            "s_per_image_at_bf16_peak": at_peak,
            "ceiling_speedup_over_diffusers_fp32": rows["diffusers-fp32"]["s_per_image"] / at_peak}  # fmt: skip


# ---------------------------------------------------------------------------------------------- reporting


def strip_images(value):
    if isinstance(value, dict):
        return {k: strip_images(v) for k, v in value.items() if k != "images"}
    return value


def markdown(results: dict) -> str:
    lines = []
    for model, out in results.get("models", {}).items():
        lines += [f"### {model}", "", "| mode | warm-up s | s/image b1 | it/s b1 | s/image b4 | peak GiB b1 | "
                  + " | ".join(f"peak GiB {s}px" for s in results["args"]["large_sizes"]) + " |"]  # fmt: skip
        lines.append("|---" * (6 + len(results["args"]["large_sizes"])) + "|")
        for mode, r in out["modes"].items():
            b1, b4 = r.get("batch1", {}), r.get("batch4", {})
            label = mode if b1.get("steps") in (None, results["args"]["steps"]) else f"{mode} ({b1['steps']} steps)"
            cells = [label, _f(r.get("warmup_s")), _f(b1.get("s_per_image")), _f(b1.get("it_per_s")),
                     _f(b4.get("s_per_image")), _f(b1.get("peak_vram_gib"))]  # fmt: skip
            cells += [_peak(r.get(f"size{s}", {})) for s in results["args"]["large_sizes"]]
            lines.append("| " + " | ".join(cells) + " |")
        if "psnr_speed_vs_default_db" in out:
            lines.append(f"\nspeed vs default PSNR: {out['psnr_speed_vs_default_db']:.1f} dB")
    for name, r in results.get("cpu", {}).items():
        if name == "roofline":
            peaks = ", ".join(f"{d} {_f(v)}" for d, v in r["matmul_peak_gflop_per_s"].items())
            lines.append(f"- roofline: {_f(r['gflop_per_image'])} GFLOP per image; matmul peak GFLOP/s {peaks}; "
                         f"{_f(r['s_per_image_at_bf16_peak'])} s/image at the bf16 peak, at most "
                         f"{_f(r['ceiling_speedup_over_diffusers_fp32'])}x diffusers fp32")  # fmt: skip
            continue
        keys = ("speedup_over_diffusers_fp32", "speedup_over_bf16_speed", "psnr_vs_diffusers_fp32_db",
                "share_of_matmul_peak")  # fmt: skip
        extra = ", ".join(f"{k} {_f(r[k])}" for k in keys if k in r)
        lines.append(f"- {name}: {_f(r.get('s_per_image'))} s/image" + (f" ({extra})" if extra else ""))
    return "\n".join(lines)


def _f(value) -> str:
    return "—" if value is None else f"{value:.3g}"


def _peak(row: dict) -> str:
    return "OOM" if row.get("oom") else ("skipped" if "skipped" in row else _f(row.get("peak_vram_gib")))


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="tiny random m9 on the CPU: checks the script")
    p.add_argument("--models", default="m9,m18")
    p.add_argument("--modes", default=",".join(GPU_MODES))
    p.add_argument(
        "--compile-mode", default="default", help="speed mode's torch.compile mode (max-autotune: minutes more)"
    )
    p.add_argument("--int8", action="store_true", help="CPU: add ours in speed mode with the int8 UNet")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting new measurements after this")
    p.add_argument("--reserve-s", type=float, default=20.0, help="budget a measurement needs left to start")
    p.add_argument("--compile-reserve-s", type=float, default=None,
                   help="budget the speed mode needs left to start (it compiles); half for its batch-4 bucket "
                        "(default 240 on the GPU, 0 elsewhere)")  # fmt: skip
    p.add_argument(
        "--out", default=None, help="results JSON (default: benchmarks/results/speed_memory-DATE-DEVICE.json)"
    )
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda") and not args.smoke
    args.device = "cpu" if args.smoke else args.device
    args.models = ["m9"] if args.smoke else args.models.split(",")
    args.modes = args.modes.split(",")
    args.size = 32 if args.smoke else (512 if gpu else 256)
    args.steps = 3 if args.smoke else (50 if gpu else 20)
    args.low_steps = 3 if args.smoke else 10  # sequential offload streams every weight every step
    args.batches = [1, 4] if gpu else [1]  # smoke: one shape bucket (a CPU compile of another takes minutes)
    args.large_sizes = [64] if args.smoke else ([1024, 2048] if gpu else [])
    args.torch_dtype = torch.float16 if gpu else torch.float32
    if args.compile_reserve_s is None:
        args.compile_reserve_s = 240.0 if gpu else 0.0
    return args


def main(argv=None) -> None:
    args = parse(argv)
    budget = Budget(args.budget_s)
    torch.set_grad_enabled(False)
    results = {"date": dt.datetime.now(dt.timezone.utc).isoformat(), "device": args.device, "torch": torch.__version__,
               "machine": platform.machine(), "threads": torch.get_num_threads(),
               "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
               "args": {k: v for k, v in vars(args).items() if k != "torch_dtype"}}  # fmt: skip
    tag = "smoke" if args.smoke else args.device.split(":")[0]
    out = Path(args.out) if args.out else RESULTS / f"speed_memory-{dt.date.today()}-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.write_text(json.dumps(strip_images(results), indent=2, default=str))

    if args.device.startswith("cuda") or args.smoke:
        results["models"] = {}
        for model in args.models:
            bench_model(model, args, budget, results["models"].setdefault(model, {}), save)
            results["models"][model] = strip_images(results["models"][model])  # free the images
    if args.device == "cpu":
        results["cpu"] = strip_images(bench_cpu_dtypes(args, budget))
    save()
    print(markdown(results))
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
