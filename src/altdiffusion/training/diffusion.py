"""AltDiffusion training: retrain a Stable Diffusion UNet to follow the AltCLIP text tower.

    z0  = scale * vae.encode(x).mean          eps ~ N(0, I) (+ noise_offset * N(0, 1) per channel)
    t   ~ U{0, ..., T-1}                      z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps
    c   = text_encoder(caption), frozen       caption -> "" with probability caption_dropout (CFG)
    loss = w(t) * || unet(z_t, t, c) - target ||^2,   target = eps (or v),
    w(t) = min(SNR(t), gamma) / SNR(t)  (min-SNR weighting; 1 without it; /(SNR+1) terms for v)

Stages (arXiv 2308.09991): ``align`` trains cross-attention only at 256 px — K and V as the
paper describes (``--align-params kv``), or every ``attn2`` parameter, which is what BAAI's code
did in effect (its ``if 'to_k' or 'to_v' in name`` is always true; ``--align-params attn2``);
``quality`` trains the whole UNet at 512 px with caption dropout for classifier-free guidance.
The text encoder is frozen throughout. ``grounding`` adds losses on the cross-attention maps for
samples whose json says where each phrase's thing is (:mod:`altdiffusion.training.grounding`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.training_utils import compute_snr
from PIL import Image

from altdiffusion.errors import InvalidInputError
from altdiffusion.models.assemble import assemble
from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline
from altdiffusion.training.data import (
    RawSample,
    SkipCounter,
    crop_pixels,
    data_source,
    decode_plan,
    micro_batch_plans,
    micro_batch_seed,
)
from altdiffusion.training.grounding import (
    BACKGROUND_STEPS,
    GroundingWeights,
    grounded_caption,
    grounding_losses,
    recorded_attention,
)
from altdiffusion.training.params import TrainSettings
from altdiffusion.training.prefetch import PlannedBatches
from altdiffusion.training.settings import DiffusionSettings

VALIDATION_PROMPTS = (
    "一只穿着唐装的猫，国画风格",
    "a red lantern hanging from an old Chinese building",
    "un gato rojo en la playa",
    "富士山と桜、浮世絵風",
)

STAGES = {
    "align": {"resolution": 256, "caption_dropout": 0.0},
    "quality": {"resolution": 512, "caption_dropout": 0.1},
    "finetune": {"resolution": 512, "caption_dropout": 0.1},
}


def trainable_names(unet: torch.nn.Module, stage: str, align_params: str = "kv") -> set[str]:
    """Parameter names a stage trains (the rest are frozen)."""
    names = set()
    for name, _ in unet.named_parameters():
        if (
            stage != "align"
            or (align_params == "kv" and (".attn2.to_k." in name or ".attn2.to_v." in name))
            or (align_params == "attn2" and ".attn2." in name)
        ):
            names.add(name)
    if not names:
        raise InvalidInputError(f"stage {stage!r} with --align-params {align_params!r} selects no UNet parameter")
    return names


# ------------------------------------------------------------------------------ the task


class UNetModel(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()

    def forward(self, noisy, timesteps, cond):
        return self.unet(noisy, timesteps, encoder_hidden_states=cond).sample


class DiffusionTask(PlannedBatches):
    name = "diffusion"

    def __init__(
        self,
        pipe: AltDiffusionPipeline,
        data,
        *,
        stage: str = "quality",
        align_params: str = "kv",
        resolution: int | None = None,
        caption_dropout: float | None = None,
        noise_offset: float = 0.0,
        min_snr_gamma: float | None = None,
        ema_decay: float | None = None,
        seed: int = 0,
        languages=None,
        validate_every: int = 0,
        validation_prompts=VALIDATION_PROMPTS,
        output_dir: Path | None = None,
        cache_latents: bool = False,
        grounding: GroundingWeights | None = None,
    ):
        from diffusers import DDPMScheduler

        if stage not in STAGES:
            raise InvalidInputError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")
        preset = STAGES[stage]
        self.pipe = pipe
        self.resolution = resolution or preset["resolution"]
        if self.resolution % 8:
            raise InvalidInputError(f"--resolution must be a multiple of 8, got {self.resolution}")
        self.caption_dropout = preset["caption_dropout"] if caption_dropout is None else caption_dropout
        self.noise_offset, self.min_snr_gamma, self.seed = noise_offset, min_snr_gamma, seed
        self.languages, self.validate_every = languages, validate_every
        self.validation_prompts, self.output_dir = list(validation_prompts), output_dir
        self.source = data_source(data) if not isinstance(data, Path) else data
        self.skipped = SkipCounter()
        # Frozen VAE, deterministic crops: each image's latents never change, so encode it once.
        self.latent_cache: dict[bytes, torch.Tensor] | None = {} if cache_latents else None
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction = self.noise_scheduler.config.prediction_type
        self.grounding = grounding or GroundingWeights()
        if self.grounding.on and not getattr(pipe.tokenizer, "is_fast", False):
            raise InvalidInputError(
                "grounding needs a fast tokenizer (its character offsets find each phrase's tokens)"
            )
        self.background_latents: dict[tuple, torch.Tensor] = {}  # the background pass's inputs, per colour
        self.captions_seen = self.captions_grounded = 0  # with grounding on: captions read, and with grounding

        unet = pipe.unet
        self.trained = trainable_names(unet, stage, align_params)
        for name, p in unet.named_parameters():
            p.requires_grad_(name in self.trained)
        for frozen in (pipe.vae, pipe.text_encoder):
            frozen.requires_grad_(False).eval()
        self.model = UNetModel(unet)
        self.source_dtype: torch.dtype | None = None  # the UNet's stored dtype (run() reads it), for export
        self.ema = None
        if ema_decay:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel([p for p in unet.parameters() if p.requires_grad], decay=ema_decay)

    # -- data ----------------------------------------------------------------------------------

    def plans(self, start_step, micro, rank, world, grad_accum):
        """This rank's micro-batches from optimizer step ``start_step`` on, images not yet decoded."""
        start = start_step * grad_accum
        return micro_batch_plans(
            self.source, start=start, micro=micro, rank=rank, world=world, seed=self.seed, languages=self.languages
        )

    def prepare(self, plan):
        """((pixels, captions, noise seed), passed-over samples) of ``plan``; with grounding on, the
        batch holds each caption's GroundedCaption too (None where it has none, or was dropped)."""
        decoded = decode_plan(plan)
        noise_seed = micro_batch_seed(self.seed, plan.index, plan.rank)
        rng = random.Random(noise_seed)
        dropped = [rng.random() < self.caption_dropout for _ in decoded.samples]
        captions = ["" if drop else raw.caption for drop, raw in zip(dropped, decoded.samples)]
        batch = torch.stack([crop_pixels(image, self.resolution) for image in decoded.images]), captions, noise_seed
        if self.grounding.on:
            items = zip(dropped, decoded.images, decoded.samples)
            batch += ([None if drop else self.grounded(image, raw) for drop, image, raw in items],)
        return batch, decoded.skipped

    def grounded(self, image, raw: RawSample):
        found = grounded_caption(raw.meta, raw.language, raw.caption, self.pipe, image.size, self.resolution)
        self.captions_seen += 1
        self.captions_grounded += found is not None
        if self.captions_seen == 64 and not self.captions_grounded:  # an option that would silently do nothing
            raise InvalidInputError(
                "grounding losses are on, but none of the first 64 captions has grounding: the samples' json "
                "needs 'regions' with each phrase's span in the caption's language (see "
                "altdiffusion.training.grounding; `altdiffusion mini data` writes them)"
            )
        return found

    # -- loss ----------------------------------------------------------------------------------

    def loss(self, model, batch):
        pixels, captions, noise_seed, *grounded = batch
        device = next(model.parameters()).device
        pipe = self.pipe
        for frozen in (pipe.vae, pipe.text_encoder):  # accelerate places only the trained UNet
            if next(frozen.parameters()).device != device:
                frozen.to(device)
        with torch.no_grad():
            latents = self._latents(pixels, device)
        cond = self.conditioning(model, captions)
        g = torch.Generator().manual_seed(noise_seed)
        noise = torch.randn(latents.shape, generator=g)
        if self.noise_offset:
            noise = noise + self.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=g)
        T = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, T, (latents.shape[0],), generator=g)
        noise, timesteps = noise.to(device, latents.dtype), timesteps.to(device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        target = noise if self.prediction == "epsilon" else self.noise_scheduler.get_velocity(latents, noise, timesteps)
        grounded = grounded[0] if grounded and self.grounding.on else None
        with recorded_attention(self.pipe.unet) if grounded else nullcontext([]) as maps:
            pred = self.predict(model, noisy, timesteps, cond)
        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if self.min_snr_gamma:
            snr = compute_snr(self.noise_scheduler, timesteps)
            weight = torch.clamp(snr, max=self.min_snr_gamma) / (snr if self.prediction == "epsilon" else snr + 1)
            per_sample = per_sample * weight
        loss, metrics = per_sample.mean(), {"skipped": self.skipped.total}
        if grounded:
            extra, grounding_metrics = self.grounding_loss(model, maps, cond, grounded, noise_seed)
            loss, metrics = loss + extra, {**metrics, **grounding_metrics}
        return loss, metrics

    def grounding_loss(self, model, maps, cond, grounded, noise_seed) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted token and pixel losses of the loss's own pass, plus the background pass's."""
        w = self.grounding
        token, pixel = grounding_losses(maps, grounded, self.resolution)
        loss = w.token * token + w.pixel * pixel
        metrics = {"grounded": sum(g is not None for g in grounded) / len(grounded)}
        metrics.update(token_loss=float(token.detach()), pixel_loss=float(pixel.detach()))
        # One-thing samples too: on the background alone only their position words can place them
        # (with two-thing samples only, the mini world's one-thing accuracy fell: README mini section).
        chosen = [i for i, g in enumerate(grounded) if g is not None and g.background]
        if w.background and chosen:
            with recorded_attention(self.pipe.unet) as background_maps:
                self.background_prediction(model, cond[chosen], [grounded[i].background for i in chosen], noise_seed)
            token, pixel = grounding_losses(background_maps, [grounded[i] for i in chosen], self.resolution)
            loss = loss + w.background * (w.token * token + w.pixel * pixel)
            metrics.update(background_token_loss=float(token.detach()), background_pixel_loss=float(pixel.detach()))
        return loss, metrics

    def background_prediction(self, model, cond, colours, noise_seed: int) -> torch.Tensor:
        """The UNet's prediction for each background colour alone, noised to t in BACKGROUND_STEPS."""
        latents = torch.stack([self.background_latent(tuple(colour)) for colour in colours]).to(cond.device)
        g = torch.Generator().manual_seed(noise_seed + 1)  # apart from the diffusion loss's draws
        timesteps = torch.randint(*BACKGROUND_STEPS, (len(colours),), generator=g)
        noise = torch.randn(latents.shape, generator=g).to(latents)
        timesteps = timesteps.to(cond.device)
        return self.predict(model, self.noise_scheduler.add_noise(latents, noise, timesteps), timesteps, cond)

    def background_latent(self, colour: tuple) -> torch.Tensor:
        if colour not in self.background_latents:
            plain = Image.new("RGB", (self.resolution,) * 2, colour)
            with torch.no_grad():
                self.background_latents[colour] = self._latents(crop_pixels(plain, self.resolution)[None], "cpu")[0]
        return self.background_latents[colour]

    def conditioning(self, model, captions: list[str]) -> torch.Tensor:
        """The frozen text encoder's conditioning; training captions take one 77-token chunk."""
        with torch.no_grad():
            return self.pipe.encode_chunks([self.pipe.prompt_chunks(c)[:1] for c in captions])

    def predict(self, model, noisy, timesteps, cond) -> torch.Tensor:
        """The UNet's prediction (``model`` wraps the UNet being trained)."""
        return model(noisy, timesteps, cond)

    def _latents(self, pixels: torch.Tensor, device) -> torch.Tensor:
        """VAE posterior means (deterministic) of the CPU ``pixels``, on ``device``; from the cache
        when ``cache_latents`` is on (keyed by the CPU bytes: no GPU -> CPU copy per image)."""
        vae = self.pipe.vae
        encode = lambda x: vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mode() * vae.config.scaling_factor  # noqa: E731
        if self.latent_cache is None:
            return encode(pixels).to(device)
        keys = [hashlib.sha1(image.numpy().tobytes()).digest() for image in pixels]
        missing = {key: index for index, key in enumerate(keys) if key not in self.latent_cache}
        if missing:  # one VAE call for the batch's new images: 2.8x faster than one call each
            for key, latent in zip(missing, encode(pixels[list(missing.values())])):
                self.latent_cache[key] = latent.cpu()
        return torch.stack([self.latent_cache[key] for key in keys]).to(device)

    # -- hooks ---------------------------------------------------------------------------------

    def checkpoint_objects(self):
        return [self.ema] if self.ema is not None else []

    def on_step_end(self, model, step: int, is_main: bool) -> None:
        if self.ema is not None:
            params = [p for p in model.unet.parameters() if p.requires_grad]
            shadow = self.ema.shadow_params[0]
            if (shadow.device, shadow.dtype) != (params[0].device, params[0].dtype):
                # The copy was made before accelerate moved the UNet to the GPU ("cuda:0 and cpu!")
                # and before the loop made float32 master weights of a float16 checkpoint.
                self.ema.to(device=params[0].device, dtype=params[0].dtype)
            self.ema.step(params)
        if is_main and self.validate_every and step % self.validate_every == 0 and self.output_dir is not None:
            self.validation_images(step)

    def validation_images(self, step: int) -> Path:
        """A row of images for fixed prompts in several languages, fixed seed, saved as one PNG."""
        was_training = self.pipe.unet.training
        self.pipe.unet.eval()
        size = min(self.resolution, 256)
        result = self.pipe(
            self.validation_prompts,
            num_inference_steps=20,
            guidance_scale=7.5,
            seed=1234,
            height=size,
            width=size,
            progress=False,
        )
        self.pipe.unet.train(was_training)
        grid = Image.new("RGB", (size * len(result.images), size))
        for i, image in enumerate(result.images):
            grid.paste(image, (i * size, 0))
        folder = self.output_dir / "validation"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{step:07d}.png"
        grid.save(path)
        (folder / "prompts.json").write_text(json.dumps(self.validation_prompts, ensure_ascii=False, indent=2) + "\n")
        return path

    def export(self, model, folder: Path) -> None:
        unet = model.unet
        if self.ema is not None:
            unet = copy.deepcopy(unet)
            self.ema.copy_to([p for p in unet.parameters() if p.requires_grad])
        self.pipe.unet = unet
        self.pipe.save_pretrained(folder)
        (folder / "data_report.json").write_text(json.dumps({"skipped": self.skipped.counts}, indent=2) + "\n")


# ------------------------------------------------------------------------------ commands


def run(settings: DiffusionSettings, training: TrainSettings) -> Path:
    """Diffusion training or fine-tuning from ``settings`` under the loop's ``training`` settings;
    the exported pipeline folder."""
    from altdiffusion.training.loop import train

    pipe = assemble(settings.base, settings.text_encoder, settings.conditioning)
    task = DiffusionTask(
        pipe,
        settings.data,
        stage=settings.stage,
        align_params=settings.align_params,
        resolution=settings.resolution,
        caption_dropout=settings.caption_dropout,
        noise_offset=settings.noise_offset,
        min_snr_gamma=settings.min_snr_gamma,
        ema_decay=settings.ema_decay,
        seed=training.seed,
        languages=settings.languages,
        validate_every=settings.validate_every,
        output_dir=training.output_dir,
        cache_latents=settings.cache_latents,
        grounding=GroundingWeights(settings.grounding_token, settings.grounding_pixel, settings.grounding_background),
    )
    if task.grounding.on and training.gradient_checkpointing:
        # The loss reads the attention maps of the forward pass; checkpointing recomputes it without them.
        raise InvalidInputError("--grounding-* losses cannot run with --gradient-checkpointing; drop one of them")
    task.source_dtype = unet_stored_dtype(settings.base)
    return train(task, training)


def unet_stored_dtype(base) -> torch.dtype | None:
    """The dtype of the UNet weights on disk: the pipeline loads them as float32 to train."""
    from altdiffusion.hub import resolve_model
    from altdiffusion.training.precision import stored_dtype

    source = resolve_model(base, kind="diffusion")
    return stored_dtype(source if source.is_file() else source / "unet")
