"""The starting noise of a generation, drawn as A1111 draws it (modules/rng.py), so a seed,
variation seed and "RNG" source from an A1111 infotext give the same noise here.

Per image, with ``s`` its seed, ``u`` its variation seed ("subseed") and ``a`` the strength:

    x      = randn(shape, gen(s))                        (gen(s) then draws the sampler's step noise)
    small  = randn(resize_shape, gen(s))                 only with "Seed resize from"
    base   = small if resized else x
    base   = slerp(a, base, randn(base.shape, gen(u)))   only when a != 0
    noise  = x with base pasted at its centre (cropped when larger), or base itself

``gen`` is a torch generator on the CPU ("RNG: CPU", this project's default: the same
numbers on every machine) or on the CUDA device ("GPU", A1111's default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from altdiffusion.errors import InvalidInputError

RANDN_SOURCES = ("CPU", "GPU")


@dataclass(frozen=True)
class Variation:
    """A1111's variation seeds and "Seed resize from" for a batch (one subseed per image)."""

    subseeds: tuple[int, ...] = ()
    strength: float = 0.0
    resize_from: tuple[int, int] | None = None  # (width, height) in pixels of the seed's original size

    def infotext(self) -> dict[str, object]:
        """A1111's keys but "Variation seed" (one per image); None values are left out."""
        resize = f"{self.resize_from[0]}x{self.resize_from[1]}" if self.resize_from else None
        return {"Variation seed strength": self.strength or None, "Seed resize from": resize}


def check_randn_source(source: str) -> str:
    """The A1111 ``randn_source`` name ("CPU" or "GPU", any case)."""
    for name in RANDN_SOURCES:
        if isinstance(source, str) and source.strip().upper() == name:
            return name
    raise InvalidInputError(
        f"randn_source (RNG) must be one of {', '.join(RANDN_SOURCES)}, got {source!r}; "
        "CPU gives the same noise on every machine, GPU matches A1111's default on a CUDA GPU"
    )


def check_subseed_strength(strength: float) -> None:
    if not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise InvalidInputError(f"subseed_strength (variation strength) must be between 0 and 1, got {strength!r}")


def noise_device(source: str, device: torch.device) -> torch.device:
    """Where the noise is drawn: on the model's device for "GPU" when it is a CUDA device (A1111
    draws on the CPU for MPS too), on the CPU otherwise."""
    device = torch.device(device)
    return device if source == "GPU" and device.type == "cuda" else torch.device("cpu")


def rng_infotext(source: str, device: torch.device) -> str | None:
    """The infotext's ``RNG`` value: "CPU" when the noise came from the CPU; None (A1111's
    default, GPU) when it came from a CUDA device."""
    return "CPU" if noise_device(source, device).type == "cpu" else None


def slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation of two (C, H, W) noises, normalised along dim 1 (H).

    Nearly parallel noises fall back to a plain mix, weighted as A1111 weighs it
    (``low * strength + high * (1 - strength)``).
    """
    low_unit = low / torch.norm(low, dim=1, keepdim=True)
    high_unit = high / torch.norm(high, dim=1, keepdim=True)
    cos = (low_unit * high_unit).sum(1)
    if cos.mean() > 0.9995:
        return low * strength + high * (1 - strength)
    omega = torch.acos(cos)
    sin = torch.sin(omega)
    low_weight = (torch.sin((1.0 - strength) * omega) / sin).unsqueeze(1)
    high_weight = (torch.sin(strength * omega) / sin).unsqueeze(1)
    return low_weight * low + high_weight * high


def paste_centred(canvas: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
    """``canvas`` (C, H, W) with ``patch`` (C, h, w) over its centre; a larger patch is cropped
    to its centre. Offsets round down, as A1111's."""
    out = canvas.clone()
    rows = _centred_spans(canvas.shape[1], patch.shape[1])
    cols = _centred_spans(canvas.shape[2], patch.shape[2])
    (dst_r, src_r), (dst_c, src_c) = rows, cols
    out[:, dst_r, dst_c] = patch[:, src_r, src_c]
    return out


def _centred_spans(outer: int, inner: int) -> tuple[slice, slice]:
    """(canvas slice, patch slice) of one axis when centring a patch of ``inner`` in ``outer``."""
    offset = (outer - inner) // 2
    length = inner if offset >= 0 else inner + 2 * offset
    dst, src = max(offset, 0), max(-offset, 0)
    return slice(dst, dst + length), slice(src, src + length)


def image_noise(
    shape: tuple[int, int, int],
    seed: int,
    generator: torch.Generator,
    variation: Variation,
    subseed: int | None,
    scale_factor: int,
) -> torch.Tensor:
    """One image's (C, H, W) starting noise; ``generator`` (seeded with ``seed``) draws the full-size
    noise and keeps going for the sampler's step noise."""
    device = generator.device
    full = torch.randn(shape, generator=generator, device=device)
    base = full
    if variation.resize_from is not None:
        width, height = variation.resize_from
        small_shape = (shape[0], height // scale_factor, width // scale_factor)
        base = torch.randn(small_shape, generator=_seeded(device, seed), device=device)
    if variation.strength != 0 and subseed is not None:
        sub = torch.randn(base.shape, generator=_seeded(device, subseed), device=device)
        base = slerp(variation.strength, base, sub)
    return paste_centred(full, base) if variation.resize_from is not None else base


def initial_noise(
    shape: tuple[int, int, int],
    seeds: list[int],
    variation: Variation,
    device: torch.device,
    scale_factor: int,
) -> tuple[torch.Tensor, list[torch.Generator]]:
    """The (B, C, H, W) noise of a batch (image i from ``seeds[i]``) and each image's generator."""
    generators = [_seeded(device, seed) for seed in seeds]
    subseeds = list(variation.subseeds) or [None] * len(seeds)
    rows = [
        image_noise(shape, seed, g, variation, sub, scale_factor) for seed, g, sub in zip(seeds, generators, subseeds)
    ]
    return torch.stack(rows), generators


def _seeded(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device).manual_seed(int(seed))
