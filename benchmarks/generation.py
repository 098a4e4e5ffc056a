#!/usr/bin/env python
"""Generation benchmark: our AltDiffusionPipeline versus diffusers' deprecated one.

Both pipelines get identical components (the same text-encoder weights, UNet, VAE,
tokenizer and an identically built PNDM scheduler), the same prompt, seed, noise, steps,
guidance and size. Each (model, dtype, pipeline) configuration runs in a fresh
subprocess (``--worker``) so that its peak RSS is its own; the worker resets the kernel's
peak-RSS counter (``/proc/self/clear_refs``) right before generating, so the reported peak
covers generation only and not the building of random weights.

Measured per configuration:

- seconds per image: wall time of one ``pipe(...)`` call (batch 1), after a warm-up call
  (tiny: a full call; full size: a 2-step call); also its CPU time and the fastest single
  denoising step (from step-end callbacks);
- RSS right before generation (after gc + malloc_trim), peak RSS during generation (VmHWM)
  and the increment;
- the output image (float, 0..1), so the two pipelines' outputs are compared (max abs diff).

Runs:

- ``tiny``: ``write_tiny_altdiffusion(..., "m9")``, 64x64, 20 steps, several timed repeats,
  in rounds ordered ours, diffusers, diffusers, ours (ABBA) to spread drifting load;
- ``full``: full-size AltDiffusion-m9 with random weights (XLM-R large + SD v1.4 UNet + SD
  VAE, real XLM-R tokenizer), 256x256, 20 steps, in fp32 and bf16; the order of the two
  pipelines alternates between dtypes;
- ``ab``: timing only, both full-size pipelines in one process (shared UNet/VAE), calls
  alternating, a few short (4-step) pairs per dtype: paired ratios that other load on the
  machine disturbs least.

Usage::

    python benchmarks/generation.py                       # everything (~10-12 min on 2 idle cores)
    python benchmarks/generation.py --only tiny           # 1-2 minutes
    python benchmarks/generation.py --only full --dtypes bf16 --steps 10

Results: ``benchmarks/results/generation-<date>.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import itertools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fullsize import SD14_UNET, SD14_VAE, XLMR_LARGE_M9
from procinfo import cpu_name, gib, mib, reset_peak_rss, status_kib, trim_heap

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.append(str(HERE.parent))  # the tests package: tests.xlmr_tokenizer loads the real XLM-R tokenizer

PIPELINES = ("ours", "diffusers")
DTYPES = ("fp32", "bf16")
SEED = 1234
GUIDANCE = 7.5
PROMPT = "an astronaut riding a horse"


# ---------------------------------------------------------------------------------------------
# worker: build one pipeline, generate, report


def _mark(marks: list) -> None:
    """At the end of each denoising step: (time, peak RSS so far in KiB)."""
    marks.append((time.perf_counter(), status_kib("VmHWM")))


def _diffusers_text_encoder(ours):
    """diffusers' RobertaSeriesModelWithTransformation holding a copy of ``ours``' weights.

    Built on the meta device (no second random init of 560M parameters), then materialised
    and filled from our state_dict; XLM-R's pooler, which ours does not carry, gets seeded
    random weights (diffusers computes it but the pipeline never reads it).
    """
    import torch
    from diffusers.pipelines.deprecated.alt_diffusion.modeling_roberta_series import (
        RobertaSeriesConfig,
        RobertaSeriesModelWithTransformation,
    )

    fields = ours.config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "_name_or_path"):
        fields.pop(key, None)
    config = RobertaSeriesConfig(**fields)
    with torch.device("meta"):
        theirs = RobertaSeriesModelWithTransformation(config)
    theirs = theirs.to_empty(device="cpu").to(ours.dtype)
    result = theirs.load_state_dict(ours.state_dict(), strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("roberta.pooler.")]
    if missing or result.unexpected_keys:
        raise RuntimeError(f"text encoder weights do not map: missing {missing}, unexpected {result.unexpected_keys}")
    # Buffers outside the state_dict (non-persistent: position_ids, token_type_ids) come from ours.
    ours_buffers = dict(ours.named_buffers())
    with torch.no_grad():
        for name, buf in theirs.named_buffers():
            if name in ours_buffers:
                buf.copy_(ours_buffers[name])
            else:
                raise RuntimeError(f"no source for buffer {name}")
        gen = torch.Generator().manual_seed(99)
        theirs.roberta.pooler.dense.weight.copy_(
            torch.randn(theirs.roberta.pooler.dense.weight.shape, generator=gen) * 0.02
        )
        theirs.roberta.pooler.dense.bias.zero_()
        # Proof of identical weights: every tensor ours has equals the copy.
        theirs_sd = theirs.state_dict()
        for key, value in ours.state_dict().items():
            if not torch.equal(theirs_sd[key], value):
                raise RuntimeError(f"weight {key} differs after copying")
    return theirs.eval()


def _build_components(args):
    """(tokenizer, our AltTextEncoder, unet, vae, scheduler), deterministic from seeds."""
    import diffusers
    import torch

    from altdiffusion.models.tiny import SCHEDULER_CONFIG

    if args.model == "tiny":
        from altdiffusion.pipelines.components import load_components

        c = load_components(Path(args.tiny_dir), safety_checker=False)
        return c.tokenizer, c.text_encoder, c.unet, c.vae, c.scheduler

    from diffusers import AutoencoderKL, UNet2DConditionModel

    from altdiffusion.models.text_encoder import AltTextEncoder, text_config_from_dict
    from tests.xlmr_tokenizer import real_xlmr_tokenizer

    tokenizer = real_xlmr_tokenizer()
    torch.manual_seed(0)
    text_encoder = AltTextEncoder(text_config_from_dict(dict(XLMR_LARGE_M9)), head="m9").eval()
    torch.manual_seed(1)
    unet = UNet2DConditionModel(**SD14_UNET).eval()
    torch.manual_seed(2)
    vae = AutoencoderKL(**SD14_VAE).eval()
    config = {k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")}
    scheduler = getattr(diffusers, SCHEDULER_CONFIG["_class_name"]).from_config(config)
    return tokenizer, text_encoder, unet, vae, scheduler


def _noise(shape, seed, dtype):
    """The initial latents exactly as our pipeline draws them (CPU generator, fp32, then cast)."""
    import torch

    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)).to(dtype)


def _ours_generate(tokenizer, text_encoder, unet, vae, scheduler, args, torch_dtype):
    """``generate(steps, marks) -> image array`` with our pipeline."""
    from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline

    pipe = AltDiffusionPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        unet=unet,
        vae=vae,
        scheduler=scheduler,
        name=f"{args.model}-m9",
    ).to("cpu", torch_dtype)

    def generate(steps: int, marks: list):
        return pipe(
            PROMPT,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            height=args.size,
            width=args.size,
            seed=SEED,
            output_type="np",
            progress=False,
            callback=lambda i, n, latents: _mark(marks),
        )

    return generate


def _diffusers_generate(tokenizer, text_encoder, unet, vae, scheduler, args, torch_dtype):
    """``generate(steps, marks) -> image array`` with diffusers' deprecated pipeline."""
    from diffusers import AltDiffusionPipeline as DiffusersAltDiffusionPipeline

    pipe = DiffusersAltDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    factor = pipe.vae_scale_factor
    shape = (1, unet.config.in_channels, args.size // factor, args.size // factor)

    def generate(steps: int, marks: list):
        def on_step_end(pipeline, i, t, kwargs):
            _mark(marks)
            return {}

        # The same initial noise as ours (diffusers would draw it in bf16 directly).
        latents = _noise(shape, SEED, torch_dtype)
        return pipe(
            PROMPT,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            height=args.size,
            width=args.size,
            latents=latents,
            output_type="np",
            callback_on_step_end=on_step_end,
        ).images

    return generate


def _setup_worker(args):
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]


