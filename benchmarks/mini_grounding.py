#!/usr/bin/env python
"""The mini world's grounding experiment (README, mini section, "Grounding the words"): does the
mini UNet learn which of two things comes first when its cross-attention is told where each
thing's words belong?

    python benchmarks/mini_grounding.py mini --out exp/token --steps 1000 --token 0.01
    python benchmarks/mini_grounding.py mini --unet exp/token/unet --out exp/background \\
        --steps 600 --token 0.01 --background 0.01
    python benchmarks/mini_grounding.py mini --unet exp/background/unet --out exp/pixel \\
        --steps 400 --token 0.01 --background 0.01 --pixel 0.01
    python benchmarks/mini_grounding.py mini --out exp/all --steps 500 --token 0.01 --background 0.01 --pixel 0.01
    python benchmarks/mini_grounding.py mini --unet exp/pixel/unet --focus

Three losses on the cross-attention maps, added to the build's quality-stage diffusion loss (64 px,
caption dropout 0.1, min-SNR 5, offset noise 0.1, batch 64, lr 2e-4 after 50 warm-up steps):
``--token``: the attention of each thing's words, normalised over the pixels, should fall inside
that thing's box, (1 - share inside)^2 (TokenCompose's token loss, Wang et al. 2024);
``--pixel``: inside the box, the thing's words should hold the attention, -log(their share);
``--background``: both again on a second pass over the two-thing scenes whose input is their
background alone, noised to a step in 600-999, so that no colour in view can tell the words where
their thing is: only the caption's order and the pixel's place can.
The samples are the build's 20,000 training samples (seed 0), drawn again from the world with
each thing's box, captions in all nine languages; every ``--probe-every`` steps the layout probe
(``mini composition``'s) prints as a JSON line, also appended to OUT/probe.jsonl, and the UNet is
saved to OUT/unet.
"""

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDPMScheduler
from PIL import Image

from altdiffusion.mini import build, world
from altdiffusion.mini.captions import SHORT, slots
from altdiffusion.mini.composition import layout_probes, recorded_attention, render_latents, swapped
from altdiffusion.mini.evaluate import generation_scenes, load_mini_pipeline, two_thing_scenes
from altdiffusion.mini.scenes import BACKGROUNDS, placements, sample_scene, shape_box
from altdiffusion.training.data import crop_pixels
from altdiffusion.training.diffusion import DiffusionTask, UNetModel

BATCH, LR, WARMUP, CAPTION_DROPOUT = 64, 2e-4, 50, 0.1
BACKGROUND_STEPS = (600, 1000)
PROBES = (("en", 0), ("en", 1), ("zh", 0), ("es", 1))


def training_sample(index: int, seed: int = 0):
    """world.make_sample's scene, image and template, with each thing's box (drawn with the same
    random numbers the render used)."""
    rng = random.Random(f"{seed}-train-{index}")
    scene = sample_scene(rng, "train")
    state = rng.getstate()
    image = world.render(scene, rng)
    rng.setstate(state)
    boxes = [shape_box(p.thing.shape, p.centre, p.extent) for p in placements(scene, rng)]
    return scene, image, boxes, world.draw_template(scene, rng)


def phrase_spans(scene, lang: str, text: str, template: int):
    """(start, length) of each thing's noun phrase in ``text``, or None where one is not found."""
    if template == SHORT:
        return [(0, len(text))]  # the short caption is the thing's phrase alone
    filled, lowered, spans = slots(lang, scene), text.lower(), []
    for i in range(len(scene.things)):
        forms = [filled.get(f"a{i}"), filled.get(f"n{i}"), filled.get(f"n{i}_ins")]
        if lang == "ru" and i == 1 and "rel_n1" in filled:
            forms.append(filled["rel_n1"].split(" ", 2)[2])  # "слева от X": X in the genitive
        found = [f.lower() for f in forms if f and f.lower() in lowered]
        if not found:
            return None
        spans.append((lowered.index(found[0]), len(found[0])))
    return spans


