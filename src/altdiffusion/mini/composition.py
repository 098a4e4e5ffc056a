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
"""

from __future__ import annotations

import numpy as np
import torch

from altdiffusion.mini import GUIDANCE, world
from altdiffusion.mini.captions import TEMPLATES, slots
from altdiffusion.mini.checker import check, found_things
from altdiffusion.mini.evaluate import generate_images
from altdiffusion.mini.scenes import Scene

ATTRIBUTES = ("colour", "shape", "size")


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
        states = text_encoder(encoded["input_ids"], encoded["attention_mask"])[0].float().numpy()
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
