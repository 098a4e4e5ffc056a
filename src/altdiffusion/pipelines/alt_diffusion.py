"""AltDiffusion: Stable Diffusion conditioned on AltCLIP's multilingual text tower.

One prompt's path to pixels:

    prompt --tokenize_prompt--> chunks of <s> + 75 tokens + </s>  (A1111 emphasis, BREAK, commas)
           --text_encoder.conditioning--> (chunks, 77, D) --emphasis weights--> (1, 77*chunks, D)
    noise  --scheduler + UNet, classifier-free guidance over [negative, positive]--> latents
           --VAE decode--> pixels --(safety checker, optional)--> PIL image + A1111 infotext

Image-to-image starts from the noised VAE latents of an init image (``strength`` of the
schedule); inpainting blends the init latents back outside the mask after every step and
pastes the original pixels outside the (blurred) mask at the end, as A1111 does with a
normal (non-inpainting) UNet.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from altdiffusion import __version__
from altdiffusion.devices import select_device, select_dtype
from altdiffusion.errors import AltDiffusionError, InvalidInputError
from altdiffusion.hub import KNOWN_CHECKPOINTS, resolve_model
from altdiffusion.pipelines.components import load_components
from altdiffusion.pipelines.infotext import format_infotext
from altdiffusion.pipelines.samplers import canonical_sampler_name, make_scheduler, sampler_name_for
from altdiffusion.prompts.chunking import PromptChunk, apply_original_weighting, empty_chunk, tokenize_prompt

MAX_SEED = 2**32 - 1


class GenerationInterrupted(AltDiffusionError):
    """Raised between steps when ``should_stop`` returns True."""


@dataclass
class GenerationResult:
    images: list[Image.Image]
    infotexts: list[str]
    seeds: list[int]
    nsfw: list[bool] = field(default_factory=list)


class AltDiffusionPipeline:
    """Named components (as diffusers): tokenizer, text_encoder, unet, vae, scheduler,
    safety_checker, feature_extractor. Build with :func:`load_pipeline` or ``from_pretrained``."""

    def __init__(
        self,
        *,
        tokenizer,
        text_encoder,
        unet,
        vae,
        scheduler,
        safety_checker=None,
        feature_extractor=None,
        name: str = "",
        folder: Path | None = None,
        languages: tuple[str, ...] = (),
    ):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler
        self.safety_checker = safety_checker
        self.feature_extractor = feature_extractor
        self.name = name
        self.folder = folder
        self.languages = languages
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self._model_hash: str | None = None

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(cls, name_or_path, *, device=None, dtype=None, safety_checker: bool = True):
        folder = resolve_model(name_or_path, kind="diffusion")
        c = load_components(folder, safety_checker=safety_checker)
        _fix_legacy_sample_size(c.unet)
        meta = c.model_index.get("_altdiffusion", {})
        known = KNOWN_CHECKPOINTS.get(str(name_or_path))
        languages = tuple(known.languages if known else meta.get("languages", ()))
        name = meta.get("name") or (str(name_or_path).split("/")[-1] if known else folder.name)
        pipe = cls(
            tokenizer=c.tokenizer,
            text_encoder=c.text_encoder,
            unet=c.unet,
            vae=c.vae,
            scheduler=c.scheduler,
            safety_checker=c.safety_checker,
            feature_extractor=c.feature_extractor,
            name=name,
            folder=folder,
            languages=languages,
        )
        return pipe.to(device, dtype)

    def to(self, device=None, dtype=None) -> AltDiffusionPipeline:
        device = select_device(device)
        dtype = select_dtype(device, dtype)
        for module in self.modules().values():
            if module.dtype != dtype or module.device != device:  # a no-op cast still logs in diffusers
                module.to(device=device, dtype=dtype)
        return self

    def modules(self) -> dict[str, torch.nn.Module]:
        found = {"text_encoder": self.text_encoder, "unet": self.unet, "vae": self.vae}
        if self.safety_checker is not None:
            found["safety_checker"] = self.safety_checker
        return found

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def conditioning(self) -> str:
        """Which text-encoder output path conditions the UNet."""
        return {
            "m18": "penultimate layer + pre_LN + transformation_pre (m18)",
            "sd": "CLIP text tower, last layer (Stable Diffusion 1.x)",
        }.get(self.text_encoder.head, "last layer + transformation (m2/m9)")

    @property
    def default_size(self) -> int:
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0]) * self.vae_scale_factor

    @property
    def model_hash(self) -> str:
        """A1111-style short hash (sha256[:10]) of the UNet weights, computed once."""
        if self._model_hash is None:
            files = sorted(self.folder.glob("unet/diffusion_pytorch_model*")) if self.folder else []
            digest = hashlib.sha256()
            for path in files:
                with open(path, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(block)
            self._model_hash = digest.hexdigest()[:10]
        return self._model_hash

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write a folder our loader (and diffusers' component loaders) reopen; safetensors only.

        The layout is the published one (diffusers 0.8's ``model_index.json`` names the text
        encoder ``alt_diffusion.RobertaSeriesModelWithTransformation``), plus our metadata.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index = {
            "_class_name": "AltDiffusionPipeline",
            "_diffusers_version": _diffusers_version(),
            "_altdiffusion": {"version": __version__, "name": self.name, "languages": list(self.languages)},
            "scheduler": ["diffusers", type(self.scheduler).__name__],
            "text_encoder": ["alt_diffusion", "RobertaSeriesModelWithTransformation"],
            "tokenizer": ["transformers", type(self.tokenizer).__name__],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"]
            if self.safety_checker
            else [None, None],
            "feature_extractor": ["transformers", "CLIPImageProcessor"] if self.feature_extractor else [None, None],
        }
        te = folder / "text_encoder"
        te.mkdir(exist_ok=True)
        if self.text_encoder.head == "sd":  # a Stable Diffusion 1.x folder, as diffusers writes it
            index.update(_class_name="StableDiffusionPipeline", text_encoder=["transformers", "CLIPTextModel"])
            self.text_encoder.save_pretrained(te)
        else:
            self._save_alt_text_encoder(te)
        self.tokenizer.save_pretrained(str(folder / "tokenizer"))
        self.unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
        self.vae.save_pretrained(str(folder / "vae"), safe_serialization=True)
        self.scheduler.save_pretrained(str(folder / "scheduler"))
        if self.safety_checker is not None:
            self.safety_checker.save_pretrained(str(folder / "safety_checker"), safe_serialization=True)
        if self.feature_extractor is not None:
            self.feature_extractor.save_pretrained(str(folder / "feature_extractor"))
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        return folder

    def _save_alt_text_encoder(self, te: Path) -> None:
        """The published ``RobertaSeriesModelWithTransformation`` layout (config + weights)."""
        from altdiffusion.models.weights import save_safetensors

        config = self.text_encoder.config.to_dict()
        config.update(architectures=["RobertaSeriesModelWithTransformation"], model_type="xlm-roberta")
        if self.text_encoder.head == "m18":
            config["has_pre_transformation"] = True
        (te / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        save_safetensors(self.text_encoder.state_dict(), te / "model.safetensors")

    def load_lora(self, path: str | Path, scale: float = 1.0) -> dict:
        """Merge a LoRA (kohya or diffusers ``.safetensors``) into the weights; see pipelines/lora.py."""
        from altdiffusion.pipelines.lora import load_lora

        return load_lora(self, path, scale)

    def unload_lora(self) -> None:
        """Restore the weights every loaded LoRA changed, exactly."""
        from altdiffusion.pipelines.lora import unload_loras

        unload_loras(self)

    # ------------------------------------------------------------------ prompts

    def prompt_chunks(self, prompt: str) -> list[PromptChunk]:
        return tokenize_prompt(prompt, self.tokenizer)

    @torch.no_grad()
    def encode_chunks(self, batches: list[list[PromptChunk]]) -> torch.Tensor:
        """Conditioning for several prompts' chunks, padded to one chunk count: (B, 77*N, D)."""
        n = max(len(chunks) for chunks in batches)
        flat = [c for chunks in batches for c in chunks + [empty_chunk(self.tokenizer)] * (n - len(chunks))]
        device = self.text_encoder.device
        ids = torch.tensor([c.input_ids for c in flat], device=device)
        mask = torch.tensor([c.attention_mask for c in flat], device=device)
        weights = torch.tensor([c.weights for c in flat], device=device)
        use_mask = getattr(self.text_encoder.config, "use_attention_mask", True)
        hidden = self.text_encoder.conditioning(ids, mask if use_mask else None)
        hidden = apply_original_weighting(hidden, weights)
        return hidden.reshape(len(batches), n * hidden.shape[1], hidden.shape[2])

    def encode_prompt(self, prompt: str | list[str], negative_prompt: str | list[str] | None = None):
        """(positive, negative) conditioning, both (B, 77*N, D) with the same N.

        Prompts longer than 75 tokens become several 77-token chunks (A1111), so nothing is
        truncated; the negative prompt is padded with empty chunks to the same count.
        """
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = negative_prompt if isinstance(negative_prompt, list) else [negative_prompt or ""] * len(prompts)
        if len(negatives) != len(prompts):
            raise InvalidInputError(
                f"{len(prompts)} prompts but {len(negatives)} negative prompts; give one per prompt"
            )
        chunks = [self.prompt_chunks(p) for p in prompts + negatives]
        both = self.encode_chunks(chunks)
        return both[: len(prompts)], both[len(prompts) :]

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = "",
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        num_images_per_prompt: int = 1,
        image: Image.Image | None = None,
        strength: float = 0.75,
        mask_image: Image.Image | None = None,
        mask_blur: int = 4,
        sampler: str | None = None,
        eta: float = 0.0,
        output_type: str = "pil",
        progress: bool = True,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = negative_prompt if isinstance(negative_prompt, list) else [negative_prompt or ""] * len(prompts)
        if image is not None and (height is None or width is None):
            w, h = image.size
            width, height = width or w - w % 8, height or h - h % 8
        height = height or self.default_size
        width = width or self.default_size
        _validate(
            num_inference_steps,
            guidance_scale,
            height,
            width,
            num_images_per_prompt,
            strength,
            image,
            mask_image,
            len(prompts),
        )
        sampler_name = canonical_sampler_name(sampler) if sampler else sampler_name_for(self.scheduler)
        scheduler = (
            make_scheduler(sampler, self.scheduler.config)
            if sampler
            else type(self.scheduler).from_config(self.scheduler.config)
        )

        batch = len(prompts) * num_images_per_prompt
        all_prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        all_negatives = [n for n in negatives for _ in range(num_images_per_prompt)]
        if seed is None or seed < 0:
            seed = random.randint(0, MAX_SEED) if generator is None else int(generator.initial_seed())
        seeds = [(seed + i) % (MAX_SEED + 1) for i in range(batch)]

        if "noise_sampler_seed" in scheduler.config:  # DPM++ SDE draws its own noise: one seed per image
            scheduler = type(scheduler).from_config(scheduler.config, noise_sampler_seed=list(seeds))

        device, dtype = self.device, self.dtype
        cond, uncond = self.encode_prompt(all_prompts, all_negatives)
        use_cfg = guidance_scale > 1.0
        embeds = torch.cat([uncond, cond]) if use_cfg else cond

        # Noise: one draw per image from its own seed (A1111: image i of a batch equals a
        # single run with seed+i), or one draw from a caller's generator (diffusers).
        shape = (batch, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if generator is None:
            generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
            noise = torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generators])
            generator = generators if batch > 1 else generators[0]  # step noise of ancestral samplers, per image
        else:
            noise = torch.randn(shape, generator=generator, device=generator.device)
        noise = noise.to(device=device, dtype=dtype)

        scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = scheduler.timesteps
        init_latents = mask = None
        if image is None:
            latents = noise * scheduler.init_noise_sigma
        else:
            init_latents = self._encode_image(image, width, height).expand(batch, -1, -1, -1)
            keep = min(int(num_inference_steps * strength), num_inference_steps)
            start = max(num_inference_steps - keep, 0) * scheduler.order
            # PLMS has steps+1 timesteps: strength 0 must still run none.
            timesteps = timesteps[start:] if keep > 0 else timesteps[:0]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(start)
            latents = (
                scheduler.add_noise(init_latents, noise, timesteps[:1].repeat(batch))
                if len(timesteps)
                else init_latents
            )
            if mask_image is not None:
                mask = self._latent_mask(mask_image, width, height).to(device=device, dtype=dtype)

        step_kwargs = _step_kwargs(scheduler, generator, eta)
        bar = _progress(len(timesteps), progress)
        for i, t in enumerate(timesteps):
            if should_stop is not None and should_stop():
                raise GenerationInterrupted("generation was interrupted")
            model_input = torch.cat([latents] * 2) if use_cfg else latents
            model_input = scheduler.scale_model_input(model_input, t)
            noise_pred = self.unet(model_input, t, encoder_hidden_states=embeds).sample
            if use_cfg:
                noise_uncond, noise_text = noise_pred.chunk(2)
                noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)
            latents = scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
            if mask is not None:
                # Outside the mask, replace the sample by the init image noised to the next level.
                known = init_latents
                if i < len(timesteps) - 1:
                    known = scheduler.add_noise(init_latents, noise, timesteps[i + 1 : i + 2].repeat(batch))
                latents = (1 - mask) * known + mask * latents
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(i + 1, len(timesteps), latents)
        if bar is not None:
            bar.close()

        pixels = self.decode_latents(latents)  # (B, H, W, 3) float in [0, 1]
        if output_type == "np":
            return pixels
        images = [Image.fromarray((p * 255).round().astype("uint8")) for p in pixels]
        if mask_image is not None:
            images = [_overlay(img, image, mask_image, mask_blur, width, height) for img in images]
        nsfw = [False] * len(images)
        if self.safety_checker is not None:
            images, nsfw = self._check_safety(images)

        params = {
            "Steps": num_inference_steps,
            "Sampler": sampler_name,
            "CFG scale": guidance_scale,
            "Seed": None,
            "Size": f"{width}x{height}",
            "Model hash": self.model_hash,
            "Model": self.name or None,
            "Denoising strength": strength if image is not None else None,
            "Mask blur": mask_blur if mask_image is not None else None,
            "Version": f"altdiffusion {__version__}",
        }
        infotexts = [format_infotext(p, n, {**params, "Seed": s}) for p, n, s in zip(all_prompts, all_negatives, seeds)]
        return GenerationResult(images=images, infotexts=infotexts, seeds=seeds, nsfw=nsfw)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        scaled = latents / self.vae.config.scaling_factor
        decoded = self.vae.decode(scaled.to(self.vae.dtype)).sample
        return (decoded / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()

    def _encode_image(self, image: Image.Image, width: int, height: int) -> torch.Tensor:
        pixels = _to_tensor(image.convert("RGB").resize((width, height), Image.LANCZOS))
        pixels = pixels.to(device=self.device, dtype=self.vae.dtype) * 2 - 1
        # The posterior mean, not a sample: strength 0 then returns exactly the VAE round trip.
        return self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor

    def _latent_mask(self, mask_image: Image.Image, width: int, height: int) -> torch.Tensor:
        mask = mask_image.convert("L").resize(
            (width // self.vae_scale_factor, height // self.vae_scale_factor), Image.BOX
        )
        return (_to_tensor(mask) > 0.5).float()  # white = repaint

    def _check_safety(self, images: list[Image.Image]) -> tuple[list[Image.Image], list[bool]]:
        clip_input = self.feature_extractor(images, return_tensors="pt").pixel_values.to(self.device, self.dtype)
        arrays = np.stack([np.asarray(img, dtype=np.float32) / 255 for img in images])
        checked, flags = self.safety_checker(images=arrays, clip_input=clip_input)
        out = [
            Image.fromarray((a * 255).round().astype("uint8")) if f else img
            for img, a, f in zip(images, checked, flags)
        ]
        return out, [bool(f) for f in flags]


def _fix_legacy_sample_size(unet) -> None:
    """diffusers < 0.9 wrote ``sample_size: 32`` for 512-px models; fix it once at load (as
    diffusers' own pipelines do), so the default size survives a save with a newer version."""
    size = unet.config.sample_size
    version = str(unet.config.get("_diffusers_version", "0.0.0"))
    if isinstance(size, int) and size < 64 and tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) < (0, 9):
        unet.register_to_config(sample_size=64)


def _validate(steps, guidance, height, width, per_prompt, strength, image, mask_image, n_prompts) -> None:
    if not isinstance(steps, int) or steps <= 0:
        raise InvalidInputError(f"steps must be a positive whole number, got {steps!r}")
    if not isinstance(guidance, (int, float)) or not math.isfinite(guidance):
        raise InvalidInputError(f"guidance (CFG scale) must be a finite number, got {guidance!r}")
    for label, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or value <= 0 or value % 8:
            raise InvalidInputError(
                f"{label} must be a positive multiple of 8, got {value!r}; try {max(8, int(value) // 8 * 8) if isinstance(value, int) else 512}"
            )
    if not isinstance(per_prompt, int) or per_prompt <= 0:
        raise InvalidInputError(f"images per prompt (batch) must be a positive whole number, got {per_prompt!r}")
    if n_prompts == 0:
        raise InvalidInputError("no prompt given; pass a prompt (an empty string is allowed)")
    if image is not None and not (isinstance(strength, (int, float)) and 0.0 <= strength <= 1.0):
        raise InvalidInputError(f"strength (denoising strength) must be between 0 and 1, got {strength!r}")
    if mask_image is not None:
        if image is None:
            raise InvalidInputError("a mask needs an init image to inpaint; pass --init-image as well")
        if mask_image.size != image.size:
            raise InvalidInputError(
                f"the mask is {mask_image.size[0]}x{mask_image.size[1]} but the init image is {image.size[0]}x{image.size[1]}; they must be the same size"
            )


def _step_kwargs(scheduler, generator, eta) -> dict:
    import inspect

    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def _overlay(
    generated: Image.Image, init: Image.Image, mask_image: Image.Image, blur: int, width: int, height: int
) -> Image.Image:
    """Paste the original pixels back outside the (blurred) mask, as A1111 does."""
    mask = mask_image.convert("L").resize((width, height), Image.NEAREST)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return Image.composite(generated, init.convert("RGB").resize((width, height), Image.LANCZOS), mask)


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="denoising", unit="step", leave=False)


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def load_pipeline(name_or_path, device=None, dtype=None, *, safety_checker: bool = True) -> AltDiffusionPipeline:
    """An AltDiffusion pipeline from a hub id, a local folder, or ``"mini"`` (bundled)."""
    return AltDiffusionPipeline.from_pretrained(name_or_path, device=device, dtype=dtype, safety_checker=safety_checker)
