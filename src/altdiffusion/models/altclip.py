"""AltCLIP: CLIP with its text tower replaced by XLM-R (arXiv 2211.06679).

    text:   AltTextEncoder.retrieval_embedding -> text_projection   (B, projection_dim)
    image:  CLIP ViT (pooled CLS after post_layernorm) -> visual_projection
    logits: exp(logit_scale) * cos(text, image)

Attribute names equal the published checkpoint's key prefixes (``text_model.roberta.*``,
``text_model.pre_LN``, ``text_model.transformation``, ``vision_model.*``, ``text_projection``,
``visual_projection``, ``logit_scale``), so weights load without renaming. The vision tower is
transformers' CLIP ViT: AltCLIP's vision tower is that architecture unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AltCLIPConfig, CLIPVisionConfig, CLIPVisionModel

from altdiffusion.models.text_encoder import AltTextEncoder, text_config_from_dict


class AltCLIP(nn.Module):
    def __init__(self, config: AltCLIPConfig):
        super().__init__()
        self.config = config
        text_config = text_config_from_dict(config.text_config.to_dict())
        vision_config = CLIPVisionConfig(**_vision_fields(config.vision_config.to_dict()))
        self.text_model = AltTextEncoder(text_config, head="clip")
        # transformers 4's CLIPVisionModel wraps the transformer in `.vision_model` (5 does not);
        # keep only the transformer so our keys read `vision_model.embeddings...` as published.
        vision = CLIPVisionModel(vision_config)
        self.vision_model = getattr(vision, "vision_model", vision)
        self.text_projection = nn.Linear(text_config.project_dim, config.projection_dim, bias=False)
        self.visual_projection = nn.Linear(vision_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))

    @property
    def dtype(self) -> torch.dtype:
        return self.text_projection.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.text_projection.weight.device

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Projected (unnormalised) text embedding, as ``AltCLIPModel.get_text_features``."""
        return self.text_projection(self.text_model.retrieval_embedding(input_ids, attention_mask))

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected (unnormalised) image embedding, as ``AltCLIPModel.get_image_features``."""
        pooled = self.vision_model(pixel_values=pixel_values.to(self.dtype)).pooler_output
        return self.visual_projection(pooled)

    def forward(self, input_ids, attention_mask, pixel_values) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits_per_image, logits_per_text), as CLIP."""
        text = F.normalize(self.encode_text(input_ids, attention_mask), dim=-1)
        image = F.normalize(self.encode_image(pixel_values), dim=-1)
        logits_per_text = self.logit_scale.exp() * text @ image.t()
        return logits_per_text.t(), logits_per_text


def _vision_fields(vision: dict) -> dict:
    drop = ("model_type", "architectures", "transformers_version", "_name_or_path")
    return {k: v for k, v in vision.items() if k not in drop}
