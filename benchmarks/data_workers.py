#!/usr/bin/env python
"""What ``--workers`` does to a training step: the mini build's CLIP and diffusion stages with their
images decoded in the training process (0 workers) and in N worker processes, in one run:

    python benchmarks/data_workers.py [--workers 2] [--steps 24] [--out benchmarks/results/data-workers.json]

- ``clip``: contrastive learning of the bundled AltCLIP-mini with its image tower (the teacher
  stage's shape: batch 128, 64 px), float32 master weights, AdamW;
- ``diffusion``: the quality stage of the bundled AltDiffusion-mini (batch 64, latents cached once
  the first pass has encoded them, caption dropout 0.1, min-SNR 5, offset noise 0.1), AdamW.

Each stage runs ``--steps`` steps per mode in ABBA order on the machine's accelerator if it has
one (else the CPU); the first 4 steps of each run are not timed (worker start-up); the diffusion
stage's latents are encoded once before the timed runs, as the latent cache holds them after a build's
first epoch. Reported per stage and mode: the median seconds of a step and of the wait for
its batch, and ``alone_over_workers``, the ratio of the median steps (above 1: workers pay). The
batches are the same in both modes (tests/training/test_workers.py), so only time differs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from procinfo import cpu_name, print_and_save

from altdiffusion.mini import world
from altdiffusion.mini.evaluate import load_mini_pipeline
from altdiffusion.training.contrastive import ContrastiveTask
from altdiffusion.training.diffusion import DiffusionTask
from altdiffusion.training.prefetch import prepared_batches

WARM_UP = 4


def make_task(stage: str, shards: list[str], device: torch.device):
    if stage == "clip":
        task, micro = ContrastiveTask("mini", shards, seed=0, train_vision=True), 128
    else:
        options = dict(resolution=64, caption_dropout=0.1, min_snr_gamma=5, noise_offset=0.1, cache_latents=True)
        pipe = load_mini_pipeline().to(device, torch.float32)
        task, micro = DiffusionTask(pipe, shards, **options), 64
    task.model.float().to(device)
    return task, micro


def timed_run(task, micro: int, workers: int, steps: int, device: torch.device) -> dict:
    """Seconds per step (and waiting for its batch) over ``steps`` steps with ``workers`` data workers."""
    params = [p for p in task.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)

    def plans():
        return task.plans(0, micro, 0, 1, 1)

    batches = prepared_batches(plans, task.prepare, workers, task.skipped, pin_memory=device.type == "cuda")
    step_s, wait_s = [], []
    for _ in range(steps):
        asked = time.perf_counter()
        batch = next(batches)
        got = time.perf_counter()
        loss, _ = task.loss(task.model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_s.append(time.perf_counter() - asked)
        wait_s.append(got - asked)
    batches.close()  # stops the workers
    return {"step_s": statistics.median(step_s[WARM_UP:]), "batch_wait_s": statistics.median(wait_s[WARM_UP:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--pairs", type=int, default=1, help="ABBA pairs per stage")
    parser.add_argument("--samples", type=int, default=8192, help="mini-world training samples to write")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else cpu_name(),
        "cpus": torch.multiprocessing.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "workers": args.workers,
        "steps": args.steps,
    }
    with tempfile.TemporaryDirectory() as folder:
        world.write_shards(Path(folder), args.samples, seed=0, split="train")
        shards = [str(p) for p in sorted(Path(folder).glob("*.tar"))]
        for stage in ("clip", "diffusion"):
            task, micro = make_task(stage, shards, device)
            if stage == "diffusion":  # every timed run sees the same batches: encode their latents once, untimed
                with torch.no_grad():
                    for batch in itertools.islice(task.batches(0, micro, 0, 1, 1), args.steps):
                        task._latents(batch[0], device)
            runs = {0: [], args.workers: []}
            for i in range(2 * args.pairs):
                for workers in (0, args.workers) if i % 2 == 0 else (args.workers, 0):
                    runs[workers].append(timed_run(task, micro, workers, args.steps, device))
                    print(stage, workers, runs[workers][-1], file=sys.stderr, flush=True)
            alone, parallel = (statistics.median(r["step_s"] for r in runs[w]) for w in (0, args.workers))
            report[stage] = {
                "batch": micro,
                "alone": runs[0],
                "workers": runs[args.workers],
                "alone_over_workers": alone / parallel,
            }
    print_and_save(report, args.out)


if __name__ == "__main__":
    main()
