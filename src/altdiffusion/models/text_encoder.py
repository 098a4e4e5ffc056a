"""The multilingual text tower: XLM-R plus the heads AltCLIP and AltDiffusion put on it.

All six published checkpoints share one XLM-R encoder (``roberta``) and differ only in
which head reads it. The three output paths, exactly as the original code computes them:

    path                              computation                                         shape
    AltCLIP retrieval embedding       transformation(pre_LN(h[-1]))[:, 0]                 (B, project_dim)
                                      (AltCLIP then applies its text_projection)
    AltDiffusion / -m9 conditioning   transformation(h[-1])          (every token, no LN)  (B, T, project_dim)
    AltDiffusion-m18 conditioning     transformation_pre(pre_LN(h[-2]))  (layer 23 of 24)  (B, T, project_dim)

where ``h[-1]`` is XLM-R's last hidden state and ``h[-2]`` the output of the layer before it.
transformers' ``AltCLIPTextModel`` implements only the first path and diffusers'
``RobertaSeriesModelWithTransformation`` only the other two; one module with all three lets
one set of weights serve retrieval, conditioning and training.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from transformers import XLMRobertaConfig, XLMRobertaModel

TextHead = Literal["clip", "m9", "m18"]


class AltTextEncoder(nn.Module):
    """XLM-R with the AltCLIP / AltDiffusion projection heads.

    ``head`` names the checkpoint family and so which weights exist:

    - ``"clip"``: ``pre_LN`` + ``transformation`` (AltCLIP's text tower);
    - ``"m9"``: ``transformation`` only (AltDiffusion and AltDiffusion-m9);
    - ``"m18"``: ``transformation`` + ``pre_LN`` + ``transformation_pre``
      (AltDiffusion-m18, config ``has_pre_transformation: true``).
    """

    def __init__(self, config: XLMRobertaConfig, head: TextHead):
        super().__init__()
        if head not in ("clip", "m9", "m18"):
            raise ValueError(f"unknown text head {head!r}")
        self.config = config
        self.head = head
        self.roberta = XLMRobertaModel(config, add_pooling_layer=False)
        self.transformation = nn.Linear(config.hidden_size, config.project_dim)
        if head in ("clip", "m18"):
            self.pre_LN = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if head == "m18":
            self.transformation_pre = nn.Linear(config.hidden_size, config.project_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.transformation.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.transformation.weight.device

    @property
    def conditioning_dim(self) -> int:
        return self.config.project_dim

    @property
    def token_embeddings(self) -> nn.Embedding:
        """XLM-R's input embeddings: the space textual-inversion vectors live in."""
        return self.roberta.embeddings.word_embeddings

    def _hidden_states(self, input_ids, attention_mask, *, all_layers: bool, token_embeds=None):
        if token_embeds is None:
            inputs = {"input_ids": input_ids}
        else:  # the positions XLM-R would number from input_ids (padding keeps padding_idx)
            positions = self.roberta.embeddings.create_position_ids_from_input_ids(input_ids, self.config.pad_token_id)
            inputs = {"inputs_embeds": token_embeds, "position_ids": positions}
        out = self.roberta(
            **inputs,
            attention_mask=attention_mask,
            output_hidden_states=all_layers,
            return_dict=True,
        )
        return out.hidden_states if all_layers else (out.last_hidden_state,)

    def retrieval_embedding(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """AltCLIP: CLS token of ``transformation(pre_LN(last_hidden))``, before text_projection."""
        if self.head != "clip":
            raise ValueError("retrieval_embedding needs an AltCLIP text tower (head='clip')")
        (last,) = self._hidden_states(input_ids, attention_mask, all_layers=False)
        return self.transformation(self.pre_LN(last))[:, 0]

    def conditioning(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """AltDiffusion's cross-attention conditioning, one vector per token.

        ``token_embeds`` (B, T, hidden) replaces the lookup of ``input_ids`` in
        :attr:`token_embeddings` (textual inversion); ``input_ids`` still number the positions.
        """
        if self.head == "m18":
            hidden = self._hidden_states(input_ids, attention_mask, all_layers=True, token_embeds=token_embeds)
            return self.transformation_pre(self.pre_LN(hidden[-2]))
        if self.head == "m9":
            (last,) = self._hidden_states(input_ids, attention_mask, all_layers=False, token_embeds=token_embeds)
            return self.transformation(last)
        raise ValueError("an AltCLIP text tower has no diffusion conditioning path; use an AltDiffusion text encoder")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The tower's one output: AltCLIP's retrieval embedding, or AltDiffusion's conditioning."""
        if self.head == "clip":
            if token_embeds is not None:
                raise ValueError("an AltCLIP text tower takes no token_embeds")
            return self.retrieval_embedding(input_ids, attention_mask)
        return self.conditioning(input_ids, attention_mask, token_embeds=token_embeds)


def text_config_from_dict(config: dict) -> XLMRobertaConfig:
    """An XLM-R config from a published ``text_encoder/config.json`` or AltCLIP ``text_config``.

    Both are XLM-R large plus ``project_dim``; extra fields (``pooler_fn``, ``learn_encoder``,
    ``has_pre_transformation``...) are kept as attributes so a saved config round-trips.
    """
    fields = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "transformers_version")}
    fields.setdefault("project_dim", fields.get("hidden_size", 768))
    return XLMRobertaConfig(**fields)
