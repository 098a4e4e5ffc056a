"""Grounded diffusion training: tell the UNet's cross-attention where each phrase's thing is.

A training sample may say, in its webdataset ``json``, where the things its caption names are:

    "regions": [{"box": [left, top, right, bottom],                  pixels of the stored image
                 "phrases": {"en": [start, end], "zh": [start, end]}}, ...],   characters of each caption
    "background": [r, g, b]                                           optional: its plain background

(``altdiffusion mini data`` writes both.) With A the probabilities of one cross-attention layer
(pixels x tokens, heads averaged), P_r the caption tokens of region r's phrase and M_r how much
of each latent cell r's box covers (peak 1):

    held_r(p) = sum_{k in P_r} A[p, k]                         what r's words hold of pixel p's attention
    token     = (1 - sum_p M_r held_r / sum_p held_r)^2        their attention falls inside the box
                                                               (TokenCompose's token loss, Wang et al. 2024)
    pixel     = -sum_p M_r log held_r / sum_p M_r               inside the box, they hold the attention

each the mean over every layer and region, measured on the diffusion loss's own forward pass.
The background pass measures both again on one more pass over the samples with a background,
whose input is the background alone noised to t in [600, 1000): no colour in view can tell the
words where their thing is there, only the caption's position words or order and the pixel's
place can (the mini world's measurements: the README's mini section, "Grounding the words").
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from altdiffusion.errors import InvalidInputError
from altdiffusion.training.data import crop_geometry

BACKGROUND_STEPS = (600, 1000)
CHUNK_POSITIONS = 76  # a chunk's BOS and 75 tokens: the positions a phrase can take (EOS at 76 at most)


@dataclass(frozen=True)
class GroundingWeights:
    """Weights of the token and pixel losses, and of the background pass (a multiple of both)."""

    token: float = 0.0
    pixel: float = 0.0
    background: float = 0.0

    def __post_init__(self) -> None:
        for name in ("token", "pixel", "background"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"--grounding-{name} must be >= 0, got {getattr(self, name)}")
        if self.background and not self.on:
            raise InvalidInputError(
                "--grounding-background weighs the token and pixel losses of the background pass; "
                "give --grounding-token or --grounding-pixel too"
            )

    @property
    def on(self) -> bool:
        return self.token > 0 or self.pixel > 0


@dataclass(frozen=True)
class GroundedCaption:
    """One training caption's grounding, in the coordinates the UNet sees."""

    tokens: list[list[int]]  # chunk positions (BOS at 0) of each region's phrase
    boxes: list[tuple[float, float, float, float]]  # each region's box in the training crop's pixels
    background: tuple[int, int, int] | None


def grounded_caption(meta, language, caption: str, pipe, image_size, resolution: int) -> GroundedCaption | None:
    """The grounding a sample's ``json`` gives ``caption`` (its ``language`` caption) after
    ``crop_pixels``; None where it gives none (no regions, or a region without this caption's phrase)."""
    regions = meta.get("regions") if isinstance(meta, dict) else None
    if not regions or language is None:
        return None
    try:
        spans = [(int(start), int(end)) for start, end in (region["phrases"][language] for region in regions)]
        boxes = [crop_box(region["box"], image_size, resolution) for region in regions]
    except (KeyError, TypeError, ValueError):
        return None
    tokens = phrase_positions(pipe, caption, spans)
    if tokens is None or any(box is None for box in boxes):
        return None
    background = meta.get("background")
    plain = isinstance(background, list) and len(background) == 3 and all(isinstance(v, int) for v in background)
    return GroundedCaption(tokens, boxes, tuple(background) if plain else None)


def crop_box(box, image_size: tuple[int, int], resolution: int):
    """``box`` (pixels of an image of ``image_size``) in the ``crop_pixels`` crop: resized so the
    short side is ``resolution``, centre-cropped; None where nothing of it is left."""
    left, top, right, bottom = map(float, box)
    width, height, dx, dy = crop_geometry(image_size, resolution)
    sx, sy = width / image_size[0], height / image_size[1]
    clip = lambda v: min(max(v, 0.0), float(resolution))  # noqa: E731
    out = (clip(left * sx - dx), clip(top * sy - dy), clip(right * sx - dx), clip(bottom * sy - dy))
    return out if out[2] > out[0] and out[3] > out[1] else None


