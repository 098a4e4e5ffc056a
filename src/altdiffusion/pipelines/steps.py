"""The named steps of :meth:`AltDiffusionPipeline.__call__`, after ``check_inputs`` and before
the infotext: conditioning, scheduler and timesteps, noise and latents, the sampling loop, the
hires pass, decoding and the safety checker. Each reads only the pipeline's components and the
call's :class:`~altdiffusion.pipelines.inputs.GenerationInputs`; the pipeline's state is declared
in :class:`~altdiffusion.pipelines.alt_diffusion.AltDiffusionPipeline`'s ``__init__``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from PIL import Image

from altdiffusion.pipelines.denoising import Inpainting, Sampling, sample, step_kwargs
from altdiffusion.pipelines.hires import second_pass_timesteps, upscale_first_pass
from altdiffusion.pipelines.images import latent_mask, overlay, to_pil, to_tensor
from altdiffusion.pipelines.infotext import generation_infotexts
from altdiffusion.pipelines.inputs import GenerationInputs
from altdiffusion.pipelines.memory import decode_with_fallback
from altdiffusion.pipelines.noise import initial_noise, noise_device
from altdiffusion.pipelines.results import GenerationInterrupted, GenerationResult
from altdiffusion.pipelines.samplers import make_scheduler, sampler_name_for


class GenerationSteps:
    # -- the steps of __call__, in order

    def prepare_conditioning(self, inputs: GenerationInputs) -> torch.Tensor:
        """[negative, positive] conditioning for classifier-free guidance, or positive alone."""
        cond, uncond = self.encode_prompt(inputs.conditioning_prompts, inputs.negative_prompts)
        return torch.cat([uncond, cond]) if inputs.use_cfg else cond

    def prepare_scheduler(self, inputs: GenerationInputs):
        """A fresh scheduler for this call: the requested sampler and schedule, or the checkpoint's own."""
        if inputs.sampler or inputs.schedule:
            sampler = inputs.sampler or sampler_name_for(self.scheduler)
            scheduler = make_scheduler(sampler, self.scheduler.config, inputs.schedule)
        else:
            scheduler = type(self.scheduler).from_config(self.scheduler.config)
        if "noise_sampler_seed" in scheduler.config:  # DPM++ SDE draws its own noise: one seed per image
            scheduler = type(scheduler).from_config(scheduler.config, noise_sampler_seed=list(inputs.seeds))
        return scheduler

    def prepare_timesteps(self, scheduler, inputs: GenerationInputs) -> torch.Tensor:
        """The schedule's timesteps; image-to-image keeps the last ``strength`` of them."""
        scheduler.set_timesteps(inputs.steps, device=self.device)
        timesteps = scheduler.timesteps
        if inputs.image is None:
            return timesteps
        keep = min(int(inputs.steps * inputs.strength), inputs.steps)
        start = max(inputs.steps - keep, 0) * scheduler.order
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        return timesteps[start:] if keep > 0 else timesteps[:0]  # PLMS has steps+1 timesteps: 0 must run none

    def prepare_second_pass(self, inputs: GenerationInputs):
        """Hires fix: a fresh scheduler of the same sampler and the second pass's timesteps, or None."""
        if inputs.hires is None:
            return None
        scheduler = self.prepare_scheduler(inputs)
        return scheduler, second_pass_timesteps(scheduler, inputs.hires, self.device)

    def prepare_noise(self, inputs: GenerationInputs, generator: torch.Generator | None, size=None):
        """Initial noise and the generator(s) ancestral samplers draw step noise from.

        One draw per image from its own seed (A1111: image i of a batch equals a single run
        with seed + i; variation seeds and "Seed resize from" as A1111's, pipelines/noise.py),
        or one draw from a caller's generator (diffusers). ``size``: latent (height, width).
        """
        factor = self.vae_scale_factor
        shape = (self.unet.config.in_channels, *(size or (inputs.height // factor, inputs.width // factor)))
        if generator is None:
            device = noise_device(inputs.randn_source, self.device)
            noise, generators = initial_noise(shape, inputs.seeds, inputs.variation, device, factor)
            generator = generators if inputs.batch > 1 else generators[0]
        else:
            noise = torch.randn((inputs.batch, *shape), generator=generator, device=generator.device)
        return noise.to(device=self.device, dtype=self.dtype), generator

    def prepare_latents(self, inputs: GenerationInputs, scheduler, timesteps, generator):
        """Starting latents (scaled noise, or the init image noised to the first timestep), what to
        blend back outside an inpainting mask, and the generator(s) for the sampler's step noise."""
        noise, generator = self.prepare_noise(inputs, generator)
        if inputs.image is None:
            return noise * scheduler.init_noise_sigma, None, generator
        init_latents = self.encode_image(inputs.image, inputs.width, inputs.height).expand(inputs.batch, -1, -1, -1)
        start = timesteps[:1].repeat(inputs.batch)
        latents = scheduler.add_noise(init_latents, noise, start) if len(timesteps) else init_latents
        if inputs.mask_image is None:
            return latents, None, generator
        mask = latent_mask(inputs.mask_image, inputs.width, inputs.height, self.vae_scale_factor)
        return latents, Inpainting(init_latents, noise, mask.to(device=self.device, dtype=self.dtype)), generator

    def denoise(
        self, inputs, scheduler, timesteps, latents, embeds, generator, inpainting, progress, callback, should_stop
    ) -> tuple[torch.Tensor, int]:
        """The sampling loop (pipelines/denoising.py); returns the latents and how many steps ran."""
        guidance = inputs.guidance_scale if inputs.use_cfg else None
        run = Sampling(scheduler, timesteps, step_kwargs(scheduler, generator, inputs.eta), guidance, inpainting)
        return sample(self.unet, run, latents, embeds, progress, callback, should_stop)

    def hires_pass(
        self, inputs, scheduler, timesteps, latents, embeds, progress, callback, should_stop
    ) -> tuple[torch.Tensor, int]:
        """Hires fix (pipelines/hires.py): upscale the first pass, noise it with new noise from the
        same seeds at the target size, and denoise the last part of the schedule again."""
        upscaled = upscale_first_pass(self, latents, inputs.hires)
        noise, generator = self.prepare_noise(inputs, None, size=tuple(upscaled.shape[2:]))
        start = timesteps[:1].repeat(inputs.batch)
        latents = scheduler.add_noise(upscaled, noise, start) if len(timesteps) else upscaled
        hooks = (progress, callback, should_stop)
        return self.denoise(inputs, scheduler, timesteps, latents, embeds, generator, None, *hooks)

    def postprocess(self, inputs: GenerationInputs, latents, extra_infotext, steps_done: int) -> GenerationResult:
        """Decode, paste the original back outside an inpainting mask, run the safety checker,
        and write each image's infotext."""
        images = to_pil(self.decode_latents(latents))
        if inputs.mask_image is not None:
            images = [overlay(img, inputs.image, inputs.mask_image, inputs.mask_blur) for img in images]
        nsfw = [False] * len(images)
        if self.safety_checker is not None:
            images, nsfw = self._check_safety(images)
        return GenerationResult(images, self.infotexts(inputs, extra_infotext), list(inputs.seeds), nsfw, steps_done)

    def infotexts(self, inputs: GenerationInputs, extra: Mapping[str, object] | None = None) -> list[str]:
        """A1111's infotext for each image of ``inputs`` (the pipeline is its only author)."""
        return generation_infotexts(self, inputs, extra)

    def _interrupted(self, inputs, latents, extra_infotext, steps_done: int) -> GenerationInterrupted:
        """The error a stopped generation raises, with the images of its last finished step."""
        if steps_done:
            result = self.postprocess(inputs, latents, extra_infotext, steps_done)
        else:
            result = GenerationResult([], [], [])
        result.partial = True
        return GenerationInterrupted("generation was interrupted", result)

    # -- VAE and safety checker

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        decoded = decode_with_fallback(self.vae, latents / self.vae.config.scaling_factor)
        return (decoded / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()

    def encode_image(self, image: Image.Image, width: int, height: int) -> torch.Tensor:
        pixels = to_tensor(image.convert("RGB").resize((width, height), Image.LANCZOS))
        pixels = pixels.to(device=self.device, dtype=self.vae.dtype) * 2 - 1
        # The posterior mean, not a sample: strength 0 then returns exactly the VAE round trip.
        latents = self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor
        return latents.to(self.dtype)  # a VAE upcast to float32 after NaNs still feeds a half-precision UNet

    def _check_safety(self, images: list[Image.Image]) -> tuple[list[Image.Image], list[bool]]:
        clip_input = self.feature_extractor(images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        arrays = np.stack([np.asarray(img, dtype=np.float32) / 255 for img in images])
        checked, flags = self.safety_checker(images=arrays, clip_input=clip_input)
        out = [to_pil(a[None])[0] if f else img for img, a, f in zip(images, checked, flags)]
        return out, [bool(f) for f in flags]
