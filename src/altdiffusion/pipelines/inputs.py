"""The first step of a generation: check a call's arguments and resolve them into one record.

Everything later steps and the infotext read (sizes, per-image prompts and seeds, the
sampler's A1111 name) is settled here, once, so a mistake fails before any model runs.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

from PIL import Image

from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.defaults import ModelDefaults
from altdiffusion.pipelines.hires import HiresFix, HiresPlan, check_hires, plan_hires
from altdiffusion.pipelines.noise import Variation, check_randn_source, check_subseed_strength
from altdiffusion.pipelines.samplers import canonical_sampler_name
from altdiffusion.pipelines.seeds import resolve_seed, seed_range, wrap_seed
from altdiffusion.prompts.extra_networks import extract_tags


@dataclass(frozen=True)
class GenerationInputs:
    """One call's settings, checked; lists hold one entry per image of the batch."""

    prompts: list[str]  # as given: what the infotext records (LoRA tags included)
    conditioning_prompts: list[str]  # without LoRA tags: what the text encoder reads
    negative_prompts: list[str]
    seeds: list[int]
    width: int
    height: int
    steps: int
    guidance_scale: float
    sampler: str | None  # A1111 name, or None for the checkpoint's own scheduler
    schedule: str | None  # A1111 "Schedule type"; None for the sampler's default
    eta: float
    image: Image.Image | None = None  # image-to-image / inpainting start
    strength: float | None = None  # denoising strength (image-to-image only)
    mask_image: Image.Image | None = None  # white = repaint
    mask_blur: int = 4
    # variation seeds (one subseed per image) and "Seed resize from"
    variation: Variation = field(default_factory=Variation)
    randn_source: str = "CPU"  # A1111's RNG: where the noise is drawn
    hires: HiresPlan | None = None  # hires fix: the second pass

    @property
    def batch(self) -> int:
        return len(self.prompts)

    @property
    def use_cfg(self) -> bool:
        return self.guidance_scale > 1.0


def check_inputs(
    prompt,
    negative_prompt,
    num_inference_steps,
    guidance_scale,
    height,
    width,
    generator,
    seed,
    num_images_per_prompt,
    image,
    strength,
    mask_image,
    mask_blur,
    sampler,
    schedule,
    eta,
    subseed,
    subseed_strength,
    seed_resize_from_h,
    seed_resize_from_w,
    randn_source,
    hires,
    *,
    defaults: ModelDefaults,  # the model's native size, steps and CFG
    loras: set[str],  # names of the LoRAs merged into the pipeline
    scale_factor: int = 8,  # the VAE's: pixels per latent
) -> GenerationInputs:
    """Validate a pipeline call's arguments (one InvalidInputError naming the argument) and resolve
    them; the names are ``AltDiffusionPipeline.__call__``'s, whose docstring describes them."""
    prompts, negatives = _prompt_lists(prompt, negative_prompt)
    width, height = resolve_size(width, height, image, defaults)
    steps = defaults.steps if num_inference_steps is None else num_inference_steps
    guidance_scale = defaults.cfg_scale if guidance_scale is None else guidance_scale
    _check_numbers(steps, guidance_scale, width, height, num_images_per_prompt)
    _check_images(image, strength, mask_image)
    count = len(prompts) * num_images_per_prompt
    variation = _variation(subseed, subseed_strength, seed_resize_from_w, seed_resize_from_h, generator, count)
    return GenerationInputs(
        prompts=_repeat(prompts, num_images_per_prompt),
        conditioning_prompts=_repeat([_without_tags(p, loras) for p in prompts], num_images_per_prompt),
        negative_prompts=_repeat(negatives, num_images_per_prompt),
        seeds=_seeds(seed, generator, variation, count),
        width=width,
        height=height,
        steps=steps,
        guidance_scale=guidance_scale,
        sampler=canonical_sampler_name(sampler) if sampler else None,
        schedule=schedule or None,
        eta=eta,
        image=image,
        strength=strength if image is not None else None,
        mask_image=mask_image,
        mask_blur=mask_blur,
        variation=variation,
        randn_source=check_randn_source(randn_source),
        hires=_hires(hires, image, width, height, steps, scale_factor),
    )


# The pipeline call's arguments that check_inputs settles (the rest are run-time hooks).
CALL_ARGUMENTS = tuple(
    name for name, p in inspect.signature(check_inputs).parameters.items() if p.kind != p.KEYWORD_ONLY
)