def phrase_tokens(tokenizer, text: str, spans) -> list[list[int]] | None:
    """The chunk positions (BOS at 0, as the pipeline's chunks) of each phrase's tokens."""
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    tokens = [[j for j, (a, b) in enumerate(offsets) if b > a and a < s + n and b > s and j < 76] for s, n in spans]
    return tokens if all(tokens) else None


def box_masks(boxes, side: int) -> torch.Tensor:
    """(things, side*side): how much of each latent cell each box covers, peak 1."""
    edges = torch.arange(side + 1, dtype=torch.float32) * (world.IMAGE_SIZE / side)
    masks = []
    for left, top, right, bottom in boxes:
        across = (torch.minimum(edges[1:], torch.tensor(right)) - torch.maximum(edges[:-1], torch.tensor(left))).clamp(
            0
        )
        down = (torch.minimum(edges[1:], torch.tensor(bottom)) - torch.maximum(edges[:-1], torch.tensor(top))).clamp(0)
        cover = down[:, None] * across[None, :]
        masks.append((cover / cover.max()).flatten())
    return torch.stack(masks)


def grounding_loss(maps, items, pixel_weight: float) -> torch.Tensor:
    """Token loss (+ ``pixel_weight`` x pixel loss) over every layer and every grounded thing;
    ``items`` holds (tokens per thing, boxes) or None per sample."""
    total, count, masks = torch.zeros(()), 0, {}
    for probabilities in maps:
        side = int(probabilities.shape[1] ** 0.5)
        for index, (sample, item) in enumerate(zip(probabilities, items)):
            if item is None:
                continue
            tokens, boxes = item
            if (side, index) not in masks:  # layers of one resolution share them
                masks[side, index] = box_masks(boxes, side)
            for thing_tokens, mask in zip(tokens, masks[side, index]):
                held = sample[:, thing_tokens].sum(-1)
                if pixel_weight:
                    total = total + pixel_weight * -(mask * held.clamp_min(1e-6).log()).sum() / mask.sum()
                total = total + (1 - (mask * held / held.sum()).sum()) ** 2
                count += 1
    return total / max(count, 1)


def batches(tokenizer, seed: int = 0):
    """(pixels, captions, noise seed), grounding items and scenes, from the build's training set."""
    n = build.RECIPE["data"]["train"]
    order = list(range(n))
    random.Random(seed).shuffle(order)
    rng, position, index = random.Random(seed + 1), 0, 0
    while True:
        pixels, captions, items, scenes = [], [], [], []
        for _ in range(BATCH):
            scene, image, boxes, template = training_sample(order[position % n], seed)
            position += 1
            lang = rng.choice(world.LANGUAGES)
            text = world.caption(scene, lang, template)
            if rng.random() < CAPTION_DROPOUT:
                text, item = "", None
            else:
                spans = phrase_spans(scene, lang, text, template)
                tokens = phrase_tokens(tokenizer, text, spans) if spans else None
                item = (tokens, boxes) if tokens else None
            pixels.append(crop_pixels(image, world.IMAGE_SIZE))
            captions.append(text)
            items.append(item)
            scenes.append(scene)
        yield (torch.stack(pixels), captions, 1000 + index), items, scenes
        index += 1


def background_pass(pipe, task, model, batch, items, scenes, step: int, pixel_weight: float) -> torch.Tensor:
    """The grounding loss of the two-thing scenes with their background alone as the input."""
    chosen = [i for i, item in enumerate(items) if item is not None and len(scenes[i].things) == 2]
    if not chosen:
        return torch.zeros(())
    size = world.IMAGE_SIZE
    with torch.no_grad():
        plain = [Image.new("RGB", (size, size), BACKGROUNDS[scenes[i].background]) for i in chosen]
        clean = torch.cat([pipe.encode_image(image, size, size) for image in plain])
    generator = torch.Generator().manual_seed(step)
    timesteps = torch.randint(*BACKGROUND_STEPS, (len(chosen),), generator=generator)
    noisy = task.noise_scheduler.add_noise(clean, torch.randn(clean.shape, generator=generator), timesteps)
    with recorded_attention(pipe.unet) as maps:
        model(noisy, timesteps, task.conditioning(model, [batch[1][i] for i in chosen]))
    return grounding_loss(maps, [items[i] for i in chosen], pixel_weight)


