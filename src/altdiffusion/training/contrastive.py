"""AltCLIP stage 2, contrastive learning with the image tower frozen (with ``--train-vision
--freeze-text``, the text tower instead).

    t = normalize(text_projection(text tower(caption)))      i = normalize(visual_projection(vit(image)))
    logits = exp(logit_scale) * t @ i^T   over the global batch (features gathered from all ranks)
    loss = (CE(logits, diag) + CE(logits^T, diag)) / 2

The model is an AltCLIP folder, or a transformers ``CLIPModel`` folder (with ``--train-vision``
this trains a CLIP from scratch: the mini recipe's English teacher, and its from-scratch
multilingual baseline when the folder is a random AltCLIP).

Samples come from webdataset shards in img2dataset's layout; shard ``k`` is read by rank
``k % world``; corrupt images and empty captions are skipped and counted, never fatal.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from altdiffusion.models.altclip import AltCLIP
from altdiffusion.training.data import SkipCounter, data_source, decode_plan, micro_batch_plans
from altdiffusion.training.distributed import gather_features
from altdiffusion.training.params import TrainSettings
from altdiffusion.training.prefetch import PlannedBatches
from altdiffusion.training.settings import ContrastiveSettings


def clip_loss(text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    logits = logit_scale.exp() * text @ image.t()
    labels = torch.arange(len(text), device=text.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


class CLIPModelTowers(torch.nn.Module):
    """A transformers ``CLIPModel`` behind AltCLIP's ``encode_text`` / ``encode_image``."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.vision_model, self.visual_projection = model.vision_model, model.visual_projection
        self.text_model, self.text_projection = model.text_model, model.text_projection

    @property
    def logit_scale(self) -> torch.nn.Parameter:
        return self.model.logit_scale

    def encode_text(self, input_ids, attention_mask=None):
        pooled = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return self.model.text_projection(pooled)

    def encode_image(self, pixel_values):
        return self.model.visual_projection(self.model.vision_model(pixel_values=pixel_values).pooler_output)

    def enable_gradient_checkpointing(self) -> None:
        self.model.gradient_checkpointing_enable()


def load_contrastive_model(folder: Path):
    """(model with encode_text/encode_image, tokenizer) for an AltCLIP or a CLIPModel folder."""
    from altdiffusion.errors import CheckpointError
    from altdiffusion.models.loading import load_altclip, read_json
    from altdiffusion.models.tokenizer import load_tokenizer

    if read_json(folder / "config.json").get("model_type") == "clip":
        from transformers import AutoTokenizer, CLIPModel

        try:
            return CLIPModelTowers(CLIPModel.from_pretrained(str(folder))), AutoTokenizer.from_pretrained(str(folder))
        except Exception as err:
            raise CheckpointError(f"{folder}: cannot load the CLIP model ({type(err).__name__}: {err})") from None
    return load_altclip(folder), load_tokenizer(folder)


class ContrastiveModel(torch.nn.Module):
    def __init__(self, clip: AltCLIP | CLIPModelTowers, train_vision: bool = False, freeze_text: bool = False):
        super().__init__()
        self.clip = clip
        if not train_vision:
            clip.vision_model.requires_grad_(False)
            clip.visual_projection.requires_grad_(False)
        if freeze_text:  # the text embeddings (what an AltDiffusion reads) stay exactly as they are
            clip.text_model.requires_grad_(False)
            clip.text_projection.requires_grad_(False)

    def enable_gradient_checkpointing(self) -> None:
        if isinstance(self.clip, CLIPModelTowers):
            self.clip.enable_gradient_checkpointing()
        else:
            self.clip.text_model.roberta.gradient_checkpointing_enable()

    def forward(self, input_ids, attention_mask, pixel_values):
        text = F.normalize(self.clip.encode_text(input_ids, attention_mask).float(), dim=-1)
        image = F.normalize(self.clip.encode_image(pixel_values).float(), dim=-1)
        return text, image


class ContrastiveTask(PlannedBatches):
    name = "clip-contrastive"

    def __init__(
        self,
        clip_folder: Path,
        shards,
        *,
        seed: int = 0,
        train_vision: bool = False,
        freeze_text: bool = False,
        languages=None,
        max_length: int = 77,
    ):
        from altdiffusion.hub import resolve_model
        from altdiffusion.pipelines.components import load_image_processor

        self.folder = resolve_model(clip_folder, kind="clip")
        self.clip, self.tokenizer = load_contrastive_model(self.folder)
        self.processor = load_image_processor(self.folder)
        self.source = data_source(shards)
        self.model = ContrastiveModel(self.clip, train_vision, freeze_text)
        self.seed, self.languages, self.max_length = seed, languages, max_length
        self.skipped = SkipCounter()

    def plans(self, start_step, micro, rank, world, grad_accum):
        """This rank's micro-batches from optimizer step ``start_step`` on, images not yet decoded."""
        start = start_step * grad_accum
        return micro_batch_plans(
            self.source, start=start, micro=micro, rank=rank, world=world, seed=self.seed, languages=self.languages
        )

    def prepare(self, plan):
        """((token ids, attention mask, pixels), passed-over samples) of ``plan``."""
        decoded = decode_plan(plan)
        pixels = self.processor(images=decoded.images, return_tensors="pt").pixel_values
        captions = [raw.caption for raw in decoded.samples]
        tok = self.tokenizer(captions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return (tok.input_ids, tok.attention_mask, pixels), decoded.skipped

    def loss(self, model, batch):
        input_ids, attention_mask, pixels = batch
        device = next(model.parameters()).device
        text, image = model(input_ids.to(device), attention_mask.to(device), pixels.to(device))
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        all_text, all_image = gather_features(text), gather_features(image)
        scale = self.clip.logit_scale
        loss = clip_loss(all_text, all_image, scale)
        # DDP averages gradients over ranks, and each rank's gradient flows only through its own
        # rows: scaling by the world size gives the 1-process gradient. The log shows the true loss.
        return loss * world, {"loss": loss, "logit_scale": float(scale.detach().exp()), "skipped": self.skipped.total}

    def export(self, model, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(model.clip, CLIPModelTowers):
            model.clip.model.save_pretrained(str(folder), safe_serialization=True)
        else:
            self._export_altclip(model, folder)
        self.tokenizer.save_pretrained(str(folder))
        (folder / "preprocessor_config.json").write_text((self.folder / "preprocessor_config.json").read_text())
        (folder / "data_report.json").write_text(json.dumps({"skipped": self.skipped.counts}, indent=2) + "\n")

    def _export_altclip(self, model, folder: Path) -> None:
        from altdiffusion.models.weights import save_safetensors

        config = json.loads((self.folder / "config.json").read_text())
        config["logit_scale_init_value"] = float(model.clip.logit_scale.detach())
        (folder / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        save_safetensors(model.clip.state_dict(), folder / "model.safetensors")


def run(settings: ContrastiveSettings, training: TrainSettings) -> Path:
    """Contrastive learning from ``settings`` under the loop's ``training`` settings; the model folder."""
    from altdiffusion.training.loop import train

    task = ContrastiveTask(
        settings.model,
        settings.shards,
        seed=training.seed,
        train_vision=settings.train_vision,
        freeze_text=settings.freeze_text,
        languages=settings.languages,
    )
    return train(task, training)
