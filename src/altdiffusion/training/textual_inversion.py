"""Textual inversion: learn a new trigger word's vectors from a few images, the model frozen.

    v (n, H)  -- the only trained tensor, started from the token embeddings of --init-text
    caption   = a --prompt template with [name] -> the trigger, [filewords] -> the image's .txt
    cond      = text_encoder(token embeddings with v at the trigger's n positions)   (frozen)
    loss      = the diffusion loss of :class:`~altdiffusion.training.diffusion.DiffusionTask`
                through the frozen UNet; its gradient reaches only v

(Gal et al., arXiv 2208.01618; A1111's "Train > Create embedding": ``--vectors`` is its "Number
of vectors per token", ``--init-text`` its "Initialization text", ``[name]``/``[filewords]`` its
template words.) The result is one A1111 embedding file, ``OUTPUT/model/<name>.safetensors``
(``emb_params``, as kohya writes them) or ``.pt`` (A1111's own ``string_to_param``): put it in an
``--embeddings-dir`` and write the name in a prompt.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch import nn

from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.conditioning import encode_chunks, place_vectors, token_embedding_width
from altdiffusion.prompts.chunking import empty_chunk
from altdiffusion.prompts.embedding_files import Embedding, write_embedding
from altdiffusion.training.data import crop_pixels, micro_batch_seed, micro_batches
from altdiffusion.training.diffusion import DiffusionTask
from altdiffusion.training.dreambooth import image_files
from altdiffusion.training.params import TrainSettings
from altdiffusion.training.settings import TextualInversionSettings


class EmbeddingVectors(nn.Module):
    """The trained vectors; placing them in the token embeddings is its forward (so DDP syncs them)."""

    def __init__(self, name: str, init: torch.Tensor):
        super().__init__()
        self.name = name
        self.vectors = nn.Parameter(init.detach().clone().float())

    def forward(self, token_embeds: torch.Tensor, placements) -> torch.Tensor:
        return place_vectors(token_embeds, placements, {self.name: self.vectors})


def initial_vectors(pipe, init_text: str, count: int) -> torch.Tensor:
    """A1111's start: vector i is the token embedding of init-text token ``i * tokens // count``."""
    token_embedding_width(pipe.text_encoder)  # an XLM-R text encoder, or one clear error
    table = pipe.text_encoder.token_embeddings.weight
    ids = pipe.tokenizer(init_text, add_special_tokens=False).input_ids if init_text else []
    if not ids:
        return torch.zeros(count, table.shape[1])
    embedded = table[torch.tensor(ids, device=table.device)].detach().float().cpu()
    return torch.stack([embedded[i * len(ids) // count] for i in range(count)])


def check_name(name: str) -> str:
    """A trigger word that is also a file stem: letters, digits, ``_``, ``-``, ``.``; not only digits."""
    if not name or name.startswith(".") or not all(ch.isalnum() or ch in "_-." for ch in name) or name.isdigit():
        raise InvalidInputError(
            f"--name {name!r}: use letters, digits, '_', '-' or '.' (it is the trigger word and the file name)"
        )
    return name


class TextualInversionTask(DiffusionTask):
    name = "textual-inversion"
    plans = None  # its batches (``batches``) come from a few image files, read in the training process

    def __init__(
        self,
        pipe,
        images: Path,
        trigger: str,
        *,
        vectors: int = 1,
        init_text: str = "*",
        prompts: tuple[str, ...] = ("[name]",),
        resolution: int = 512,
        noise_offset: float = 0.0,
        seed: int = 0,
        save_format: str = "safetensors",
    ):
        self.trigger = check_name(trigger)
        if vectors < 1 or vectors > 75:
            raise InvalidInputError(f"--vectors must be 1..75 (one 75-token chunk), got {vectors}")
        if not prompts or any("[name]" not in p for p in prompts):
            raise InvalidInputError("every --prompt must contain [name] (where the trigger word goes)")
        self.images = image_files(images, "training image")
        if not self.images:
            raise InvalidInputError(f"{images}: no images (png, jpg, jpeg, webp) found")
        self.prompts, self.save_format = list(prompts), save_format
        self.steps_done = 0  # the embedding file's "step"
        # The fine-tuning task's setup (noise schedule, frozen VAE and text encoder, the loss) on
        # fixed images (their latents encoded once); its data stream is replaced by batches() below.
        super().__init__(
            pipe,
            Path(images),
            stage="finetune",
            resolution=resolution,
            caption_dropout=0.0,
            noise_offset=noise_offset,
            seed=seed,
            cache_latents=True,
        )
        pipe.unet.requires_grad_(False).eval()  # everything but the new vectors is frozen
        self.trained = set()
        self.model = EmbeddingVectors(trigger, initial_vectors(pipe, init_text, vectors))
        pipe.embeddings.add(Embedding(trigger, self.model.vectors.detach()))  # the prompts' trigger

    # -- data ----------------------------------------------------------------------------------

    def caption(self, path: Path, rng: random.Random) -> str:
        words = path.with_suffix(".txt")
        filewords = words.read_text(encoding="utf-8").strip() if words.is_file() else ""
        return rng.choice(self.prompts).replace("[name]", self.trigger).replace("[filewords]", filewords)

    def batches(self, start_step, micro, rank, world, grad_accum):
        kw = dict(start_step=start_step, micro=micro, rank=rank, world=world, grad_accum=grad_accum)
        stream = micro_batches(self.images, seed=self.seed, **kw)
        index = start_step * grad_accum
        while True:
            noise_seed = micro_batch_seed(self.seed, index, rank)
            rng = random.Random(noise_seed)
            paths = next(stream)
            pixels = torch.stack([self._load(p) for p in paths])
            yield pixels, [self.caption(p, rng) for p in paths], noise_seed
            index += 1

    def _load(self, path: Path) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(path) as image:
                return crop_pixels(image.convert("RGB"), self.resolution)
        except (OSError, ValueError) as err:
            raise InvalidInputError(f"{path}: cannot read the image ({err})") from None

    # -- loss: gradients flow through the frozen text encoder and UNet into the vectors --------

    def loss(self, model, batch):
        unet = self.pipe.unet
        device = next(model.parameters()).device
        if next(unet.parameters()).device != device:  # accelerate places only the trained module
            unet.to(device)
        return super().loss(model, batch)

    def conditioning(self, model, captions: list[str]) -> torch.Tensor:
        pipe = self.pipe
        chunks = [pipe.prompt_chunks(c)[:1] for c in captions]
        return encode_chunks(pipe.text_encoder, chunks, empty_chunk(pipe.tokenizer), place=model)

    def predict(self, model, noisy, timesteps, cond) -> torch.Tensor:
        return self.pipe.unet(noisy, timesteps, encoder_hidden_states=cond).sample

    # -- export --------------------------------------------------------------------------------

    def export(self, model, folder: Path) -> None:
        embedding = Embedding(
            self.trigger,
            model.vectors.detach().float().cpu(),
            step=self.steps_done,
            sd_checkpoint=self.pipe.model_hash,
            sd_checkpoint_name=self.pipe.name,
        )
        write_embedding(embedding, Path(folder) / f"{self.trigger}.{self.save_format}")

    def on_step_end(self, model, step: int, is_main: bool) -> None:
        self.steps_done = step


def run(settings: TextualInversionSettings, training: TrainSettings) -> Path:
    """Learn ``settings.name``'s vectors under the loop's ``training`` settings; the exported folder."""
    from accelerate import PartialState

    from altdiffusion.models.assemble import assemble
    from altdiffusion.training.loop import train

    pipe = assemble(settings.base).to(PartialState().device, torch.float32)
    task = TextualInversionTask(
        pipe,
        Path(settings.images),
        settings.name,
        vectors=settings.vectors,
        init_text=settings.init_text,
        prompts=tuple(settings.prompt or ("[name]",)),
        resolution=settings.resolution,
        noise_offset=settings.noise_offset,
        seed=training.seed,
        save_format=settings.save_format,
    )
    return train(task, training)