def probed(pipe) -> dict:
    scenes = generation_scenes(n=64), two_thing_scenes(n=64)
    pipe.unet.eval()
    with torch.no_grad():
        probes = {f"{lang}_t{template}": layout_probes(pipe, *scenes, lang, template) for lang, template in PROBES}
    pipe.unet.train()
    return probes


def load_trained(start: str, unet: str | None):
    """START's pipeline, with the UNet of an earlier run where ``unet`` names one."""
    pipe = load_mini_pipeline(start)
    if unet:
        from diffusers import UNet2DConditionModel

        pipe.unet = UNet2DConditionModel.from_pretrained(unet)
    return pipe


@dataclass
class FocusScenes:
    """The report's first 64 two-thing scenes (English template 0) as the measures below read
    them, made once for every step they are measured at."""

    latents: torch.Tensor  # their renders (random.Random(i) jitter, as render_latents draws them)
    own: torch.Tensor  # their captions' conditioning
    exchanged: torch.Tensor  # the conditioning with the two things exchanged
    tokens: list  # each thing's token positions, per scene
    boxes: list  # each thing's box, per scene (the renders' jitter)

    @classmethod
    @torch.no_grad()
    def make(cls, pipe):
        scenes = two_thing_scenes(n=64)
        texts = [world.caption(s, "en", 0) for s in scenes]
        return cls(
            latents=render_latents(pipe, scenes),
            own=pipe.encode_prompt(texts)[0],
            exchanged=pipe.encode_prompt([world.caption(swapped(s), "en", 0) for s in scenes])[0],
            tokens=[phrase_tokens(pipe.tokenizer, t, phrase_spans(s, "en", t, 0)) for s, t in zip(scenes, texts)],
            boxes=[
                [shape_box(p.thing.shape, p.centre, p.extent) for p in placements(s, random.Random(i))]
                for i, s in enumerate(scenes)
            ],
        )


@torch.no_grad()
def attention_focus(pipe, scenes: FocusScenes, step: int) -> dict[str, float]:
    """Where the words look, the renders noised to ``step``: attention entropy over the uniform's
    (1: spread evenly), and the share of each thing's word-attention (normalised over pixels)
    inside its own box and inside the other thing's box, every layer."""
    timesteps = torch.full((len(scenes.latents),), step)
    noise = torch.randn(scenes.latents.shape, generator=torch.Generator().manual_seed(0))
    noisy = DDPMScheduler.from_config(pipe.scheduler.config).add_noise(scenes.latents, noise, timesteps)
    with recorded_attention(pipe.unet) as maps:
        pipe.unet(noisy, timesteps, encoder_hidden_states=scenes.own)
    entropy, own, other = [], [], []
    for probabilities in maps:
        entropy.append(float(-(probabilities * probabilities.clamp_min(1e-12).log()).sum(-1).mean() / math.log(77)))
        side = int(probabilities.shape[1] ** 0.5)
        for sample, tokens, scene_boxes in zip(probabilities, scenes.tokens, scenes.boxes):
            masks = (box_masks(scene_boxes, side) > 0.5).float()
            for thing, thing_tokens in enumerate(tokens):
                held = sample[:, thing_tokens].sum(-1)
                held = held / held.sum()
                own.append(float((held * masks[thing]).sum()))
                other.append(float((held * masks[1 - thing]).sum()))
    mean = lambda values: round(sum(values) / len(values), 3)  # noqa: E731
    return {"entropy": mean(entropy), "inside_own": mean(own), "inside_other": mean(other)}


