"""Where two-thing scenes fail: does the picture follow the caption's relation, and does the
conditioning the UNet reads carry it?

    order swap   the same scenes with their two things exchanged, same seeds: a model that follows
                 the relation gets both right; one that draws the same layout either way gets at
                 most one of each pair right
    leakage      each thing's colour, shape and size in two-thing images: how many are right, and
                 how many wrong ones are the other thing's (the two things drawn alike: attributes
                 not bound to their thing)
    role probe   a least-squares linear classifier on the conditioning (the mean of each thing's
                 phrase tokens, article left out), trained on 4 of 5 English captions of both
                 templates, tells which thing goes left / above on the 5th; the templates name
                 the things in opposite orders, so the word order alone scores 50%
    layout probe the UNet's own expectation of the layout, without a sampler or a seed: its clean-
                 latent prediction x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) at step t from the
                 scene's background alone noised to t, averaged over noise draws, lies nearer to the
                 scene's render than to an alternative's: the opposite position (one thing), the
                 other relation (axis) or the two things exchanged (order); 50% is chance
    padding      what the UNet reads: the share of its cross-attention that falls on the caption's
                 padding states (77 positions, a caption fills 15-25) rather than on its words,
                 and how far exchanging the two things moves the mean padding state, relative to
                 the distance between two different scenes' (0: the padding carries no order)
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from altdiffusion.mini import GUIDANCE, world
from altdiffusion.mini.captions import TEMPLATES, slots
from altdiffusion.mini.checker import check, found_things
from altdiffusion.mini.evaluate import generate_images
from altdiffusion.mini.scenes import BACKGROUNDS, Scene
from altdiffusion.training.grounding import recorded_attention

ATTRIBUTES = ("colour", "shape", "size")
# Step 700 of 1000: early in sampling, where the layout is still the UNet's to choose; the layout
# probe's answers were the same at steps 900 and 500 (measured on a from-scratch UNet).
LAYOUT_STEP = 700
LAYOUT_DRAWS = 8
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}


def swapped(scene: Scene) -> Scene:
    """``scene`` with its two things exchanged: the other one is now left of / above."""
    return Scene(tuple(reversed(scene.things)), scene.background, relation=scene.relation)


def drawn(pipe, scenes, lang: str, template: int = 0, guidance: float = GUIDANCE) -> list:
    """One image per scene, with the report's seeds and steps."""
    images = generate_images(pipe, scenes, lang, 1, template=template, guidance=guidance)
    return [images[(i, 0)] for i in range(len(scenes))]


def order_swap_counts(images, swapped_images, scenes) -> dict[str, int]:
    """How often the relation is right for the scenes, for their swaps, for both and for neither."""
    a = [check(image, scene)["relation"] for image, scene in zip(images, scenes)]
    b = [check(image, swapped(scene))["relation"] for image, scene in zip(swapped_images, scenes)]
    return {
        "n": len(scenes),
        "right": sum(a),
        "right_swapped": sum(b),
        "both": sum(x and y for x, y in zip(a, b)),
        "neither": sum(not (x or y) for x, y in zip(a, b)),
    }


def leakage_counts(images, scenes) -> dict[str, int]:
    """Per attribute, over both things of every scene: how many the images get right, and how many
    wrong ones take the other thing's value instead."""
    counts = {"things": 2 * len(scenes), "missing": 0}
    counts.update({f"{attribute}_{kind}": 0 for attribute in ATTRIBUTES for kind in ("right", "from_other")})
    for image, scene in zip(images, scenes):
        for found, thing, other in zip(found_things(image, scene), scene.things, reversed(scene.things)):
            if found is None:
                counts["missing"] += 1
                continue
            for attribute in ATTRIBUTES:
                got, wanted, others = (getattr(x, attribute) for x in (found, thing, other))
                counts[f"{attribute}_right"] += got == wanted
                counts[f"{attribute}_from_other"] += got != wanted and got == others
    return counts


def diagnose(pipe, scenes, lang: str = "en", template: int = 0, guidance: float = GUIDANCE) -> dict:
    """The order swap and the leakage counts, from one image of each scene and of its swap."""
    images = drawn(pipe, scenes, lang, template, guidance)
    swapped_images = drawn(pipe, [swapped(s) for s in scenes], lang, template, guidance)
    return {"order_swap": order_swap_counts(images, swapped_images, scenes), "leakage": leakage_counts(images, scenes)}


def phrase_states(text_encoder, tokenizer, scene: Scene, template: int) -> list[np.ndarray]:
    """The mean conditioning state over each thing's words (first thing first), English caption."""
    text = world.caption(scene, "en", template)
    encoded = tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
    with torch.no_grad():
        device = getattr(text_encoder, "device", "cpu")  # the model's (a plain function: the CPU)
        ids, mask = (encoded[key].to(device) for key in ("input_ids", "attention_mask"))
        states = text_encoder(ids, mask)[0].float().cpu().numpy()
    spans = encoded["offset_mapping"][0].tolist()
    means = []
    for key in ("a0", "a1"):
        # Without the article: "A" opens the caption of template 0 only, so its token would tell
        # the role by capitalisation, not by what the encoder read.
        phrase = slots("en", scene)[key].split(" ", 1)[1].lower()
        start = text.lower().index(phrase)
        tokens = [i for i, (a, b) in enumerate(spans) if b > a and a < start + len(phrase) and b > start]
        means.append(states[tokens].mean(0))
    return means