def call_args(namespace: dict) -> dict:
    """The arguments ``check_inputs`` takes, picked by name from the pipeline call's ``locals()``."""
    return {name: namespace[name] for name in CALL_ARGUMENTS}


def resolve_size(width, height, image, defaults: ModelDefaults) -> tuple[int, int]:
    """The size to draw at: as given, else the init image's (rounded down to 8), else the model's native one."""
    if image is not None:
        w, h = image.size
        width, height = width or w - w % 8, height or h - h % 8
    return width or defaults.width, height or defaults.height


def _variation(subseed, strength, resize_w, resize_h, generator, count: int) -> Variation:
    """A1111's variation seeds (image i: subseed + i; -1 or None picks one) and "Seed resize from"."""
    check_subseed_strength(strength)
    width, height = resize_w or 0, resize_h or 0
    if (width > 0) != (height > 0):
        raise InvalidInputError(f"seed_resize_from needs both a width and a height above 0, got {width}x{height}")
    resize = (int(width), int(height)) if width > 0 else None
    if generator is not None and (strength or resize):
        raise InvalidInputError("variation seeds and seed_resize_from need seeds; pass seed=..., not a generator")
    subseeds = tuple(seed_range(resolve_seed(subseed), count)) if strength else ()
    return Variation(subseeds, float(strength), resize)


def _repeat(per_prompt: list, times: int) -> list:
    """One entry per image: each prompt's entry ``times`` times, prompts in order."""
    return [item for item in per_prompt for _ in range(times)]


def _seeds(seed, generator, variation: Variation, count: int) -> list[int]:
    """Image i's seed: seed + i; with variation seeds A1111 gives every image the same seed (and
    image i subseed + i). A caller's generator names the seed when none is given."""
    if (seed is None or seed < 0) and generator is not None:
        seed = wrap_seed(generator.initial_seed())
    first = resolve_seed(seed)
    return [first] * count if variation.strength else seed_range(first, count)


def _hires(hires: HiresFix | None, image, width: int, height: int, steps: int, factor: int) -> HiresPlan | None:
    check_hires(hires, image)
    return None if hires is None else plan_hires(hires, width, height, steps, factor)


def _prompt_lists(prompt, negative_prompt) -> tuple[list[str], list[str]]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise InvalidInputError("no prompt given; pass a prompt (an empty string is allowed)")
    negatives = negative_prompt if isinstance(negative_prompt, list) else [negative_prompt or ""] * len(prompts)
    if len(negatives) != len(prompts):
        raise InvalidInputError(f"{len(prompts)} prompts but {len(negatives)} negative prompts; give one per prompt")
    return prompts, negatives


def _without_tags(prompt: str, loaded: set[str]) -> str:
    """The prompt without ``<lora:...>`` tags; each tag must name a LoRA merged into the pipeline."""
    text, tags = extract_tags(prompt)
    for name, _ in tags:
        if name not in loaded:
            raise InvalidInputError(
                f"the prompt names LoRA {name!r}, which is not loaded; load it first "
                "(pipe.load_lora(FILE), --lora FILE, or the server's --lora-dir)"
            )
    return text


def _check_numbers(steps, guidance, width, height, per_prompt) -> None:
    if not isinstance(steps, int) or steps <= 0:
        raise InvalidInputError(f"steps must be a positive whole number, got {steps!r}")
    if not isinstance(guidance, (int, float)) or not math.isfinite(guidance):
        raise InvalidInputError(f"guidance (CFG scale) must be a finite number, got {guidance!r}")
    for label, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or value <= 0 or value % 8:
            hint = max(8, int(value) // 8 * 8) if isinstance(value, int) else 512
            raise InvalidInputError(f"{label} must be a positive multiple of 8, got {value!r}; try {hint}")
    if not isinstance(per_prompt, int) or per_prompt <= 0:
        raise InvalidInputError(f"images per prompt (batch) must be a positive whole number, got {per_prompt!r}")


def _check_images(image, strength, mask_image) -> None:
    if image is not None and not (isinstance(strength, (int, float)) and 0.0 <= strength <= 1.0):
        raise InvalidInputError(f"strength (denoising strength) must be between 0 and 1, got {strength!r}")
    if mask_image is None:
        return
    if image is None:
        raise InvalidInputError("a mask needs an init image to inpaint; pass --init-image as well")
    if mask_image.size != image.size:
        raise InvalidInputError(
            f"the mask is {mask_image.size[0]}x{mask_image.size[1]} but the init image is "
            f"{image.size[0]}x{image.size[1]}; they must be the same size"
        )
