"""The sampling loop: a diffusers scheduler driving the UNet, with classifier-free guidance.

eps   = unet(scale(x_t), t, [c_neg, c_pos])              (one batch for both halves)
eps   = eps_neg + w * (eps_pos - eps_neg)                (CFG; skipped when w <= 1)
x_t-1 = scheduler.step(eps, t, x_t)
x_t-1 = (1 - m) * noised(x_init, t-1) + m * x_t-1        (inpainting: keep what is outside mask m)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Inpainting:
    """What the loop blends back outside the mask after every step."""

    init_latents: torch.Tensor
    noise: torch.Tensor
    mask: torch.Tensor  # 1 = repaint


@dataclass
class Sampling:
    """One run of the loop: the scheduler, its timesteps and how each step is taken."""

    scheduler: object
    timesteps: torch.Tensor
    step_kwargs: dict  # eta / generator, where the scheduler's step takes them
    guidance_scale: float | None  # None: no classifier-free guidance
    inpainting: Inpainting | None = None


def sample(
    unet,
    run: Sampling,
    latents: torch.Tensor,
    embeds: torch.Tensor,
    progress: bool = False,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, int]:
    """Denoise ``latents``; returns them and the number of steps taken (fewer if ``should_stop``)."""
    total = len(run.timesteps)
    bar = _progress(total, progress)
    done = 0
    for i, t in enumerate(run.timesteps):
        if should_stop is not None and should_stop():
            break
        noise_pred = _guided_noise(unet, run, latents, t, embeds)
        latents = run.scheduler.step(noise_pred, t, latents, **run.step_kwargs).prev_sample
        if run.inpainting is not None:
            latents = _blend_known(run.scheduler, run.inpainting, latents, run.timesteps[i + 1 : i + 2])
        done = i + 1
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(done, total, latents)
    if bar is not None:
        bar.close()
    return latents, done


def _guided_noise(unet, run: Sampling, latents, t, embeds) -> torch.Tensor:
    if run.guidance_scale is None:
        return unet(run.scheduler.scale_model_input(latents, t), t, encoder_hidden_states=embeds).sample
    model_input = run.scheduler.scale_model_input(torch.cat([latents] * 2), t)
    noise_uncond, noise_text = unet(model_input, t, encoder_hidden_states=embeds).sample.chunk(2)
    return noise_uncond + run.guidance_scale * (noise_text - noise_uncond)


def _blend_known(scheduler, inpainting: Inpainting, latents, next_timestep) -> torch.Tensor:
    """Outside the mask, replace the sample by the init image noised to the next level."""
    known = inpainting.init_latents
    if len(next_timestep):
        known = scheduler.add_noise(known, inpainting.noise, next_timestep.repeat(latents.shape[0]))
    return (1 - inpainting.mask) * known + inpainting.mask * latents


def shifted_callback(callback, offset: int, total: int):
    """``callback`` counting steps across passes (hires fix): step ``offset + i`` of ``total``."""
    if callback is None:
        return None
    return lambda step, _, latents: callback(offset + step, total, latents)


def step_kwargs(scheduler, generator, eta: float) -> dict:
    """``eta`` and ``generator`` for the schedulers whose ``step`` takes them."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="denoising", unit="step", leave=False)
