"""Hires fix (A1111's ``enable_hr``): draw at the base size, upscale, then an image-to-image pass.

    first pass    the plain text-to-image generation at width x height
    upscale       latents: torch interpolate ("Latent" modes), or pixels: decode, PIL resize
                  ("Lanczos", "Nearest"), encode
    second pass   new noise from the same seeds at the target size; ``steps`` of a schedule of
                  int(steps / min(denoising_strength, 0.999)) steps, as A1111 runs it

Target size (rounded down to multiples of 8): ``scale`` x the base size, or ``resize_x`` x ``resize_y`` (one of them 0: keep the
aspect ratio; both: cover the box at the base aspect ratio, then crop the latents to it).
``steps`` 0 means "the first pass's steps", as in A1111.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from PIL import Image

from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.images import to_pil

# A1111's latent upscale modes (modules/shared.py): name -> (torch interpolate mode, antialias)
LATENT_UPSCALERS = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
# A1111's plain-resampling upscalers ("None" resizes with Lanczos, as A1111's resize_image does)
PIXEL_UPSCALERS = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST, "None": Image.LANCZOS}
UPSCALERS = (*LATENT_UPSCALERS, *PIXEL_UPSCALERS)


@dataclass(frozen=True)
class HiresFix:
    """The hires-fix settings of a call, in A1111's terms (API fields ``hr_*``, ``denoising_strength``)."""

    scale: float = 2.0  # hr_scale, used when resize_x and resize_y are both 0
    resize_x: int = 0  # hr_resize_x
    resize_y: int = 0  # hr_resize_y
    upscaler: str | None = None  # hr_upscaler; None: "Latent" (A1111's default), not written in the infotext
    steps: int = 0  # hr_second_pass_steps; 0: the first pass's steps
    denoising_strength: float = 0.7  # A1111's web UI default


@dataclass(frozen=True)
class HiresPlan:
    """:class:`HiresFix` resolved against a base size and step count."""

    settings: HiresFix
    width: int  # upscale target, before cropping to the resize box
    height: int
    crop_x: int  # latent columns / rows cut off (A1111's truncate_x / truncate_y)
    crop_y: int
    steps: int  # steps the second pass runs
    upscaler: str

    @property
    def schedule_steps(self) -> int:
        """Length of the schedule whose last ``steps`` steps run (A1111's img2img step fix)."""
        return int(self.steps / min(self.settings.denoising_strength, 0.999))

    def infotext(self) -> dict[str, object]:
        s = self.settings
        resized = s.resize_x or s.resize_y
        return {
            "Hires upscale": None if resized else s.scale,
            "Hires resize": f"{s.resize_x}x{s.resize_y}" if resized else None,
            "Hires steps": s.steps or None,
            "Hires upscaler": s.upscaler,
        }


def plan_hires(hires: HiresFix, width: int, height: int, steps: int, scale_factor: int) -> HiresPlan:
    """Check ``hires`` and work out its target size and steps (one InvalidInputError naming the setting)."""
    check_hires(hires, None)
    target_w, target_h, crop_x, crop_y = _target_size(hires, width, height, scale_factor)
    # A1111 works in latents of 1/8 the size, so the drawn size is the target rounded down to 8.
    target_w, target_h = target_w // 8 * 8, target_h // 8 * 8
    if min(target_w, target_h) < 8:
        raise InvalidInputError(
            f"hires fix: the upscaled size {target_w}x{target_h} is too small; raise hr_scale or hr_resize_x/y"
        )
    upscaler = hires.upscaler or "Latent"
    return HiresPlan(hires, target_w, target_h, crop_x, crop_y, hires.steps or steps, upscaler)


