#!/usr/bin/env python
"""The mini world's order experiments (README, mini section, "Where the order is lost"): does a
UNet learn which of two things comes first when it reads the caption's words only, when the text
encoder trains with it, or when the loss weighs the high noise where the layout is decided?

    python benchmarks/mini_unet_shapes.py init --out exp      # the build's data + start folders
    python benchmarks/mini_order_experiments.py words-only exp/shipped --data exp/data/*.tar \\
        --steps 4000 --lr 5e-4 --warmup 100 --schedule cosine --out exp/words-only
    python benchmarks/mini_order_experiments.py text-encoder exp/run-shipped/model --data exp/data/*.tar \\
        --steps 1000 --lr 2e-4 --text-lr 1e-4 --weight-decay 0.01 --out exp/text-encoder
    python benchmarks/mini_order_experiments.py high-noise exp/run-shipped/model --data exp/data/*.tar \\
        --steps 1000 --lr 2e-4 --weight-decay 0.01 --out exp/high-noise

Every run uses the build's quality-stage loss settings (64 px, caption dropout 0.1, min-SNR 5,
offset noise 0.1, cached latents, batch 64, seed 0) except where its name says otherwise, and
prints the layout probe (``mini composition``'s, English) every ``--probe-every`` steps as a JSON
line, also appended to OUT/probe.jsonl. A loop of its own, not
``train finetune``: the three variants change what the loss reads, which that command does not
offer (and should not, for experiments that failed).
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr

from altdiffusion.mini.composition import layout_probes
from altdiffusion.mini.evaluate import generation_scenes, load_mini_pipeline, two_thing_scenes
from altdiffusion.pipelines.conditioning import encode_chunks
from altdiffusion.prompts.chunking import empty_chunk
from altdiffusion.training.diffusion import DiffusionTask, UNetModel

HIGH_NOISE_FROM = 500  # of 1000 timesteps
HIGH_NOISE_CAP = 20.0  # 1/SNR runs from 2.6 at t = 500 to 214 at t = 999: the noisiest must not drown the rest


class WordsOnlyTask(DiffusionTask):
    """The UNet reads the caption's tokens only: padding states zeroed (BOS..EOS kept)."""

    def conditioning(self, model, captions):
        return words_only(self.pipe, [self.pipe.prompt_chunks(c)[:1] for c in captions])


class TextEncoderTask(DiffusionTask):
    """The text encoder trains with the UNet: its conditioning keeps the gradient."""

    def conditioning(self, model, captions):
        chunks = [self.pipe.prompt_chunks(c)[:1] for c in captions]
        return encode_chunks(self.pipe.text_encoder, chunks, empty_chunk(self.pipe.tokenizer))


class HighNoiseTask(DiffusionTask):
    """Timesteps from the noisy half only, each weighted by min(1/SNR, cap): the clean-latent error."""

    def loss(self, model, batch):
        pixels, captions, noise_seed = batch
        with torch.no_grad():
            latents = self._latents(pixels)
        generator = torch.Generator().manual_seed(noise_seed)
        noise = torch.randn(latents.shape, generator=generator)
        noise = noise + self.noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=generator)
        timesteps = torch.randint(HIGH_NOISE_FROM, 1000, (latents.shape[0],), generator=generator)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        error = F.mse_loss(model(noisy, timesteps, self.conditioning(model, captions)), noise, reduction="none")
        weight = torch.clamp(1 / compute_snr(self.noise_scheduler, timesteps), max=HIGH_NOISE_CAP)
        return (error.mean(dim=(1, 2, 3)) * weight).mean(), {}


def words_only(pipe, chunks) -> torch.Tensor:
    states = pipe.encode_chunks(chunks)
    caption = torch.tensor([chunk[0].attention_mask for chunk in chunks], dtype=states.dtype)
    return states * caption[:, :, None]


class WordsOnlyView:
    """What the layout probe needs of a pipeline, with the words-only conditioning."""

    def __init__(self, pipe):
        self.pipe, self.unet, self.scheduler, self.encode_image = pipe, pipe.unet, pipe.scheduler, pipe.encode_image

    def encode_prompt(self, prompts):
        both = words_only(self.pipe, [self.pipe.prompt_chunks(p)[:1] for p in list(prompts) + [""] * len(prompts)])
        return both[: len(prompts)], both[len(prompts) :]


TASKS = {"words-only": WordsOnlyTask, "text-encoder": TextEncoderTask, "high-noise": HighNoiseTask}


def learning_rate(step: int, args) -> float:
    warm = min(1.0, step / max(1, args.warmup))
    if args.schedule == "constant":
        return args.lr * warm
    progress = min(1.0, max(0, step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))


def probed(pipe, view, scenes, text_trains: bool) -> dict:
    """The layout probe with both models in eval mode, then back to training."""
    pipe.unet.eval()
    pipe.text_encoder.eval()
    with torch.no_grad():
        probe = layout_probes(view, *scenes)
    pipe.unet.train()
    pipe.text_encoder.train(text_trains)
    return probe


def run(args) -> None:
    pipe = load_mini_pipeline(args.start)
    task = TASKS[args.variant](
        pipe, args.data, stage="quality", resolution=64, caption_dropout=0.1, noise_offset=0.1,
        min_snr_gamma=5, seed=0, cache_latents=True,
    )  # fmt: skip
    groups = [{"params": [p for p in pipe.unet.parameters() if p.requires_grad], "lr": args.lr}]
    if args.variant == "text-encoder":
        pipe.text_encoder.requires_grad_(True).train()
        groups.append({"params": list(pipe.text_encoder.parameters()), "lr": args.text_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    model = UNetModel(pipe.unet).train()
    view = WordsOnlyView(pipe) if args.variant == "words-only" else pipe
    scenes = generation_scenes(n=64), two_thing_scenes(n=64)
    args.out.mkdir(parents=True, exist_ok=True)
    batches, started, losses = task.batches(0, 64, 0, 1, 1), time.time(), []
    for step in range(1, args.steps + 1):
        for group, base in zip(optimizer.param_groups, (args.lr, args.text_lr)):
            group["lr"] = learning_rate(step, args) * base / args.lr
        loss, _ = task.loss(model, next(batches))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % args.probe_every == 0 or step == args.steps:
            probe = probed(pipe, view, scenes, text_trains=args.variant == "text-encoder")
            line = {"step": step, "loss": sum(losses) / len(losses), "minutes": (time.time() - started) / 60, **probe}
            losses = []
            print(json.dumps(line), flush=True)
            with open(args.out / "probe.jsonl", "a") as log:
                log.write(json.dumps(line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", choices=sorted(TASKS))
    parser.add_argument("start", help="an AltDiffusion-mini folder to train from")
    parser.add_argument(
        "--data", nargs="+", required=True, help="webdataset shards (benchmarks/mini_unet_shapes.py init)"
    )
    parser.add_argument("--out", type=Path, required=True, help="where probe.jsonl goes")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--text-lr", type=float, default=1e-4, help="the text encoder's (text-encoder only)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--probe-every", type=int, default=500)
    args = parser.parse_args()
    if not Path(args.start, "unet").is_dir():
        parser.error(f"{args.start}: not an AltDiffusion folder (no unet/); make one with mini_unet_shapes.py init")
    run(args)


if __name__ == "__main__":
    main()