def phrase_positions(pipe, caption: str, spans) -> list[list[int]] | None:
    """The chunk positions of each (start, end) character span's tokens: the tokenizer's own
    positions, BOS at 0, as ``pipe``'s first prompt chunk holds them. None where a span has no token
    there (past the first chunk) or the pipeline's prompt parsing made other tokens of the caption
    (emphasis syntax, an embedding's trigger word)."""
    encoding = pipe.tokenizer(caption, return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    positions = [
        [j for j, (a, b) in enumerate(offsets) if b > a and a < end and b > start and j < CHUNK_POSITIONS]
        for start, end in spans
    ]
    if not all(positions):
        return None
    last = max(max(p) for p in positions) + 1
    chunk = pipe.prompt_chunks(caption)[0].input_ids  # what the conditioning encodes
    return positions if chunk[:last] == ids[:last] else None


def box_masks(boxes, side: int, resolution: int) -> torch.Tensor:
    """(regions, side*side): how much of each cell of a side x side grid over the crop each box covers, peak 1."""
    edges = torch.arange(side + 1, dtype=torch.float32) * (resolution / side)
    left, top, right, bottom = torch.tensor(boxes, dtype=torch.float32).view(-1, 4).unbind(-1)
    cover = _overlap(edges, top, bottom)[:, :, None] * _overlap(edges, left, right)[:, None, :]
    return (cover / cover.amax(dim=(1, 2), keepdim=True)).flatten(1)


def _overlap(edges: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """(boxes, cells): the length each box's [low, high] shares with each cell between ``edges``."""
    return (torch.minimum(edges[1:], high[:, None]) - torch.maximum(edges[:-1], low[:, None])).clamp(min=0)


def grounding_losses(maps, grounded, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(token loss, pixel loss), each the mean over every layer's map and every grounded region;
    ``grounded`` holds a GroundedCaption or None per sample of the maps' batch.

    All regions of a batch at once: a loop over samples and regions made some 2,000 small autograd
    nodes per map set, 11.8x the time forward and backward (benchmarks/grounding_step.py)."""
    regions = [
        (index, positions, box)
        for index, item in enumerate(grounded)
        if item is not None
        for positions, box in zip(item.tokens, item.boxes)
    ]
    if not regions or not maps:
        zero = torch.zeros(()) if not maps else maps[0].new_zeros(())
        return zero, zero
    device = maps[0].device
    samples = torch.tensor([index for index, _, _ in regions], device=device)
    words = torch.zeros(len(regions), maps[0].shape[-1])  # 1 at each region's phrase tokens
    for r, (_, positions, _) in enumerate(regions):
        words[r, positions] = 1.0
    words, masks, token, pixel = words.to(device), {}, 0.0, 0.0
    for probabilities in maps:
        side = int(probabilities.shape[1] ** 0.5)
        if side not in masks:  # the layers of one resolution share them
            masks[side] = box_masks([box for _, _, box in regions], side, resolution).to(device)
        mask = masks[side]
        held = torch.einsum("rpk,rk->rp", probabilities[samples].float(), words)
        token = token + ((1 - (mask * held).sum(-1) / held.sum(-1)) ** 2).sum()
        pixel = pixel - ((mask * held.clamp_min(1e-6).log()).sum(-1) / mask.sum(-1)).sum()
    count = len(regions) * len(maps)
    return token / count, pixel / count


@contextmanager
def recorded_attention(unet):
    """Collects each cross-attention layer's probabilities (batch, pixels, tokens; heads averaged)
    during the forward calls inside the block, recomputed beside diffusers' processor with its own
    scoring (the processor is left in place); they keep gradients where the call does."""
    maps = []

    def record(attention, args, kwargs):
        query = attention.head_to_batch_dim(attention.to_q(args[0]))
        key = attention.head_to_batch_dim(attention.to_k(kwargs["encoder_hidden_states"]))
        probabilities = attention.get_attention_scores(query, key, None)
        maps.append(probabilities.view(-1, attention.heads, *probabilities.shape[1:]).mean(1))

    layers = [m for name, m in unet.named_modules() if name.endswith("attn2")]
    hooks = [layer.register_forward_pre_hook(record, with_kwargs=True) for layer in layers]
    try:
        yield maps
    finally:
        for hook in hooks:
            hook.remove()
