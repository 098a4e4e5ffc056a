#!/usr/bin/env python
"""AltDiffusion training throughput and memory on CPU: the align and quality stages.

Each configuration runs in a fresh worker subprocess (``--worker``) that builds an
``AltDiffusionPipeline`` and a ``DiffusionTask``, then calls the shared loop
``altdiffusion.training.loop.train`` for ``warm-up + timed`` optimizer steps with
``log_every=1``. The loop's ``log.jsonl`` gives the time of every optimizer step
(``batch / samples_per_s``: decoding and resizing the images, the frozen VAE encoder and text
encoder, the UNet forward and backward, gradient clipping, AdamW and the LR schedule); the
warm-up steps are dropped. Set-up (building models, ``accelerator.prepare``) is not timed and
the export at the end is skipped.

Memory, per worker (Linux):

- ``peak RSS (process)``: ``ru_maxrss`` of the worker (building the models included);
- ``RSS before``: the RSS right before ``train()`` (models built, garbage trimmed);
- ``peak RSS (training)``: the peak RSS from ``train()``'s start to the end of its last step
  (the kernel's peak counter is reset with ``/proc/self/clear_refs`` before ``train()`` and
  read in the export hook);
- ``+RSS``: ``peak RSS (training) - RSS before``: gradients, AdamW state, activations,
  autocast copies of the weights.

Configurations:

- ``tiny``: ``write_tiny_altdiffusion(m9)`` (the training tests' model: UNet 32/64 channels,
  a VAE that downsamples by 2, a 2-layer XLM-R), ``assemble(base)``; a folder of PNGs of the
  training tests' scene grammar with Chinese captions; 32 px (batch 8) and 64 px (batch 4), 3 warm-up +
  20 timed steps; stages ``quality`` (whole UNet) and ``align`` (attn2 K/V only); fp32 and
  bf16 mixed precision.
- ``full``: random weights at published sizes, built in memory: SD v1.4's UNet (block_out
  320/640/1280/1280, layers_per_block 2, attention_head_dim 8, cross_attention_dim 768,
  sample_size 64; 860M parameters), SD's VAE (128/256/512/512, 4 latent channels, scaling
  0.18215; 84M), XLM-R large with AltDiffusion's m9 head (project_dim 768; 560M) and the real
  XLM-R tokenizer; 256 px PNGs, batch 1, 1 warm-up + 2 timed steps, bf16 mixed precision
  first, then fp32; each with and without gradient checkpointing. Stage ``quality`` (AdamW
  over all 860M UNet parameters) needs about 4 + 12 bytes per UNet parameter on top of the
  frozen models, ~20 GiB in all; a configuration whose estimated peak exceeds the memory
  available when it would start (``MemAvailable``) is not run, and is listed with the reason
  (``--force`` runs it anyway). Stage ``align`` (K/V only: backward through the whole UNet,
  gradients and AdamW state for its 19.2M attn2 K/V parameters, 2.2%) is measured too, as the full-size step that fits.
  Configurations that would overrun ``--budget`` seconds are skipped likewise.

Usage::

    python benchmarks/training_diffusion.py                 # everything (~10-12 min on 2 cores)
    python benchmarks/training_diffusion.py --only tiny     # about 4 minutes on 2 loaded cores
    python benchmarks/training_diffusion.py --only full --steps 3 --batch 2

Results: ``benchmarks/results/training-diffusion-<date>.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
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
from procinfo import cpu_name, gib, mem_available_mib, mib, reset_peak_rss, status_kib, trim_heap

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.append(str(ROOT))  # the tests package: tests.training.grammar is the training tests' data

PRECISIONS = {"fp32": "no", "bf16": "bf16"}
DEFAULTS = {  # size -> (batch, warm-up steps, timed steps); tiny batch: 8 at 32 px, 4 at 64 px
    "tiny": ({32: 8, 64: 4}, 3, 20),
    "full": (1, 1, 2),
}
TINY_RESOLUTIONS = (32, 64)
FULL_RESOLUTION = 256


# Parameter counts at full size (checked by the worker), for the memory estimate.
FULL_PARAMS = {"unet": 859_520_964, "vae": 83_653_863, "text": 559_628_032}


# ---------------------------------------------------------------------------------------------
# memory estimate


def full_estimate_mib(stage: str, precision: str, batch: int, checkpointing: bool) -> float:
    """A rough peak-RSS estimate for a full-size worker (frozen models + training state +
    activations + ~0.8 GiB of libraries), to decide whether it can run here."""
    unet, frozen = FULL_PARAMS["unet"], FULL_PARAMS["vae"] + FULL_PARAMS["text"]
    bytes_ = 4 * (unet + frozen)
    trainable = unet if stage == "quality" else 19_169_280  # align: attn2 K/V
    bytes_ += 12 * trainable  # fp32 gradients + AdamW's two moments
    if precision == "bf16":
        bytes_ += 2 * unet  # autocast keeps bf16 copies of the weights for the step
    activations = (0.6 if checkpointing else 2.5) * 2**30 * batch * (1 if precision == "fp32" else 0.6)
    return (bytes_ + activations) / 2**20 + 800


# ---------------------------------------------------------------------------------------------
# preparing data and models


def write_images(folder: Path, px: int, count: int) -> Path:
    """PNGs of the training tests' scene grammar, each with a Chinese .txt caption."""
    from tests.training import grammar

    folder.mkdir(parents=True, exist_ok=True)
    scenes = grammar.scenes()
    step = max(1, len(scenes) // count)
    for i, scene in enumerate(scenes[::step][:count]):
        grammar.render(*scene, px=px).save(folder / f"{i:04d}.png")
        (folder / f"{i:04d}.txt").write_text(grammar.chinese(*scene), encoding="utf-8")
    return folder


def prepare_tiny(root: Path) -> dict:
    from altdiffusion.models.tiny import write_tiny_altdiffusion

    base = write_tiny_altdiffusion(root / "base", "m9", safety_checker=False)
    data = {px: str(write_images(root / f"data-{px}", px, 64)) for px in TINY_RESOLUTIONS}
    return {"base": str(base), "data": data}


def prepare_full(root: Path) -> dict:
    return {"data": str(write_images(root / "data-256", FULL_RESOLUTION, 16))}


def build_full_pipe():
    """SD-1.4-sized UNet and VAE, XLM-R large m9 text encoder, real XLM-R tokenizer; random."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel

    from altdiffusion.models.text_encoder import AltTextEncoder, text_config_from_dict
    from altdiffusion.models.tiny import SCHEDULER_CONFIG
    from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline
    from tests.xlmr_tokenizer import real_xlmr_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD14_UNET)
    vae = AutoencoderKL(**SD14_VAE)
    encoder = AltTextEncoder(text_config_from_dict(dict(XLMR_LARGE_M9)), head="m9").eval()
    scheduler = PNDMScheduler.from_config({k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")})
    return AltDiffusionPipeline(
        tokenizer=real_xlmr_tokenizer(),
        text_encoder=encoder,
        unet=unet,
        vae=vae,
        scheduler=scheduler,
        name="sd14-sized-random-alt",
        folder=None,
    )


# ---------------------------------------------------------------------------------------------
# worker


def run_worker(args) -> None:
    import torch

    spec = json.loads(args.spec)
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    import transformers
    from diffusers.utils import logging as diffusers_logging

    transformers.utils.logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    from altdiffusion.training.diffusion import DiffusionTask, assemble
    from altdiffusion.training.loop import train
    from altdiffusion.training.params import TrainSettings

    rss_after_import = status_kib("VmRSS")
    t0 = time.perf_counter()
    pipe = assemble(spec["base"]) if spec["size"] == "tiny" else build_full_pipe()
    task = DiffusionTask(
        pipe, Path(spec["data"]), stage=spec["stage"], align_params="kv", resolution=spec["resolution"]
    )
    build_s = time.perf_counter() - t0
    counts = {
        "unet": sum(p.numel() for p in pipe.unet.parameters()),
        "vae": sum(p.numel() for p in pipe.vae.parameters()),
        "text": sum(p.numel() for p in pipe.text_encoder.parameters()),
    }
    n_trainable = sum(p.numel() for p in task.model.parameters() if p.requires_grad)

    end_of_training: dict = {}

    def export(model, folder: Path) -> None:  # the loop calls this right after its last step
        end_of_training.update(t=time.perf_counter(), hwm=status_kib("VmHWM"), rss=status_kib("VmRSS"))
        folder.mkdir(parents=True, exist_ok=True)  # no export; the loop renames the folder into place

    task.export = export
    out = Path(spec["workdir"]) / "run"
    total = spec["warmup"] + spec["steps"]
    settings = TrainSettings(
        output_dir=out,
        steps=total,
        batch_size=spec["batch"],
        lr=1e-5,
        warmup_steps=0,
        lr_schedule="constant",
        mixed_precision=PRECISIONS[spec["precision"]],
        gradient_checkpointing=spec["checkpointing"],
        save_every=10**9,
        log_every=1,
        seed=0,
        tensorboard=False,
        progress=False,
    )
    gc.collect()
    trim_heap()
    build_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_before = status_kib("VmRSS")
    reset_ok = reset_peak_rss()
    t_train = time.perf_counter()
    cpu_train = time.process_time()
    train(task, settings)
    cpu_train = time.process_time() - cpu_train
    train_s = end_of_training["t"] - t_train
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_training = end_of_training["hwm"] if reset_ok else process_peak

    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    step_s = [spec["batch"] / r["samples_per_s"] for r in log]
    timed = step_s[spec["warmup"] :]
    losses = [r["loss"] for r in log]
    report = {
        **{
            k: spec[k]
            for k in ("size", "stage", "precision", "checkpointing", "resolution", "batch", "warmup", "steps")
        },
        "latent_size": spec["resolution"] // (2 ** (len(pipe.vae.config.block_out_channels) - 1)),
        "torch_threads": torch.get_num_threads(),
        "params": counts,
        "trainable_params": n_trainable,
        "build_s": round(build_s, 2),
        "train_call_s": round(train_s, 2),
        "cpu_s_train_call": round(cpu_train, 2),
        "step_seconds": [round(x, 4) for x in step_s],
        "samples_per_s": round(spec["batch"] * len(timed) / sum(timed), 4),
        "steps_per_s": round(len(timed) / sum(timed), 4),
        "step_seconds_mean": round(statistics.fmean(timed), 4),
        "step_seconds_median": round(statistics.median(timed), 4),
        "step_seconds_min": round(min(timed), 4),
        "warmup_step_seconds": [round(x, 4) for x in step_s[: spec["warmup"]]],
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "losses_finite": all(x == x and abs(x) != float("inf") for x in losses),
        "rss_after_import_mib": mib(rss_after_import),
        "peak_rss_build_mib": mib(build_peak),
        "rss_before_training_mib": mib(rss_before),
        "peak_rss_training_mib": mib(peak_training),
        "rss_increase_training_mib": mib(peak_training - rss_before),
        "rss_end_of_training_mib": mib(end_of_training["rss"]),
        "peak_rss_process_mib": mib(max(build_peak, peak_training)),
        "peak_reset": reset_ok,
    }
    Path(spec["result"]).write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# driver


def _tag(spec: dict) -> str:
    gc_ = "-gc" if spec["checkpointing"] else ""
    return f"{spec['size']}-{spec['resolution']}px-{spec['stage']}-{spec['precision']}{gc_}-b{spec['batch']}"


def _spawn(spec: dict, timeout: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--spec", json.dumps(spec)]
    load_before = os.getloadavg()
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {
            "failed": f"worker killed after the {timeout} s worker timeout",
            "process_wall_s": round(time.perf_counter() - t, 1),
        }
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        why = "killed by SIGKILL (out of memory?)" if proc.returncode == -9 else f"exit code {proc.returncode}"
        return {"failed": why, "process_wall_s": round(wall, 1), "stderr_tail": proc.stderr[-1500:]}
    report = json.loads(Path(spec["result"]).read_text())
    report.update(
        process_wall_s=round(wall, 1),
        loadavg_before=[round(x, 2) for x in load_before],
        loadavg_after=[round(x, 2) for x in os.getloadavg()],
    )
    print(
        f"  {_tag(spec)}: {report['step_seconds_mean']:.3f} s/step, {report['samples_per_s']:.2f} samples/s, "
        f"peak RSS {gib(report['peak_rss_process_mib'])} (training +{gib(report['rss_increase_training_mib'])}), "
        f"process {wall:.0f} s, load {load_before[0]:.1f}",
        file=sys.stderr,
        flush=True,
    )
    return report


def _markdown(runs: list[dict]) -> str:
    lines = [
        "| size | px (latent) | stage | precision | grad ckpt | batch | timed steps | s/step mean (min) | steps/s | samples/s "
        "| peak RSS (process) | RSS before training | peak RSS (training) | +RSS (training) | loss first → last | load avg |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['size']} | {r['resolution']} ({r['latent_size']}) | {r['stage']} | {r['precision']} "
            f"| {'on' if r['checkpointing'] else 'off'} | {r['batch']} | {r['steps']} (+{r['warmup']} warm-up) "
            f"| {r['step_seconds_mean']:.3f} ({r['step_seconds_min']:.3f}) | {r['steps_per_s']:.3g} | {r['samples_per_s']:.3g} "
            f"| {gib(r['peak_rss_process_mib'])} | {gib(r['rss_before_training_mib'])} "
            f"| {gib(r['peak_rss_training_mib'])} | {gib(r['rss_increase_training_mib'])} "
            f"| {r['loss_first']:.4g} → {r['loss_last']:.4g} | {r['loadavg_before'][0]:.1f}-{r['loadavg_after'][0]:.1f} |"
        )
    return "\n".join(lines)


def _configs(size: str, args, batch: int, warmup: int, steps: int, precisions: list[str]) -> list[dict]:
    common = {"size": size, "warmup": warmup, "steps": steps}
    if size == "tiny":
        return [
            {
                **common,
                "batch": batch if isinstance(batch, int) else batch[px],
                "resolution": px,
                "stage": stage,
                "precision": p,
                "checkpointing": False,
            }
            for px in TINY_RESOLUTIONS
            for stage in ("quality", "align")
            for p in precisions
        ]
    # full size: bf16 first, so that a time limit still leaves the main numbers
    order = sorted(precisions, key=lambda p: p != "bf16")
    out = []
    for p in order:
        for stage in ("quality", "align"):
            for ckpt in (False, True):
                out.append(
                    {
                        **common,
                        "batch": batch,
                        "resolution": FULL_RESOLUTION,
                        "stage": stage,
                        "precision": p,
                        "checkpointing": ckpt,
                    }
                )
    return out


def run_driver(args) -> None:
    import accelerate
    import diffusers
    import torch
    import transformers

    sizes = ["tiny", "full"] if args.only == "all" else [args.only]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for p in precisions:
        if p not in PRECISIONS:
            raise SystemExit(f"unknown precision {p!r}; use fp32 and/or bf16")
    started = dt.datetime.now(dt.timezone.utc)
    t_start = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="altdiffusion-diffusion-bench-"))
    runs, not_measured = [], []
    full_wall = None  # seconds of the last full-size worker, to predict the next
    try:
        for size in sizes:
            batch, warmup, steps = DEFAULTS[size]
            batch, steps = args.batch or batch, args.steps or steps
            warmup = args.warmup if args.warmup is not None else warmup
            root = workdir / size
            root.mkdir()
            t = time.perf_counter()
            paths = prepare_tiny(root) if size == "tiny" else prepare_full(root)
            print(f"{size}: prepared in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
            for config in _configs(size, args, batch, warmup, steps, precisions):
                tag = _tag(config)
                if size == "full":
                    elapsed = time.perf_counter() - t_start
                    predicted = full_wall or 150
                    if elapsed + predicted > args.budget:
                        not_measured.append(
                            {
                                **config,
                                "why": f"time budget: {elapsed:.0f} s spent, a full-size worker "
                                f"takes ~{predicted:.0f} s, --budget {args.budget} s",
                            }
                        )
                        print(f"  {tag}: skipped (time budget)", file=sys.stderr, flush=True)
                        continue
                    need = full_estimate_mib(
                        config["stage"], config["precision"], config["batch"], config["checkpointing"]
                    )
                    have = mem_available_mib()
                    if need > have - 512 and not args.force:
                        not_measured.append(
                            {
                                **config,
                                "estimated_peak_mib": round(need),
                                "mem_available_mib": round(have),
                                "why": f"memory: needs ~{gib(need)} (estimate), {gib(have)} available",
                            }
                        )
                        print(
                            f"  {tag}: skipped (needs ~{gib(need)}, {gib(have)} available)", file=sys.stderr, flush=True
                        )
                        continue
                data = paths["data"][config["resolution"]] if size == "tiny" else paths["data"]
                spec = {
                    **config,
                    "base": paths.get("base"),
                    "data": data,
                    "threads": args.tiny_threads if size == "tiny" else args.threads,
                    "workdir": str(workdir / tag),
                    "result": str(workdir / f"{tag}.json"),
                }
                if size == "full":
                    spec["mem_available_mib_before"] = round(mem_available_mib())
                report = _spawn(spec, args.worker_timeout)
                shutil.rmtree(workdir / tag, ignore_errors=True)
                if "failed" in report:
                    print(f"  {tag}: FAILED ({report['failed']})", file=sys.stderr, flush=True)
                    not_measured.append({**config, "why": report["failed"], **report})
                    if size == "tiny":
                        raise SystemExit(f"tiny worker {tag} failed")
                    continue
                if size == "full":
                    report["mem_available_mib_before"] = spec["mem_available_mib_before"]
                    full_wall = report["process_wall_s"]
                runs.append(report)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    table = _markdown(runs)
    result = {
        "benchmark": "AltDiffusion training throughput and memory (align and quality stages), CPU",
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "mem_available_mib_at_start": round(mem_available_mib()),
        },
        "settings": {
            "defaults": {
                k: {
                    "batch": v[0] if isinstance(v[0], int) else {str(px): b for px, b in v[0].items()},
                    "warmup": v[1],
                    "steps": v[2],
                }
                for k, v in DEFAULTS.items()
            },
            "overrides": {
                "batch": args.batch,
                "steps": args.steps,
                "warmup": args.warmup,
                "budget_s": args.budget,
                "threads": {"tiny": args.tiny_threads or "default", "full": args.threads or "default"},
            },
            "precisions": precisions,
            "optimizer": "AdamW (loop default), lr 1e-5 constant, max_grad_norm 1.0",
            "timing": "per optimizer step from log.jsonl (log_every=1): batch / samples_per_s; warm-up steps dropped",
            "align_params": "kv",
            "caption_dropout": "stage preset (quality 0.1, align 0)",
            "full_unet": SD14_UNET,
            "full_vae": SD14_VAE,
            "full_text_encoder": XLMR_LARGE_M9,
        },
        "runs": runs,
        "not_measured": not_measured,
        "markdown": table,
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    out = Path(args.output) if args.output else RESULTS / f"training-diffusion-{started.date().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(table)
    for item in not_measured:
        print(f"\nnot measured: {_tag(item)} ({item['why']})")
    print(f"\nwritten {out} ({result['total_s']:.0f} s)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["all", "tiny", "full"], default="all", help="which size(s) to run")
    parser.add_argument("--steps", type=int, default=0, help="timed optimizer steps (default: tiny 20, full 2)")
    parser.add_argument(
        "--batch", type=int, default=0, help="batch size (default: tiny 8 at 32 px and 4 at 64 px, full 1)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up steps (default: tiny 3, full 1)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list: fp32 (no mixed precision) and/or bf16")
    parser.add_argument("--threads", type=int, default=0, help="torch threads, full size (0: torch's default)")
    parser.add_argument(
        "--tiny-threads",
        type=int,
        default=1,
        help="torch threads, tiny size (default 1: tiny ops gain little from more on a loaded machine)",
    )
    parser.add_argument(
        "--budget", type=int, default=690, help="seconds for the whole run; later full-size configs are skipped"
    )
    parser.add_argument(
        "--force", action="store_true", help="run full-size configurations even when memory looks short"
    )
    parser.add_argument("--worker-timeout", type=int, default=480, help="seconds before a worker is killed")
    parser.add_argument("--output", help="result JSON path (default benchmarks/results/training-diffusion-<date>.json)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
    else:
        run_driver(args)


if __name__ == "__main__":
    main()