def role_probe(text_encoder, tokenizer, scenes) -> float:
    """Held-out accuracy of a linear classifier of the spatial role from :func:`phrase_states`."""
    features, roles = [], []
    for template in range(len(TEMPLATES["en"][1])):
        for scene in scenes:
            first, second = phrase_states(text_encoder, tokenizer, scene, template)
            features += [first, second]
            roles += [1.0, -1.0]  # things[0] is the one left of / above things[1]
    x = np.hstack([np.asarray(features), np.ones((len(features), 1))])
    y = np.asarray(roles)
    held_out = np.arange(len(y)) % 10 >= 8  # whole captions (both phrases) held out
    w, *_ = np.linalg.lstsq(x[~held_out], y[~held_out], rcond=None)
    return float(np.mean(np.sign(x[held_out] @ w) == y[held_out]))


def render_latents(pipe, scenes) -> torch.Tensor:
    """The VAE latents of each scene's render (fixed jitter), as the UNet sees training images."""
    return torch.cat(
        [
            pipe.encode_image(world.render(s, random.Random(i)), world.IMAGE_SIZE, world.IMAGE_SIZE)
            for i, s in enumerate(scenes)
        ]
    )


@torch.no_grad()
def expected_latents(pipe, scenes, lang: str, template: int = 0, step: int = LAYOUT_STEP, draws: int = LAYOUT_DRAWS):
    """The UNet's clean-latent prediction for each scene's caption at ``step``, from the scene's
    background alone noised to that step (no thing in view, so the layout is the UNet's own),
    averaged over ``draws`` noises."""
    size = world.IMAGE_SIZE
    backgrounds = torch.cat(
        [pipe.encode_image(Image.new("RGB", (size, size), BACKGROUNDS[s.background]), size, size) for s in scenes]
    )
    conditioning, _ = pipe.encode_prompt([world.caption(s, lang, template) for s in scenes])
    alpha = pipe.scheduler.alphas_cumprod[step].to(backgrounds)
    generator = torch.Generator().manual_seed(0)
    mean = torch.zeros_like(backgrounds)
    for _ in range(draws):
        noise = torch.randn(backgrounds.shape, generator=generator).to(backgrounds)
        noisy = alpha.sqrt() * backgrounds + (1 - alpha).sqrt() * noise
        eps = pipe.unet(noisy, step, encoder_hidden_states=conditioning).sample
        mean += (noisy - (1 - alpha).sqrt() * eps) / alpha.sqrt() / draws
    return mean


def nearer(expected: torch.Tensor, right: torch.Tensor, wrong: torch.Tensor) -> float:
    """Share of the ``expected`` latents nearer to their ``right`` latents than to their ``wrong`` ones."""
    expected, right, wrong = (x.flatten(1) for x in (expected, right, wrong))
    return round(float(((expected - right).norm(dim=1) < (expected - wrong).norm(dim=1)).float().mean()), 4)


def layout_probes(pipe, one_thing, two_thing, lang: str = "en", template: int = 0) -> dict[str, float]:
    """The layout probe for the position of one thing (scenes at the centre left out), the axis of
    a relation and the order of two things: :func:`expected_latents` against the scene's render
    and the render of the scene changed in that one respect."""
    placed = [s for s in one_thing if s.position in OPPOSITE]
    other_axis = {"left_of": "above", "above": "left_of"}
    # The axis and the order ask the same two-thing predictions and renders: made once for both.
    expected_two, two = expected_latents(pipe, two_thing, lang, template), render_latents(pipe, two_thing)
    return {
        "position": nearer(
            expected_latents(pipe, placed, lang, template),
            render_latents(pipe, placed),
            render_latents(pipe, [replace(s, position=OPPOSITE[s.position]) for s in placed]),
        ),
        "axis": nearer(
            expected_two, two, render_latents(pipe, [replace(s, relation=other_axis[s.relation]) for s in two_thing])
        ),
        "order": nearer(expected_two, two, render_latents(pipe, [swapped(s) for s in two_thing])),
    }


def _padded_conditioning(pipe, scenes, lang: str, template: int, swap: bool = False):
    """The conditioning of each scene's caption (one 77-token chunk) and where it is padding."""
    chunks = [pipe.prompt_chunks(world.caption(swapped(s) if swap else s, lang, template))[:1] for s in scenes]
    padding = torch.tensor([[not on for on in chunk[0].attention_mask] for chunk in chunks])
    return pipe.encode_chunks(chunks), padding


@torch.no_grad()
def padding_attention(pipe, scenes, lang: str = "en", template: int = 0, step: int = LAYOUT_STEP) -> float:
    """Share of the UNet's cross-attention (every layer, head, position and scene) on padding
    states, one denoising call at ``step`` from pure noise."""
    conditioning, padding = _padded_conditioning(pipe, scenes, lang, template)
    size = pipe.unet.config.sample_size
    shape = (len(scenes), pipe.unet.config.in_channels, size, size)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(conditioning)
    with recorded_attention(pipe.unet) as maps:
        pipe.unet(noise, step, encoder_hidden_states=conditioning)
    shares = [float((probabilities.mean(1) * padding.to(probabilities)).sum(1).mean()) for probabilities in maps]
    return round(sum(shares) / len(shares), 4)


@torch.no_grad()
def padding_order_signal(pipe, scenes, lang: str = "en", template: int = 0) -> float:
    """Mean distance between a caption's mean padding state and its swap's, over the mean distance
    between two different scenes' (each scene and the next)."""

    def mean_padding(swap: bool) -> torch.Tensor:
        states, padding = _padded_conditioning(pipe, scenes, lang, template, swap)
        weights = padding.to(states)[:, :, None]
        return (states * weights).sum(1) / weights.sum(1)

    plain, exchanged = mean_padding(False), mean_padding(True)
    swap_distance = (plain - exchanged).norm(dim=1).mean()
    scene_distance = (plain - plain.roll(1, 0)).norm(dim=1).mean()
    return round(float(swap_distance / scene_distance), 4)