def run_ab_worker(args) -> None:
    """Timing only: both pipelines in one process (sharing tokenizer, UNet and VAE; each with
    its own text encoder and scheduler), calls alternating ours/diffusers, diffusers/ours..."""
    import numpy as np
    import torch

    torch_dtype = _setup_worker(args)
    tokenizer, text_encoder, unet, vae, scheduler = _build_components(args)
    for module in (text_encoder, unet, vae):
        module.to(dtype=torch_dtype)
    theirs_te = _diffusers_text_encoder(text_encoder)
    gens = {
        "ours": _ours_generate(tokenizer, text_encoder, unet, vae, scheduler, args, torch_dtype),
        "diffusers": _diffusers_generate(
            tokenizer, theirs_te, unet, vae, type(scheduler).from_config(scheduler.config), args, torch_dtype
        ),
    }
    for gen in gens.values():
        gen(min(2, args.steps), [])
    wall = {p: [] for p in PIPELINES}
    cpu = {p: [] for p in PIPELINES}
    outs = {}
    load_before = os.getloadavg()
    for i in range(args.repeats):
        for p in PIPELINES if i % 2 == 0 else tuple(reversed(PIPELINES)):
            c = time.process_time()
            t = time.perf_counter()
            outs[p] = np.asarray(gens[p](args.steps, []), dtype=np.float32)
            wall[p].append(round(time.perf_counter() - t, 4))
            cpu[p].append(round(time.process_time() - c, 4))
    report = {
        "model": args.model,
        "dtype": args.dtype,
        "size": args.size,
        "steps": args.steps,
        "pairs": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "seconds": wall,
        "cpu_seconds": cpu,
        "paired_ratio_seconds": [round(a / b, 4) for a, b in zip(wall["ours"], wall["diffusers"])],
        "paired_ratio_cpu_seconds": [round(a / b, 4) for a, b in zip(cpu["ours"], cpu["diffusers"])],
        "max_abs_diff": float(np.abs(outs["ours"] - outs["diffusers"]).max()),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    Path(args.result + ".json").write_text(json.dumps(report, indent=2) + "\n")


def run_worker(args) -> None:
    import numpy as np
    import torch

    torch_dtype = _setup_worker(args)
    rss_after_import = status_kib("VmRSS")

    t0 = time.perf_counter()
    tokenizer, text_encoder, unet, vae, scheduler = _build_components(args)
    for module in (text_encoder, unet, vae):
        module.to(dtype=torch_dtype)

    if args.pipeline == "ours":
        generate = _ours_generate(tokenizer, text_encoder, unet, vae, scheduler, args, torch_dtype)
    else:
        theirs_te = _diffusers_text_encoder(text_encoder)
        del text_encoder
        gc.collect()
        generate = _diffusers_generate(tokenizer, theirs_te, unet, vae, scheduler, args, torch_dtype)

    build_s = time.perf_counter() - t0
    gc.collect()
    trim_heap()
    build_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_before = status_kib("VmRSS")
    reset_ok = reset_peak_rss()

    warmup_steps = args.steps if args.model == "tiny" else min(2, args.steps)
    # The warm-up call also attributes the peak RSS to phases (the counter was just reset).
    marks = []
    t = time.perf_counter()
    generate(warmup_steps, marks)
    warmup_s = time.perf_counter() - t
    peak_phases = {
        "text_encoder_and_first_step": mib(marks[0][1]),
        "denoising": mib(marks[-1][1]),
        "vae_decode": mib(status_kib("VmHWM")),
    }

    # Per call: wall time, CPU time (all threads), and from step-end timestamps the time of
    # each denoising step, the part before the first step ends (tokenize + text encoder +
    # first step) and the part after the last (VAE decode + post-processing).
    times, cpu, steps, head, tail, out = [], [], [], [], [], None
    for _ in range(args.repeats):
        marks = []
        c = time.process_time()
        t = time.perf_counter()
        out = generate(args.steps, marks)
        end = time.perf_counter()
        cpu.append(time.process_time() - c)
        times.append(end - t)
        stamps = [m[0] for m in marks]
        steps += [b - a for a, b in itertools.pairwise(stamps)]
        head.append(stamps[0] - t)
        tail.append(end - stamps[-1])
    peak_kib = status_kib("VmHWM") if reset_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image = np.asarray(out, dtype=np.float32)
    np.save(args.result + ".npy", image)
    report = {
        "pipeline": args.pipeline,
        "model": args.model,
        "dtype": args.dtype,
        "size": args.size,
        "steps": args.steps,
        "guidance": GUIDANCE,
        "seed": SEED,
        "prompt": PROMPT,
        "batch": 1,
        "torch_threads": torch.get_num_threads(),
        "build_s": round(build_s, 2),
        "warmup_steps": warmup_steps,
        "warmup_s": round(warmup_s, 3),
        "seconds": [round(x, 4) for x in times],
        "cpu_seconds": [round(x, 4) for x in cpu],
        "step_seconds_median": round(statistics.median(steps), 4) if steps else None,
        "step_seconds_min": round(min(steps), 4) if steps else None,
        "first_step_end_seconds": [round(x, 4) for x in head],
        "after_last_step_seconds": [round(x, 4) for x in tail],
        "rss_after_import_mib": mib(rss_after_import),
        "rss_before_generation_mib": mib(rss_before),
        "peak_rss_generation_mib": mib(peak_kib),
        "rss_increment_mib": mib(peak_kib - rss_before),
        "peak_rss_build_mib": mib(build_peak),
        "peak_reset": reset_ok,
        "peak_rss_after_phase_of_warmup_mib": peak_phases,
        "image_shape": list(image.shape),
        "image_finite": bool(np.isfinite(image).all()),
        "image_mean": float(image.mean()),
        "image_std": float(image.std()),
    }
    Path(args.result + ".json").write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# driver


def _spawn(pipeline, model, dtype, args, workdir: Path, tag: str, tiny_dir: Path | None) -> dict:
    result = workdir / tag
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--pipeline",
        pipeline,
        "--model",
        model,
        "--dtype",
        dtype,
        "--steps",
        str(args.steps if model == "full" else args.tiny_steps),
        "--size",
        str(args.size if model == "full" else args.tiny_size),
        "--repeats",
        str(args.repeats if model == "tiny" else 1),
        "--result",
        str(result),
        "--threads",
        str(args.tiny_threads if model == "tiny" else args.threads),
    ]
    if tiny_dir is not None:
        cmd += ["--tiny-dir", str(tiny_dir)]
    load_before = os.getloadavg()
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.worker_timeout)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"worker {tag} failed with exit code {proc.returncode}")
    report = json.loads(Path(str(result) + ".json").read_text())
    report.update(
        process_wall_s=round(wall, 1),
        loadavg_before=[round(x, 2) for x in load_before],
        loadavg_after=[round(x, 2) for x in os.getloadavg()],
    )
    report["_image"] = str(result) + ".npy"
    med = statistics.median(report["seconds"])
    print(
        f"  {tag}: {med:.3f} s/image (median of {len(report['seconds'])}), peak RSS "
        f"{report['peak_rss_generation_mib']:.0f} MiB (+{report['rss_increment_mib']:.0f}), process {wall:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return report


def _spawn_ab(dtype, args, workdir: Path) -> dict:
    result = workdir / f"ab-{dtype}"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--pipeline",
        "both",
        "--model",
        "full",
        "--dtype",
        dtype,
        "--steps",
        str(args.ab_steps),
        "--size",
        str(args.size),
        "--repeats",
        str(args.ab_pairs),
        "--result",
        str(result),
        "--threads",
        str(args.threads),
    ]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.worker_timeout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"A/B worker {dtype} failed with exit code {proc.returncode}")
    report = json.loads(Path(str(result) + ".json").read_text())
    report["process_wall_s"] = round(time.perf_counter() - t, 1)
    report["paired_ratio_seconds_median"] = round(statistics.median(report["paired_ratio_seconds"]), 3)
    report["paired_ratio_cpu_seconds_median"] = round(statistics.median(report["paired_ratio_cpu_seconds"]), 3)
    print(
        f"  ab-{dtype}: ours {report['seconds']['ours']} s, diffusers {report['seconds']['diffusers']} s, "
        f"median paired ratio {report['paired_ratio_seconds_median']:.3f}",
        file=sys.stderr,
        flush=True,
    )
    return report


