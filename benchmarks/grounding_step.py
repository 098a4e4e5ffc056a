#!/usr/bin/env python
"""What one step of the mini build's ground-pixel stage costs, with the batched grounding losses
and with the per-region reference (tests/training/grounding_reference.py), measured in one run on
the bundled AltDiffusion-mini and a batch of 64 mini-world training samples:

    python benchmarks/grounding_step.py [--pairs 6] [--out benchmarks/results/grounding-step.json]

- ``losses``: the token and pixel losses of one step's two passes (the loss's own and the
  background pass), forward and backward, on attention maps recorded from the UNet;
- ``step``: the whole training step (diffusion loss, both grounding passes, backward), the latents
  already cached as they are after the first epoch;
- ``encode``: the first epoch's VAE encoding of a batch, one call per image versus one call.

Each comparison alternates A and B (ABBA) ``--pairs`` times; the ratios are medians of neighbouring
pairs, the figure least disturbed by other load. Prints and writes one JSON object.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from procinfo import cpu_name, print_and_save

from altdiffusion.mini import world
from altdiffusion.mini.build import RECIPE
from altdiffusion.mini.evaluate import load_mini_pipeline
from altdiffusion.training import diffusion
from altdiffusion.training.diffusion import DiffusionTask, UNetModel
from altdiffusion.training.grounding import GroundingWeights, grounding_losses, recorded_attention
from tests.training.grounding_reference import per_region_losses


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired(a, b, pairs: int) -> dict:
    """Median seconds of ``a`` and ``b`` over ABBA-ordered calls, and the median of their pair ratios."""
    times_a, times_b = [], []
    for i in range(pairs):
        seconds = {fn: timed(fn) for fn in ((a, b) if i % 2 == 0 else (b, a))}
        times_a.append(seconds[a])
        times_b.append(seconds[b])
    ratios = [tb / ta for ta, tb in zip(times_a, times_b)]
    return {"batched_s": statistics.median(times_a), "reference_s": statistics.median(times_b),
            "reference_over_batched": statistics.median(ratios)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)

    token, pixel, background = RECIPE["ground-pixel"]["weights"]
    pipe = load_mini_pipeline()
    with tempfile.TemporaryDirectory() as folder:
        world.write_shards(Path(folder), 64, seed=0, split="train")
        task = DiffusionTask(
            pipe, [str(p) for p in sorted(Path(folder).glob("*.tar"))], resolution=64, caption_dropout=0.1,
            min_snr_gamma=5, noise_offset=0.1, cache_latents=True, grounding=GroundingWeights(token, pixel, background),
        )  # fmt: skip
        batch = next(task.batches(0, 64, 0, 1, 1))
    model = UNetModel(pipe.unet)
    task.loss(model, batch)  # fills the latent cache and the background latents

    grounded = batch[3]
    cond = task.conditioning(model, batch[1])
    with recorded_attention(pipe.unet) as maps:
        model(torch.randn(64, 4, 16, 16), torch.full((64,), 500), cond)
    leaves = [m.detach().requires_grad_() for m in maps]

    def losses(fn):
        def run():
            t, p = fn(leaves, grounded, 64)
            (token * t + pixel * p).backward()

        return run

    def step(fn):
        def run():
            diffusion.grounding_losses = fn  # what DiffusionTask.loss calls
            loss, _ = task.loss(model, batch)
            loss.backward()
            model.zero_grad(set_to_none=True)

        return run

    pixels = batch[0]
    encode = pipe.vae.encode
    with torch.no_grad():
        results = {
            "encode": paired(lambda: encode(pixels), lambda: [encode(x[None]) for x in pixels], args.pairs),
        }
    results["losses"] = paired(losses(grounding_losses), losses(per_region_losses), args.pairs)
    results["step"] = paired(step(grounding_losses), step(per_region_losses), args.pairs)
    diffusion.grounding_losses = grounding_losses
    report = {
        "what": "ground-pixel stage, bundled AltDiffusion-mini, batch 64, fp32, CPU",
        "grounded_regions": sum(len(g.boxes) for g in grounded if g is not None),
        "attention_maps": [tuple(m.shape) for m in maps],
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "pairs": args.pairs,
        **results,
    }
    print_and_save(report, args.out)


if __name__ == "__main__":
    main()
