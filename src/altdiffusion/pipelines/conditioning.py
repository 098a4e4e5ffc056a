"""Prompt chunks -> the UNet's conditioning (B, 77*N, D), textual-inversion vectors in place.

    ids (B*N, 77) --token_embeddings--> (B*N, 77, H), an embedding's n vectors written over
    the n positions its trigger took --text_encoder--> (B*N, 77, D) --emphasis--> (B, 77*N, D)

Without embeddings the encoder reads ``ids`` itself (the published pipeline's path). Written as
a function of the text encoder, not a pipeline method, so that textual-inversion training runs
the same code with gradients flowing into the vectors it learns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from altdiffusion.errors import InvalidInputError
from altdiffusion.prompts.chunking import PromptChunk, apply_original_weighting
from altdiffusion.prompts.embedding_files import Embedding

#: (row in the batch of chunks, position in the chunk, embedding) of each trigger.
Placement = tuple[int, int, Embedding]


def token_embedding_width(text_encoder) -> int:
    """The width embedding vectors must have: XLM-R's input embeddings (SD's CLIP path has none here)."""
    if text_encoder.head not in ("m9", "m18"):
        raise InvalidInputError("textual-inversion embeddings need an AltDiffusion (XLM-R) text encoder")
    return text_encoder.token_embeddings.embedding_dim


def place_vectors(
    token_embeds: torch.Tensor, placements: list[Placement], trained: Mapping[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """``token_embeds`` with each embedding's vectors at its positions (``trained`` ones by name first)."""
    out = token_embeds.clone()
    for row, position, embedding in placements:
        vectors = (trained or {}).get(embedding.name, embedding.vectors)
        out[row, position : position + vectors.shape[0]] = vectors.to(out)
    return out


def encode_chunks(
    text_encoder,
    batches: list[list[PromptChunk]],
    empty: PromptChunk,
    place: Callable[[torch.Tensor, list[Placement]], torch.Tensor] = place_vectors,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Conditioning for several prompts' chunks, each padded with ``empty`` to one chunk count.

    ``device``: where the encoder computes (default: where its weights are). The encoder is
    called through ``forward``, so that a memory mode's offload hooks bring its weights there."""
    n = max(len(chunks) for chunks in batches)
    flat = [c for chunks in batches for c in chunks + [empty] * (n - len(chunks))]
    device = device or text_encoder.device
    ids = torch.tensor([c.input_ids for c in flat], device=device)
    mask = torch.tensor([c.attention_mask for c in flat], device=device)
    weights = torch.tensor([c.weights for c in flat], device=device)
    use_mask = getattr(text_encoder.config, "use_attention_mask", True)
    placements = [(row, position, e) for row, chunk in enumerate(flat) for position, e in chunk.fixes]
    extra = {"token_embeds": place(_look_up(text_encoder.token_embeddings, ids), placements)} if placements else {}
    hidden = text_encoder(ids, mask if use_mask else None, **extra)
    hidden = apply_original_weighting(hidden, weights)
    return hidden.reshape(len(batches), n * hidden.shape[1], hidden.shape[2])


def _look_up(table: torch.nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """``table(ids)`` on ``ids``' device, wherever an offloading memory mode keeps the table now:
    on the CPU while the encoder waits (looked up there), or streamed by a hook (weights on "meta")."""
    home = table.weight.device
    if home.type == "meta" or home == ids.device:
        return table(ids)
    return table(ids.to(home)).to(ids.device)