def _summarise(model: str, dtype: str, reports: list[dict]) -> dict:
    import numpy as np

    by = {p: [r for r in reports if r["pipeline"] == p] for p in PIPELINES}
    row = {"model": model, "dtype": dtype, "size": reports[0]["size"], "steps": reports[0]["steps"]}
    for p in PIPELINES:
        secs = [s for r in by[p] for s in r["seconds"]]
        row[p] = {
            "seconds_median": round(statistics.median(secs), 4),
            "seconds_min": round(min(secs), 4),
            "seconds_mean": round(statistics.fmean(secs), 4),
            "n": len(secs),
            "cpu_seconds_median": round(statistics.median([s for r in by[p] for s in r["cpu_seconds"]]), 4),
            "step_seconds_median": round(statistics.median([r["step_seconds_median"] for r in by[p]]), 4),
            "step_seconds_min": round(min(r["step_seconds_min"] for r in by[p]), 4),
            "rss_before_generation_mib": max(r["rss_before_generation_mib"] for r in by[p]),
            "peak_rss_generation_mib": max(r["peak_rss_generation_mib"] for r in by[p]),
            "rss_increment_mib": max(r["rss_increment_mib"] for r in by[p]),
        }
    row["ratio_seconds"] = round(row["ours"]["seconds_median"] / row["diffusers"]["seconds_median"], 3)
    row["ratio_seconds_min"] = round(row["ours"]["seconds_min"] / row["diffusers"]["seconds_min"], 3)
    row["ratio_cpu_seconds"] = round(row["ours"]["cpu_seconds_median"] / row["diffusers"]["cpu_seconds_median"], 3)
    row["ratio_step_seconds_min"] = round(row["ours"]["step_seconds_min"] / row["diffusers"]["step_seconds_min"], 3)
    row["loadavg_1min_range"] = [
        min(r["loadavg_before"][0] for r in reports),
        max(r["loadavg_after"][0] for r in reports),
    ]
    row["ratio_peak_rss"] = round(
        row["ours"]["peak_rss_generation_mib"] / row["diffusers"]["peak_rss_generation_mib"], 3
    )
    inc_d = row["diffusers"]["rss_increment_mib"]
    row["ratio_rss_increment"] = round(row["ours"]["rss_increment_mib"] / inc_d, 3) if inc_d > 0 else None
    ours_img = np.load(by["ours"][-1]["_image"])
    theirs_img = np.load(by["diffusers"][-1]["_image"])
    diff = np.abs(ours_img - theirs_img)
    row["max_abs_diff"] = float(diff.max())
    row["mean_abs_diff"] = float(diff.mean())
    row["max_abs_diff_uint8"] = int(
        np.abs(np.round(ours_img * 255).astype(int) - np.round(theirs_img * 255).astype(int)).max()
    )
    row["outputs_finite"] = all(r["image_finite"] for r in reports)
    # Determinism: a pipeline's outputs from different worker processes (tiny rounds) agree.
    spread = 0.0
    for p in PIPELINES:
        first = np.load(by[p][0]["_image"])
        for r in by[p][1:]:
            spread = max(spread, float(np.abs(np.load(r["_image"]) - first).max()))
    row["max_abs_diff_between_runs_same_pipeline"] = spread
    return row


