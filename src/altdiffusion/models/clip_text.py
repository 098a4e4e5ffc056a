"""Stable Diffusion 1.x's text path: a CLIP text tower, read at its last layer.

    conditioning = CLIPTextModel(ids).last_hidden_state        (B, 77, D), padding included

This is the model AltDiffusion replaces. It is here so an SD-1.x folder (``text_encoder/`` a
``CLIPTextModel``) runs through the same pipeline and training code: the mini recipe trains
its SD-mini this way before swapping in the AltCLIP text tower. As in SD, the tower sees the
whole padded 77-token chunk without an attention mask (its causal mask already keeps the
padding out of every position before the end token).
"""

from __future__ import annotations

from pathlib import Path

import torch

from altdiffusion.errors import CheckpointError


class CLIPTextConditioning(torch.nn.Module):
    head = "sd"

    def __init__(self, model):
        super().__init__()
        self.model = model  # transformers.CLIPTextModel

    @property
    def config(self):
        return self.model.config

    @property
    def conditioning_dim(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def conditioning(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.conditioning(input_ids, attention_mask)

    def save_pretrained(self, folder: Path) -> None:
        self.model.save_pretrained(str(folder), safe_serialization=True)

    @classmethod
    def from_folder(cls, folder: Path) -> CLIPTextConditioning:
        from transformers import CLIPTextModel

        try:
            return cls(CLIPTextModel.from_pretrained(str(folder))).eval()
        except Exception as err:
            raise CheckpointError(
                f"text encoder {folder}: cannot load the CLIP text model ({type(err).__name__}: {err})"
            ) from None
