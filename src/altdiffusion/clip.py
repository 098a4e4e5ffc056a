"""The user-facing AltCLIP: text and image embeddings, similarity, zero-shot classification."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from altdiffusion.devices import select_device, select_dtype
from altdiffusion.errors import InvalidInputError
from altdiffusion.hub import KNOWN_CHECKPOINTS, resolve_model
from altdiffusion.models.altclip import AltCLIP
from altdiffusion.models.loading import load_altclip
from altdiffusion.models.tokenizer import load_tokenizer
from altdiffusion.pipelines.components import load_image_processor
from altdiffusion.prompts.templates import guess_language, templates_for


class CLIP:
    """An AltCLIP model with its tokenizer and image preprocessing."""

    def __init__(self, model: AltCLIP, tokenizer, image_processor, *, name: str = "", languages: tuple[str, ...] = ()):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.name = name
        self.languages = languages

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        limit = min(self.tokenizer.model_max_length, self.model.text_model.config.max_position_embeddings - 2)
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        return {"input_ids": batch.input_ids.to(self.device), "attention_mask": batch.attention_mask.to(self.device)}

    @torch.no_grad()
    def embed_text(self, texts: str | Sequence[str], normalize: bool = True) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        emb = self.model.encode_text(**self.tokenize(texts)).float()
        return F.normalize(emb, dim=-1) if normalize else emb

    def preprocess(self, images: Image.Image | Sequence[Image.Image]) -> torch.Tensor:
        images = [images] if isinstance(images, Image.Image) else list(images)
        pixels = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt").pixel_values
        return pixels.to(self.device, self.dtype)

    @torch.no_grad()
    def embed_image(self, images: Image.Image | Sequence[Image.Image], normalize: bool = True) -> torch.Tensor:
        emb = self.model.encode_image(self.preprocess(images)).float()
        return F.normalize(emb, dim=-1) if normalize else emb

    def similarity(self, images, texts) -> torch.Tensor:
        """Cosine similarity, (n_images, n_texts)."""
        return self.embed_image(images) @ self.embed_text(texts).t()

    @torch.no_grad()
    def classify(
        self,
        image: Image.Image,
        labels: Sequence[str],
        *,
        language: str | None = None,
        templates: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Labels ranked by probability (CLIP zero-shot: mean of template embeddings per label)."""
        labels = [label.strip() for label in labels if label.strip()]
        if len(labels) < 2:
            raise InvalidInputError('give at least two labels to choose between, e.g. --labels "猫,狗,汽车"')
        if templates is None:
            templates = templates_for(language or guess_language("".join(labels)))
        for template in templates:
            if "{}" not in template:
                raise InvalidInputError(f"template {template!r} has no '{{}}' where the label goes")
        label_embs = []
        for label in labels:
            emb = self.embed_text([t.format(label) for t in templates]).mean(0)
            label_embs.append(F.normalize(emb, dim=-1))
        text = torch.stack(label_embs)
        logits = self.model.logit_scale.exp().float() * self.embed_image(image) @ text.t()
        probs = logits.softmax(-1)[0].tolist()
        return sorted(zip(labels, probs), key=lambda x: -x[1])


def load_clip(name_or_path: str | Path, device=None, dtype=None) -> CLIP:
    """An AltCLIP from a hub id (BAAI/AltCLIP, -m9, -m18), a local folder, or ``"mini"``."""
    folder = resolve_model(name_or_path, kind="clip")
    model = load_altclip(folder)
    tokenizer = load_tokenizer(folder)
    processor = load_image_processor(folder)
    device = select_device(device)
    model.to(device=device, dtype=select_dtype(device, dtype))
    known = KNOWN_CHECKPOINTS.get(str(name_or_path))
    return CLIP(
        model,
        tokenizer,
        processor,
        name=str(name_or_path).split("/")[-1] if known else folder.name,
        languages=known.languages if known else (),
    )
