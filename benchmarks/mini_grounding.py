#!/usr/bin/env python
"""The mini world's grounding measures (README, mini section, "Grounding the words"): where an
AltDiffusion-mini's words look, and whether the UNet reads which of two things comes first.

    altdiffusion mini build --out build/mini                    # trains the three ground-* stages too
    python benchmarks/mini_grounding.py build/mini/ground-pixel/model
    python benchmarks/mini_grounding.py mini                    # the bundled model
    python benchmarks/mini_grounding.py mini --languages en,ru --scenes 128

Prints one JSON line: per caption language (``--languages``, English by default), ``attention`` at
steps 300 and 700 (cross-attention entropy over the uniform's, and the share of each thing's
word-attention, normalised over the pixels, inside its own box and inside the other thing's, also
per relation) and ``true_caption_preferred`` at steps 100-900 (how often a render's denoising error
is lower with its own caption than with its two things exchanged: 0.5 is a bag of words); and
``order`` (``mini composition``'s layout probe: English templates 0 and 1, Chinese 0, Spanish 1).
The renders are the report's first ``--scenes`` two-thing scenes (64), captions of template 0. The
training itself is `altdiffusion train finetune --grounding-token/--grounding-pixel/--grounding-background`
(altdiffusion.training.grounding) on shards that carry each thing's region (`altdiffusion mini data`).
"""

import argparse
import json
import math
import random
from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler

from altdiffusion.mini import world
from altdiffusion.mini.captions import phrase_spans
from altdiffusion.mini.composition import layout_probes, render_latents, swapped
from altdiffusion.mini.evaluate import generation_scenes, load_mini_pipeline, two_thing_scenes
from altdiffusion.mini.scenes import placements, shape_box
from altdiffusion.training.grounding import box_masks, phrase_positions, recorded_attention

PROBES = (("en", 0), ("en", 1), ("zh", 0), ("es", 1))


@dataclass
class FocusScenes:
    """The report's first two-thing scenes, captioned in one language (template 0), as the measures
    below read them, made once for every step they are measured at."""

    relations: list  # each scene's relation ("left_of", "above")
    latents: torch.Tensor  # their renders (random.Random(i) jitter, as render_latents draws them)
    own: torch.Tensor  # their captions' conditioning
    exchanged: torch.Tensor  # the conditioning with the two things exchanged
    tokens: list  # each thing's token positions, per scene
    boxes: list  # each thing's box, per scene (the renders' jitter)

    @classmethod
    @torch.no_grad()
    def make(cls, pipe, lang: str = "en", n: int = 64):
        scenes = two_thing_scenes(n=n)
        texts = [world.caption(s, lang, 0) for s in scenes]
        return cls(
            relations=[s.relation for s in scenes],
            latents=render_latents(pipe, scenes),
            own=pipe.encode_prompt(texts)[0],
            exchanged=pipe.encode_prompt([world.caption(swapped(s), lang, 0) for s in scenes])[0],
            tokens=[phrase_positions(pipe, t, phrase_spans(s, lang, 0)) for s, t in zip(scenes, texts)],
            boxes=[
                [shape_box(p.thing.shape, p.centre, p.extent) for p in placements(s, random.Random(i))]
                for i, s in enumerate(scenes)
            ],
        )


@torch.no_grad()
def attention_focus(pipe, scenes: FocusScenes, step: int) -> dict:
    """Where the words look, the renders noised to ``step``: attention entropy over the uniform's
    (1: spread evenly), and the share of each thing's word-attention (normalised over pixels)
    inside its own box and inside the other thing's box, every layer; both also per relation."""
    timesteps = torch.full((len(scenes.latents),), step)
    noise = torch.randn(scenes.latents.shape, generator=torch.Generator().manual_seed(0))
    noisy = DDPMScheduler.from_config(pipe.scheduler.config).add_noise(scenes.latents, noise, timesteps)
    with recorded_attention(pipe.unet) as maps:
        pipe.unet(noisy, timesteps, encoder_hidden_states=scenes.own)
    entropy, shares = [], []  # shares: (relation, inside own box, inside the other's)
    for probabilities in maps:
        entropy.append(float(-(probabilities * probabilities.clamp_min(1e-12).log()).sum(-1).mean() / math.log(77)))
        side = int(probabilities.shape[1] ** 0.5)
        for sample, tokens, scene_boxes, relation in zip(probabilities, scenes.tokens, scenes.boxes, scenes.relations):
            masks = (box_masks(scene_boxes, side, world.IMAGE_SIZE) > 0.5).float()
            for thing, thing_tokens in enumerate(tokens):
                held = sample[:, thing_tokens].sum(-1)
                held = held / held.sum()
                shares.append((relation, float((held * masks[thing]).sum()), float((held * masks[1 - thing]).sum())))
    mean = lambda values: round(sum(values) / len(values), 3)  # noqa: E731

    def inside(relation=None) -> dict[str, float]:
        kept = [(own, other) for r, own, other in shares if relation in (None, r)]
        return {"inside_own": mean([own for own, _ in kept]), "inside_other": mean([other for _, other in kept])}

    by_relation = {relation: inside(relation) for relation in sorted(set(scenes.relations))}
    return {"entropy": mean(entropy), **inside(), "by_relation": by_relation}


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


@torch.no_grad()
def order_probes(pipe) -> dict[str, float]:
    """The layout probe's order (which thing the UNet puts first), per language and template."""
    scenes = generation_scenes(n=64), two_thing_scenes(n=64)
    probes = {f"{lang}_t{template}": layout_probes(pipe, *scenes, lang, template) for lang, template in PROBES}
    return {name: probe["order"] for name, probe in probes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help='an AltDiffusion-mini folder ("mini": the bundled model)')
    parser.add_argument("--languages", default="en", help="caption languages, comma-separated (default: en)")
    parser.add_argument("--scenes", type=int, default=64, help="how many of the report's two-thing scenes (64)")
    args = parser.parse_args()
    languages = args.languages.split(",")
    if unknown := [lang for lang in languages if lang not in world.LANGUAGES]:
        parser.error(
            f"--languages: no captions in {unknown}; the mini world's languages are {','.join(world.LANGUAGES)}"
        )
    pipe = load_mini_pipeline(args.model)
    pipe.unet.eval()
    measures = {}
    for lang in languages:
        scenes = FocusScenes.make(pipe, lang, args.scenes)
        measures[lang] = {
            "attention": {step: attention_focus(pipe, scenes, step) for step in (300, 700)},
            "true_caption_preferred": {
                step: true_caption_preferred(pipe, scenes, step) for step in (100, 300, 500, 700, 900)
            },
        }
    print(json.dumps({**measures, "order": order_probes(pipe)}))


if __name__ == "__main__":
    main()