def _markdown_ab(ab: list[dict]) -> str:
    lines = [
        "Interleaved A/B in one process (timing only; full size, shared tokenizer/UNet/VAE, calls alternating "
        "ours/diffusers then diffusers/ours; ratio = median over pairs of ours/diffusers):",
        "",
        "| dtype | size | steps | pairs | ours s/img (median) | diffusers s/img (median) | paired ratio | ours CPU s | diffusers CPU s | paired CPU ratio | max abs diff | load avg (1 min) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in ab:
        w, c = r["seconds"], r["cpu_seconds"]
        lines.append(
            f"| {r['dtype']} | {r['size']} | {r['steps']} | {r['pairs']} | {statistics.median(w['ours']):.2f} "
            f"| {statistics.median(w['diffusers']):.2f} | {r['paired_ratio_seconds_median']:.3f} "
            f"| {statistics.median(c['ours']):.2f} | {statistics.median(c['diffusers']):.2f} "
            f"| {r['paired_ratio_cpu_seconds_median']:.3f} | {r['max_abs_diff']:.2e} "
            f"| {r['loadavg_before'][0]:.1f}-{r['loadavg_after'][0]:.1f} |"
        )
    return "\n".join(lines)


def _markdown(rows: list[dict]) -> str:
    def secs(x):
        if x["n"] > 1:
            return f"{x['seconds_median']:.3f} (min {x['seconds_min']:.3f}, n={x['n']})"
        return f"{x['seconds_median']:.2f}"

    lines = [
        "Time per image (batch 1; wall = the whole pipe() call; CPU = process CPU time of that call, all threads; "
        "step = fastest single denoising step, the least load-sensitive figure):",
        "",
        "| model | dtype | size | steps | ours s/img | diffusers s/img | ratio | ours CPU s | diffusers CPU s | ratio "
        "| ours fastest step | diffusers fastest step | ratio | max abs diff | load avg (1 min) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        o, d = r["ours"], r["diffusers"]
        ratio = f"{r['ratio_seconds']:.3f}" + (f" (min {r['ratio_seconds_min']:.3f})" if o["n"] > 1 else "")
        load = "{:.1f}-{:.1f}".format(*r["loadavg_1min_range"])
        lines.append(
            f"| {r['model']} | {r['dtype']} | {r['size']} | {r['steps']} | {secs(o)} | {secs(d)} | {ratio} "
            f"| {o['cpu_seconds_median']:.2f} | {d['cpu_seconds_median']:.2f} | {r['ratio_cpu_seconds']:.3f} "
            f"| {o['step_seconds_min']:.3f} | {d['step_seconds_min']:.3f} | {r['ratio_step_seconds_min']:.3f} "
            f"| {r['max_abs_diff']:.2e} | {load} |"
        )
    lines += [
        "",
        "Memory (RSS of the worker process: right before generating, peak while generating, and the increment):",
        "",
        "| model | dtype | ours RSS before | diffusers RSS before | ours peak RSS | diffusers peak RSS | ratio | ours +RSS | diffusers +RSS |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        o, d = r["ours"], r["diffusers"]
        lines.append(
            f"| {r['model']} | {r['dtype']} | {gib(o['rss_before_generation_mib'])} | {gib(d['rss_before_generation_mib'])} "
            f"| {gib(o['peak_rss_generation_mib'])} | {gib(d['peak_rss_generation_mib'])} | {r['ratio_peak_rss']:.3f} "
            f"| {gib(o['rss_increment_mib'])} | {gib(d['rss_increment_mib'])} |"
        )
    return "\n".join(lines)


def run_driver(args) -> None:
    import diffusers
    import torch
    import transformers

    only = {"tiny", "full", "ab"} if args.only == "all" else {x.strip() for x in args.only.split(",")}
    if not only <= {"tiny", "full", "ab"}:
        raise SystemExit(f"--only takes tiny, full, ab (comma-separated) or all; got {args.only!r}")
    if args.ab_pairs <= 0:
        only.discard("ab")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in dtypes:
        if d not in DTYPES:
            raise SystemExit(f"unknown dtype {d!r}; use fp32 and/or bf16")
    started = dt.datetime.now()
    workdir = Path(tempfile.mkdtemp(prefix="altdiffusion-bench-"))
    rows, runs, ab = [], [], []
    try:
        tiny_dir = None
        if "tiny" in only:
            from altdiffusion.models.tiny import write_tiny_altdiffusion

            tiny_dir = write_tiny_altdiffusion(workdir / "tiny-m9", "m9", safety_checker=False)
            for dtype in dtypes if args.tiny_all_dtypes else ["fp32"]:
                print(f"tiny m9, {dtype}, {args.tiny_size}px, {args.tiny_steps} steps:", file=sys.stderr, flush=True)
                reports = []
                order = []
                for r in range(args.tiny_rounds):
                    order += list(PIPELINES) if r % 2 == 0 else list(reversed(PIPELINES))
                for i, p in enumerate(order):
                    reports.append(_spawn(p, "tiny", dtype, args, workdir, f"tiny-{dtype}-{p}-{i}", tiny_dir))
                rows.append(_summarise("tiny", dtype, reports))
                runs += reports
        if "full" in only:
            for j, dtype in enumerate(dtypes):
                print(
                    f"full-size m9 (random weights), {dtype}, {args.size}px, {args.steps} steps:",
                    file=sys.stderr,
                    flush=True,
                )
                order = []
                for r in range(args.full_rounds):
                    order += list(PIPELINES) if (j + r) % 2 == 0 else list(reversed(PIPELINES))
                reports = [
                    _spawn(p, "full", dtype, args, workdir, f"full-{dtype}-{p}-{i}", None) for i, p in enumerate(order)
                ]
                rows.append(_summarise("full", dtype, reports))
                runs += reports
        if "ab" in only:
            for dtype in dtypes:
                print(
                    f"interleaved A/B (one process), full size, {dtype}, {args.size}px, {args.ab_steps} steps:",
                    file=sys.stderr,
                    flush=True,
                )
                ab.append(_spawn_ab(dtype, args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for r in runs:
        r.pop("_image", None)

    table = "\n\n".join(([_markdown(rows)] if rows else []) + ([_markdown_ab(ab)] if ab else []))
    result = {
        "benchmark": "generation: altdiffusion.AltDiffusionPipeline vs diffusers AltDiffusionPipeline (deprecated)",
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "diffusers": diffusers.__version__,
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "OMP_", "MKL_", "KMP_", "GOMP_"))},
        },
        "settings": {
            "prompt": PROMPT,
            "seed": SEED,
            "guidance": GUIDANCE,
            "scheduler": "PNDMScheduler (tiny.SCHEDULER_CONFIG)",
            "tiny": {
                "size": args.tiny_size,
                "steps": args.tiny_steps,
                "repeats": args.repeats,
                "rounds": args.tiny_rounds,
                "threads": args.tiny_threads or "default",
            },
            "full": {
                "size": args.size,
                "steps": args.steps,
                "dtypes": dtypes,
                "threads": args.threads or "default",
                "rounds": args.full_rounds,
            },
            "ab": {
                "size": args.size,
                "steps": args.ab_steps,
                "pairs": args.ab_pairs,
                "dtypes": dtypes,
                "threads": args.threads or "default",
            },
        },
        "summary": rows,
        "runs": runs,
        "interleaved_ab": ab,
        "markdown": table,
        "total_s": round((dt.datetime.now() - started).total_seconds(), 1),
    }
    out = Path(args.output) if args.output else RESULTS / f"generation-{started.date().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table)
    print()
    for r in rows:
        print(
            f"- {r['model']} {r['dtype']} (separate processes): outputs max abs diff {r['max_abs_diff']:.3e} "
            f"(mean {r['mean_abs_diff']:.2e}, {r['max_abs_diff_uint8']} levels of 255)"
        )
    for r in ab:
        print(f"- A/B {r['dtype']} (one process): outputs max abs diff {r['max_abs_diff']:.3e}")
    print(f"\nwritten {out} ({result['total_s']:.0f} s)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default="all",
        help="what to run: all, or a comma list of tiny (tiny model, separate processes), full (full size, separate "
        "processes: time and memory), ab (full size, both pipelines interleaved in one process: time only)",
    )
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma list for the full-size runs (fp32,bf16)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps, full-size model")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels, full-size model")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per tiny worker (after one warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads, full-size model (0: torch's default)")
    parser.add_argument("--tiny-threads", type=int, default=1, help="torch threads, tiny model (0: torch's default)")
    parser.add_argument("--tiny-steps", type=int, default=20)
    parser.add_argument("--tiny-size", type=int, default=64)
    parser.add_argument("--tiny-rounds", type=int, default=2, help="tiny worker rounds (ABBA order)")
    parser.add_argument(
        "--full-rounds", type=int, default=1, help="full-size worker rounds per dtype (alternating order)"
    )
    parser.add_argument(
        "--tiny-all-dtypes", action="store_true", help="run the tiny model in --dtypes too (default fp32 only)"
    )
    parser.add_argument("--ab-steps", type=int, default=4, help="steps per call in the interleaved A/B run")
    parser.add_argument("--ab-pairs", type=int, default=3, help="ours/diffusers call pairs in the A/B run (0: skip it)")
    parser.add_argument("--worker-timeout", type=int, default=3600, help="seconds before a worker is killed")
    parser.add_argument("--output", help="result JSON path (default benchmarks/results/generation-<date>.json)")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", choices=[*PIPELINES, "both"], help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=["tiny", "full"], help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--tiny-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_ab_worker(args) if args.pipeline == "both" else run_worker(args)
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
