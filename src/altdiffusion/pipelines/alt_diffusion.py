"""AltDiffusion: Stable Diffusion conditioned on AltCLIP's multilingual text tower.

One prompt's path to pixels (the steps of :meth:`AltDiffusionPipeline.__call__`):

    check inputs     prompts, sizes, seeds (image i of a batch: seed + i), sampler names
    encode prompt    chunks of <s> + 75 tokens + </s> (A1111 emphasis, BREAK, commas)
                     --text_encoder.conditioning--> (1, 77*chunks, D)
    timesteps        the sampler's schedule, cut by ``strength`` for image-to-image
    latents          one noise draw per image from its seed (or the init image, noised)
    denoise          scheduler + UNet, classifier-free guidance over [negative, positive]
    hires pass       (hires fix) upscale, new noise at the target size, a second image-to-image denoise
    decode           VAE -> pixels -> (inpainting overlay, safety checker) -> PIL + A1111 infotext

Image-to-image starts from the noised VAE latents of an init image (``strength`` of the
schedule); inpainting blends the init latents back outside the mask after every step and
pastes the original pixels outside the (blurred) mask at the end, as A1111 does with a
normal (non-inpainting) UNet.

The steps after ``check_inputs`` are methods of :class:`~altdiffusion.pipelines.steps.GenerationSteps`
(pipelines/steps.py); this module holds the components, loading and the call that names them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from altdiffusion.devices import select_device, select_generation_dtype
from altdiffusion.errors import InvalidInputError
from altdiffusion.hub import KNOWN_CHECKPOINTS, resolve_model
from altdiffusion.pipelines.components import cast_module, load_components
from altdiffusion.pipelines.conditioning import encode_chunks
from altdiffusion.pipelines.defaults import ModelDefaults, model_defaults
from altdiffusion.pipelines.denoising import shifted_callback
from altdiffusion.pipelines.hires import HiresFix
from altdiffusion.pipelines.inputs import call_args, check_inputs
from altdiffusion.pipelines.loaders import PipelineLoaders
from altdiffusion.pipelines.lora import MergedLoras
from altdiffusion.pipelines.memory import MemoryMode
from altdiffusion.pipelines.preview import LatentToRGB, latent_to_rgb_for
from altdiffusion.pipelines.results import GenerationInterrupted, GenerationResult
from altdiffusion.pipelines.seeds import MAX_SEED
from altdiffusion.pipelines.steps import GenerationSteps
from altdiffusion.prompts.chunking import PromptChunk, empty_chunk, tokenize_prompt
from altdiffusion.prompts.embeddings import EmbeddingDatabase

__all__ = [
    "MAX_SEED",
    "AltDiffusionPipeline",
    "GenerationInterrupted",
    "GenerationResult",
    "HiresFix",
    "load_pipeline",
]


class AltDiffusionPipeline(PipelineLoaders, GenerationSteps):
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
        recommended: Mapping[str, object] | None = None,
    ):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler
        self.safety_checker = safety_checker
        self.feature_extractor = feature_extractor
        self.name = name  # "Model" in infotexts
        self.folder = folder
        self.languages = languages
        self.recommended = dict(recommended or {})  # settings the builder recorded; see pipelines/defaults.py
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.merged_loras = MergedLoras()
        self.memory = MemoryMode()  # where the weights live; see enable_memory_mode
        self.speed = None  # a pipelines.speed.SpeedMode once enable_speed_mode ran
        self._latent_to_rgb: LatentToRGB | None = None  # the live preview's map, made on first use
        self.embeddings = EmbeddingDatabase()  # textual-inversion triggers; see load_embeddings
        self._model_hash: str | None = None
        self.vae_source = None  # a swapped-in VAE's VaeSource (pipelines/vae.py); None: the model's own
        self._own_vae = vae

    # ------------------------------------------------------------------ loading and saving

    @classmethod
    def from_pretrained(
        cls,
        name_or_path,
        *,
        device=None,
        dtype=None,
        safety_checker: bool = True,
        name: str | None = None,
        config: str | Path | None = None,
    ) -> AltDiffusionPipeline:
        """Load a hub id, a local folder, a single file (A1111 layout) or ``"mini"``; ``name``
        overrides the infotexts' "Model"; ``config`` (a diffusers folder) gives a single file's
        architecture when it is not one of the published ones (see models/single_file.py)."""
        folder = resolve_model(name_or_path, kind="diffusion")
        if folder.is_file():
            from altdiffusion.models.single_file import load_single_file

            # read straight into the target dtype: no second copy of a float16 file loaded as float32
            c = load_single_file(folder, config=config, dtype=select_generation_dtype(select_device(device), dtype))
        else:
            c = load_components(folder, safety_checker=safety_checker)
        meta = c.model_index.get("_altdiffusion", {})
        known = KNOWN_CHECKPOINTS.get(str(name_or_path))
        languages = tuple(known.languages if known else meta.get("languages", ()))
        default_name = meta.get("name") or (
            str(name_or_path).split("/")[-1] if known else (folder.stem if folder.is_file() else folder.name)
        )
        pipe = cls(
            tokenizer=c.tokenizer,
            text_encoder=c.text_encoder,
            unet=c.unet,
            vae=c.vae,
            scheduler=c.scheduler,
            safety_checker=c.safety_checker,
            feature_extractor=c.feature_extractor,
            name=name or default_name,
            folder=folder,
            languages=languages,
            recommended=meta.get("recommended"),
        )
        return pipe.to(device, dtype)

    def to(self, device=None, dtype=None) -> AltDiffusionPipeline:
        if self.memory.offloaded:
            raise InvalidInputError(f"memory mode {self.memory.name!r} places the weights itself; call to() before it")
        device = select_device(device)
        dtype = select_generation_dtype(device, dtype)
        for module in self.modules().values():
            cast_module(module, device, dtype)
        return self

    def modules(self) -> dict[str, torch.nn.Module]:
        found = {"text_encoder": self.text_encoder, "unet": self.unet, "vae": self._own_vae}
        if self.vae is not self._own_vae:
            found["swapped_vae"] = self.vae
        if self.safety_checker is not None:
            found["safety_checker"] = self.safety_checker
        return found

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write a folder in the published layout that :func:`load_pipeline` reopens; see pipelines/saving.py."""
        from altdiffusion.pipelines.saving import save_pipeline

        return save_pipeline(self, folder)

    @property
    def device(self) -> torch.device:
        """Where the pipeline computes (with an offloading memory mode, not where the weights rest)."""
        return self.memory.execution_device or self.unet.device

    @property
    def latent_to_rgb(self) -> LatentToRGB:
        """Cheap latent -> RGB previews for this model's VAE, no decode (pipelines/preview.py)."""
        if self._latent_to_rgb is None:
            self._latent_to_rgb = latent_to_rgb_for(self.vae, self.device)
        return self._latent_to_rgb

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
        """The native height (= width for every published model), from :attr:`defaults`."""
        return self.defaults.height

    @property
    def defaults(self) -> ModelDefaults:
        """Native size, CFG, sampler, steps and example prompts of this model (pipelines/defaults.py)."""
        return model_defaults(self.unet.config.sample_size, self.vae_scale_factor, self.recommended)

    @property
    def model_hash(self) -> str:
        """A1111's short hash (sha256[:10]): of a single file as a whole (cached beside it), of a
        folder's UNet weight files; computed once."""
        if self._model_hash is None:
            from altdiffusion.hashing import model_sha256, sha256_files

            self._model_hash = ((model_sha256(self.folder) if self.folder else None) or sha256_files([]))[:10]
        return self._model_hash

    # ------------------------------------------------------------------ prompts

    def prompt_chunks(self, prompt: str) -> list[PromptChunk]:
        return tokenize_prompt(prompt, self.tokenizer, embeddings=self.embeddings)

    @torch.no_grad()
    def encode_chunks(self, batches: list[list[PromptChunk]]) -> torch.Tensor:
        """Conditioning for several prompts' chunks, padded to one chunk count: (B, 77*N, D)."""
        return encode_chunks(self.text_encoder, batches, empty_chunk(self.tokenizer), device=self.device)

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
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
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
        schedule: str | None = None,
        eta: float = 0.0,
        subseed: int | None = None,
        subseed_strength: float = 0.0,
        seed_resize_from_h: int = 0,
        seed_resize_from_w: int = 0,
        randn_source: str = "CPU",
        hires: HiresFix | None = None,
        extra_infotext: Mapping[str, object] | None = None,
        output_type: str = "pil",
        progress: bool = True,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> GenerationResult | np.ndarray:
        """Generate images from text (or from an init image, optionally inside a mask).

        Args:
            prompt: one or a list; any length (77-token chunks), A1111 emphasis ``(x:1.2)``, ``[x]``,
                ``BREAK``; ``<lora:name:w>`` tags must name a loaded LoRA and stay only in the infotext.
            negative_prompt: one for all prompts, or a list with one per prompt.
            num_inference_steps: sampler steps (image-to-image runs ``strength`` of them); default: the model's.
            guidance_scale: classifier-free guidance (CFG) scale, <= 1 disables it; default: the model's
                (``pipe.defaults``: 3 for the bundled mini model, 7 otherwise).
            height, width: multiples of 8; default: the init image's size, else the model's native size.
            generator: a torch generator for the noise (diffusers' way) instead of per-image seeds.
            seed: the first image's seed (image i gets seed + i, as in A1111); None or -1 picks one.
            num_images_per_prompt: images for each prompt.
            image, strength: the init image (image-to-image, inpainting) and the share of the
                schedule run from it (0 returns it, 1 ignores it).
            mask_image, mask_blur: inpainting mask (init image's size, white = repaint); its blur radius (px).
            sampler: A1111 sampler name ("Euler a", "DPM++ 2M"...); None keeps the checkpoint's.
            schedule: A1111 "Schedule type" ("Karras", "Exponential"...); None: the sampler's own.
            eta: noise scale of DDIM and the ancestral samplers.
            subseed, subseed_strength: A1111's variation seed (image i: subseed + i; None or -1 picks one)
                and how far the noise moves towards it (slerp; 0 off, 1 the subseed's noise).
            seed_resize_from_h, seed_resize_from_w: draw the seed's noise at this size and paste it at
                the centre, so a seed keeps its picture at a new size (0: off).
            randn_source: "CPU" (the same noise on every machine) or "GPU" (A1111's default, on CUDA).
            hires: a :class:`HiresFix` to upscale and run a second image-to-image pass (text-to-image only).
            extra_infotext: more ``Key: value`` pairs for the infotext (written before "Version").
            output_type: "pil" for a :class:`GenerationResult`, "np" for decoded (B, H, W, 3) floats.
            progress, callback: show a progress bar; call ``callback(step, total, latents)`` after each step.
            should_stop: asked before each step; True raises :class:`GenerationInterrupted` (with the images so far).
        """
        inputs = check_inputs(
            **call_args(locals()),
            defaults=self.defaults,
            loras=self.merged_loras.names(),
            scale_factor=self.vae_scale_factor,
        )
        embeds = self.prepare_conditioning(inputs)
        scheduler = self.prepare_scheduler(inputs)
        timesteps = self.prepare_timesteps(scheduler, inputs)
        second = self.prepare_second_pass(inputs)
        latents, inpainting, step_generator = self.prepare_latents(inputs, scheduler, timesteps, generator)
        total = len(timesteps) + (len(second[1]) if second else 0)
        hooks = (progress, shifted_callback(callback, 0, total), should_stop)
        latents, done = self.denoise(inputs, scheduler, timesteps, latents, embeds, step_generator, inpainting, *hooks)
        if second is not None and done == len(timesteps):
            hooks = (progress, shifted_callback(callback, done, total), should_stop)
            latents, more = self.hires_pass(inputs, *second, latents, embeds, *hooks)
            done += more
        if done < total:
            raise self._interrupted(inputs, latents, extra_infotext, done)
        if output_type == "np":
            return self.decode_latents(latents)
        return self.postprocess(inputs, latents, extra_infotext, done)


def load_pipeline(
    name_or_path, device=None, dtype=None, *, safety_checker: bool = True, config: str | Path | None = None
) -> AltDiffusionPipeline:
    """An AltDiffusion pipeline from a hub id, a local folder, a single file, or ``"mini"`` (bundled)."""
    return AltDiffusionPipeline.from_pretrained(
        name_or_path, device=device, dtype=dtype, safety_checker=safety_checker, config=config
    )