@torch.no_grad()
def true_caption_preferred(pipe, scenes: FocusScenes, step: int, draws: int = 8) -> float:
    """Share of the renders whose denoising error at ``step`` (mean of ``draws`` noises) is lower
    with their own caption than with the two things exchanged: 0.5 when the UNet reads the
    caption as a bag of words."""
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    generator, timesteps = torch.Generator().manual_seed(0), torch.full((len(scenes.latents),), step)
    margin = torch.zeros(len(scenes.latents))
    for _ in range(draws):
        noise = torch.randn(scenes.latents.shape, generator=generator)
        noisy = scheduler.add_noise(scenes.latents, noise, timesteps)
        for sign, conditioning in ((1, scenes.exchanged), (-1, scenes.own)):
            margin += sign * ((pipe.unet(noisy, timesteps, conditioning).sample - noise) ** 2).mean((1, 2, 3))
    return round(float((margin > 0).float().mean()), 3)


def run(args) -> None:
    torch.manual_seed(0)
    pipe = load_trained(args.start, args.unet)
    # The task gives the build's diffusion loss; its own data source is never read (Path: unexpanded).
    task = DiffusionTask(
        pipe, Path("."), stage="quality", resolution=world.IMAGE_SIZE, caption_dropout=CAPTION_DROPOUT,
        noise_offset=0.1, min_snr_gamma=5, seed=0, cache_latents=True,
    )  # fmt: skip
    params = [p for p in pipe.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=0.0)
    model = UNetModel(pipe.unet).train()
    args.out.mkdir(parents=True, exist_ok=True)
    stream, started, sums = batches(pipe.tokenizer), time.time(), {"loss": [], "token": [], "background": []}
    for step in range(1, args.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = LR * min(1.0, step / WARMUP)
        batch, items, scenes = next(stream)
        with recorded_attention(pipe.unet) as maps:
            loss, _ = task.loss(model, batch)
        pixel_weight = args.pixel / args.token
        grounding = grounding_loss(maps, items, pixel_weight)
        background = torch.zeros(())
        if args.background:
            background = background_pass(pipe, task, model, batch, items, scenes, step, pixel_weight)
        total = loss + args.token * grounding + args.background * background
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        for name, value in zip(sums, (loss, grounding, background)):
            sums[name].append(float(value.detach()))
        if step % args.probe_every == 0 or step == args.steps:
            means = {name: sum(v) / len(v) for name, v in sums.items()}
            line = {"step": step, **means, "minutes": (time.time() - started) / 60, **probed(pipe)}
            sums = {name: [] for name in sums}
            print(json.dumps(line), flush=True)
            with open(args.out / "probe.jsonl", "a") as log:
                log.write(json.dumps(line) + "\n")
            pipe.unet.save_pretrained(args.out / "unet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("start", help='an AltDiffusion-mini folder ("mini": the bundled model)')
    parser.add_argument("--unet", help="a UNet folder to train instead of START's (an earlier run's OUT/unet)")
    parser.add_argument("--out", type=Path, help="where probe.jsonl and unet/ go (training)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--token", type=float, default=0.01, help="weight of the token loss")
    parser.add_argument("--pixel", type=float, default=0.0, help="weight of the pixel loss")
    parser.add_argument("--background", type=float, default=0.0, help="weight of the background pass")
    parser.add_argument("--probe-every", type=int, default=200)
    parser.add_argument(
        "--focus",
        action="store_true",
        help="print attention_focus and true_caption_preferred for START (--unet), then stop",
    )
    args = parser.parse_args()
    if args.token <= 0:
        parser.error("--token must be > 0: the pixel and background losses are weighed against it")
    if args.unet and not Path(args.unet, "config.json").is_file():
        parser.error(f"--unet {args.unet}: not a UNet folder (no config.json)")
    if args.focus:
        pipe = load_trained(args.start, args.unet)
        pipe.unet.eval()
        scenes = FocusScenes.make(pipe)
        focus = {step: attention_focus(pipe, scenes, step) for step in (300, 700)}
        preferred = {step: true_caption_preferred(pipe, scenes, step) for step in (100, 300, 500, 700, 900)}
        print(json.dumps({"attention": focus, "true_caption_preferred": preferred}))
        return
    if args.out is None:
        parser.error("--out is required to train (only --focus goes without it)")
    run(args)


if __name__ == "__main__":
    main()
