"""Measurements on the mini world, each a number a reader can check by hand.

    zero-shot     (colour, shape) of a one-thing image = argmax_(c,s) cos(image, text("a <c> <s>"))
    retrieval     text -> image R@1 over N distinct scenes, caption in language X
    generation    share of (scene, seed) images the checker passes on every attribute
    consistency   same scene and seed in English and in X: share whose checker verdicts agree
    VAE ceiling   share of rendered scenes the checker still passes after the VAE's encode -> decode:
                  no UNet can do better than the VAE it draws through

Evaluation scenes come from ``world.scenes_for_eval`` with seeds far from the training data's,
rendered with jitter, so no evaluation image is a training image.
"""

from __future__ import annotations

from pathlib import Path

import torch

from altdiffusion.mini import GUIDANCE, SAMPLER, world
from altdiffusion.mini.checker import check

EVAL_SEED = 10_000  # offset from the build seed: evaluation scenes and jitter


def _clip(model):
    from altdiffusion.clip import CLIP, load_clip

    return model if isinstance(model, CLIP) else load_clip(model, dtype="fp32")


def eval_images(scenes, seed: int):
    import random

    return [world.render(s, random.Random(f"eval-{seed}-{i}")) for i, s in enumerate(scenes)]


def retrieval_scenes(seed: int = 0, n: int = 200):
    """The retrieval gallery: 3/4 one-thing and 1/4 two-thing scenes, distinct."""
    return world.scenes_for_eval("seen", n * 3 // 4, EVAL_SEED + seed, 1) + world.scenes_for_eval(
        "seen", n // 4, EVAL_SEED + seed, 2
    )


def zero_shot_scenes(seed: int = 0, n: int = 200):
    return world.scenes_for_eval("seen", n, EVAL_SEED + seed + 1, 1)


def generation_scenes(seed: int = 0, n: int = 128):
    """The report's one-thing generation scenes: seen (colour, shape) pairs."""
    return world.scenes_for_eval("seen", n, EVAL_SEED + seed + 2, 1)


def held_out_scenes(seed: int = 0, n: int = 128):
    """The report's one-thing scenes with a (colour, shape) pair the training split never shows."""
    return world.scenes_for_eval("heldout", n, EVAL_SEED + seed + 3, 1)


def two_thing_scenes(seed: int = 0, n: int = 64):
    """The report's two-thing scenes (the composition measurements use the same ones)."""
    return world.scenes_for_eval("seen", n, EVAL_SEED + seed + 4, 2)


# The 40 zero-shot classes: every (colour, shape); the class name is the phrase "a <colour> <shape>".
ZERO_SHOT_LABELS = [(c, s) for c in world.COLOURS for s in world.SHAPES]


@torch.no_grad()
def retrieval_r1(model, lang: str, *, seed: int = 0, n: int = 200) -> float:
    from altdiffusion.eval.metrics import retrieval_metrics

    clip = _clip(model)
    scenes = retrieval_scenes(seed, n)
    images = clip.embed_image(eval_images(scenes, seed))
    texts = clip.embed_text([world.caption(s, lang, 0) for s in scenes])
    return retrieval_metrics(texts, images, torch.arange(len(scenes)), ks=(1,))["image_retrieval_recall@1"]


@torch.no_grad()
def zero_shot(model, lang: str, *, seed: int = 0, n: int = 200) -> dict[str, float]:
    """Colour and shape accuracy on one-thing images: each image takes the best of the 40 phrases
    "a <colour> <shape>" (CLIP's zero-shot rule over the joint label set, one template: the phrase);
    its colour and its shape are scored separately."""
    from altdiffusion.eval.metrics import class_embeddings

    clip = _clip(model)
    scenes = zero_shot_scenes(seed, n)
    images = clip.embed_image(eval_images(scenes, seed + 1))
    classifier = class_embeddings(clip.embed_text, [world.phrase(c, s, lang) for c, s in ZERO_SHOT_LABELS], ["{c}"])
    return marginal_accuracy([ZERO_SHOT_LABELS[i] for i in (images @ classifier.t()).argmax(1).tolist()], scenes)


def marginal_accuracy(predicted, scenes) -> dict[str, float]:
    """Share of one-thing scenes whose predicted (colour, shape) has the right colour, the right shape."""
    colour = sum(c == s.things[0].colour for (c, _), s in zip(predicted, scenes)) / len(scenes)
    shape = sum(sh == s.things[0].shape for (_, sh), s in zip(predicted, scenes)) / len(scenes)
    return {"colour": colour, "shape": shape}


def generate_images(
    pipe,
    scenes,
    lang: str,
    seeds: int,
    *,
    steps: int = 20,
    guidance: float = GUIDANCE,
    sampler: str = SAMPLER,
    batch: int = 16,
    template: int = 0,
) -> dict:
    """The images {(scene, seed): image}. Image (i, k) uses seed 1000*k + i in every language."""
    images = {}
    prompts = [world.caption(s, lang, template) for s in scenes]
    for k in range(seeds):
        for start in range(0, len(scenes), batch):
            result = pipe(
                prompts[start : start + batch],
                num_inference_steps=steps,
                guidance_scale=guidance,
                sampler=sampler,
                seed=1000 * k + start,
                height=world.IMAGE_SIZE,
                width=world.IMAGE_SIZE,
                progress=False,
            )
            for j, image in enumerate(result.images):
                images[(start + j, k)] = image
    return images


def generate_verdicts(pipe, scenes, lang: str, seeds: int, **options):
    """Checker verdicts [scene][seed], the images (``generate_images``, which takes ``options``),
    and how many images have each attribute wrong."""
    images = generate_images(pipe, scenes, lang, seeds, **options)
    verdicts = [[False] * seeds for _ in scenes]
    failures = {}
    for (i, k), image in images.items():
        found = check(image, scenes[i])
        for attribute, ok in found.items():
            failures[attribute] = failures.get(attribute, 0) + (not ok)
        verdicts[i][k] = all(found.values())
    return verdicts, images, failures


def reconstruction_verdicts(vae, scenes, seed: int, batch: int = 32) -> list[list[bool]]:
    """Checker verdicts [scene][0] on the VAE's reconstruction (posterior mode, what the diffusion
    stages train on) of each scene's evaluation render."""
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(do_resize=False)
    images = eval_images(scenes, seed)
    verdicts = []
    for start in range(0, len(images), batch):
        pixels = processor.preprocess(images[start : start + batch]).to(vae.device, vae.dtype)
        with torch.no_grad():
            decoded = vae.decode(vae.encode(pixels).latent_dist.mode()).sample
        for image, scene in zip(processor.postprocess(decoded.float(), output_type="pil"), scenes[start:]):
            verdicts.append([all(check(image, scene).values())])
    return verdicts


def accuracy(verdicts) -> float:
    flat = [v for row in verdicts for v in row]
    return sum(flat) / len(flat)


def agreement(a, b) -> float:
    pairs = [(x, y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return sum(x == y for x, y in pairs) / len(pairs)


def load_mini_pipeline(folder: str | Path = "mini"):
    from altdiffusion.pipelines.alt_diffusion import load_pipeline

    return load_pipeline(folder, dtype="fp32", safety_checker=False)