def check_hires(hires: HiresFix | None, image) -> None:
    """The settings that need no model: a known upscaler, strength, steps, sizes; text-to-image only."""
    if hires is None:
        return
    if not isinstance(hires, HiresFix):
        raise InvalidInputError(f"hires must be a HiresFix(...) or None, got {type(hires).__name__}")
    if image is not None:
        raise InvalidInputError("hires fix is for text-to-image; leave it out with an init image")
    if hires.upscaler is not None and hires.upscaler not in UPSCALERS:
        raise InvalidInputError(f"unknown hires upscaler {hires.upscaler!r}; use one of: {', '.join(UPSCALERS)}")
    if not (isinstance(hires.denoising_strength, (int, float)) and 0 < hires.denoising_strength <= 1):
        raise InvalidInputError(
            f"hires fix denoising strength must be above 0 and at most 1, got {hires.denoising_strength!r}"
        )
    if not isinstance(hires.steps, int) or hires.steps < 0:
        raise InvalidInputError(f"hires steps must be a whole number >= 0 (0: same as steps), got {hires.steps!r}")
    if hires.resize_x < 0 or hires.resize_y < 0:
        raise InvalidInputError(f"hires resize must be >= 0, got {hires.resize_x}x{hires.resize_y}")
    if not hires.resize_x and not hires.resize_y and not (math.isfinite(hires.scale) and hires.scale > 0):
        raise InvalidInputError(f"hires scale must be a positive number, got {hires.scale!r}")


def _target_size(hires: HiresFix, width: int, height: int, factor: int) -> tuple[int, int, int, int]:
    """(width, height, crop_x, crop_y) as A1111's calculate_target_resolution."""
    rx, ry = hires.resize_x, hires.resize_y
    if not rx and not ry:
        return int(width * hires.scale), int(height * hires.scale), 0, 0
    if not ry:
        return rx, rx * height // width, 0, 0
    if not rx:
        return ry * width // height, ry, 0, 0
    if width / height < rx / ry:
        w, h = rx, rx * height // width
    else:
        w, h = ry * width // height, ry
    return w, h, (w - rx) // factor, (h - ry) // factor


def upscale_latents(latents: torch.Tensor, plan: HiresPlan, scale_factor: int) -> torch.Tensor:
    """A latent upscaler's interpolation to the target size."""
    mode, antialias = LATENT_UPSCALERS[plan.upscaler]
    size = (plan.height // scale_factor, plan.width // scale_factor)
    return torch.nn.functional.interpolate(latents, size=size, mode=mode, antialias=antialias)


def upscale_image(image: Image.Image, plan: HiresPlan) -> Image.Image:
    """A pixel upscaler's resampling of one decoded first-pass image to the target size."""
    return image.resize((plan.width, plan.height), PIXEL_UPSCALERS[plan.upscaler])


def crop_latents(latents: torch.Tensor, plan: HiresPlan) -> torch.Tensor:
    """Cut the latents covering the resize box down to it, centred (A1111's truncate)."""
    top, bottom = plan.crop_y // 2, latents.shape[2] - (plan.crop_y + 1) // 2
    left, right = plan.crop_x // 2, latents.shape[3] - (plan.crop_x + 1) // 2
    return latents[:, :, top:bottom, left:right]


def second_pass_timesteps(scheduler, plan: HiresPlan, device) -> torch.Tensor:
    """The last ``plan.steps`` steps of a ``plan.schedule_steps`` schedule."""
    total = max(plan.schedule_steps, plan.steps)
    scheduler.set_timesteps(total, device=device)
    start = (total - plan.steps) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start)
    return scheduler.timesteps[start:]


def upscale_first_pass(pipe, latents: torch.Tensor, plan: HiresPlan) -> torch.Tensor:
    """The first pass's latents at the target size (cropped to a resize box): interpolated by a
    latent upscaler, or decoded, resampled and encoded again by ``pipe``'s VAE."""
    if plan.upscaler in LATENT_UPSCALERS:
        upscaled = upscale_latents(latents, plan, pipe.vae_scale_factor)
    else:
        images = [upscale_image(image, plan) for image in to_pil(pipe.decode_latents(latents))]
        upscaled = torch.cat([pipe.encode_image(image, plan.width, plan.height) for image in images])
    return crop_latents(upscaled, plan)
