"""Example prompts for AltDiffusion-mini: scenes of its own world, one per language.

Each is a large thing in the centre of a white background, captioned by the world's own
templates (captions.py), so the words are the ones the model was trained on. The (language,
scene) pairs were picked from a probe of the shipped model at its defaults (64x64, CFG 3,
20 PLMS steps, a batch of 4 from seed 100): each pair drew 4 images the checker accepts. Pairs
the model draws less surely were left out: Arabic "red circle" (0 of 4), green triangles
(3 of 4 in every language), blue squares outside English and Arabic (2 of 4). With Euler a, the
model's sampler since 2026-12-06, and with the lower-casing tokenizer since 2026-12-07, each pair
still draws 4 of 4.
"""

from __future__ import annotations

from functools import cache

from altdiffusion.mini.captions import caption
from altdiffusion.mini.scenes import Scene, Thing

# language -> (colour, shape)
EXAMPLE_THINGS = {
    "zh": ("red", "circle"),
    "en": ("blue", "square"),
    "es": ("yellow", "circle"),
    "fr": ("red", "circle"),
    "ru": ("yellow", "circle"),
    "ja": ("red", "circle"),
    "ko": ("yellow", "circle"),
    "ar": ("blue", "square"),
    "it": ("yellow", "circle"),
}


def example_scene(lang: str) -> Scene:
    colour, shape = EXAMPLE_THINGS[lang]
    return Scene((Thing(shape, colour, "large"),), "white", position="centre")


@cache
def example_prompts() -> tuple[tuple[str, str], ...]:
    """(language, prompt) for each of the nine languages, Chinese first."""
    return tuple((lang, caption(example_scene(lang), lang, 0)) for lang in EXAMPLE_THINGS)
