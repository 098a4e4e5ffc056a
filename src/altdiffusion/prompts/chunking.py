"""A1111-style long prompts for an XLM-R tokenizer: 75-token chunks and emphasis weights.

The text encoder sees at most 77 positions, so a prompt is cut into chunks of
``chunk_length`` (75) content tokens, each framed as ``[bos] + content + [eos] + [pad]*k``
and encoded separately; the caller concatenates the hidden states along the sequence axis
(and pads positive and negative prompts to the same chunk count so they stack).

Each token carries the emphasis weight of the segment it came from; "Original" weighting
then scales the hidden states by those weights and restores their mean (see
:func:`apply_original_weighting`).
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field

import torch

from .embedding_files import Embedding
from .emphasis import BREAK, parse_emphasis

__all__ = [
    "COMMA_TEXTS",
    "PromptChunk",
    "apply_original_weighting",
    "comma_token_ids",
    "empty_chunk",
    "pad_to_same_length",
    "tokenize_prompt",
]

#: Token texts (sentencepiece '▁' removed) that count as commas for comma backtracking.
#: XLM-R's normaliser already folds the fullwidth '，' into ',' but the entry is kept for
#: tokenizers that do not.
COMMA_TEXTS: frozenset[str] = frozenset({",", "，", "、", "،", "؛"})
_SPM_SPACE = "\u2581"

_tokenizer_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass
class PromptChunk:
    """One encoder window: ``chunk_length + 2`` (77) positions."""

    input_ids: list[int]  # [bos] + content + [eos] + [pad]*k
    attention_mask: list[int]  # 1 on bos..eos, 0 on pad
    weights: list[float]  # emphasis per position, 1.0 on bos/eos/pad
    # (position, embedding): its vectors replace the token embeddings from that position on
    # (A1111's PromptChunkFix); input_ids hold the unknown token there.
    fixes: list[tuple[int, Embedding]] = field(default_factory=list)


def _vocab_facts(tokenizer) -> tuple[frozenset[int], int | None]:
    """(comma ids, id of the bare '▁' token), scanned from the vocab once per tokenizer."""
    try:
        return _tokenizer_cache[tokenizer]
    except (KeyError, TypeError):
        pass
    vocab = tokenizer.get_vocab()
    commas = frozenset(i for tok, i in vocab.items() if tok.replace(_SPM_SPACE, "") in COMMA_TEXTS)
    facts = (commas, vocab.get(_SPM_SPACE))
    with contextlib.suppress(TypeError):  # not weak-referenceable: just rescan next time
        _tokenizer_cache[tokenizer] = facts
    return facts


def comma_token_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokens that are a comma (optionally with the '▁' word-boundary mark)."""
    return _vocab_facts(tokenizer)[0]


def _frame(content: list[int], weights: list[float], tokenizer, chunk_length: int, fixes=()) -> PromptChunk:
    pad = chunk_length - len(content)
    return PromptChunk(
        input_ids=[tokenizer.bos_token_id, *content, tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad,
        attention_mask=[1] * (len(content) + 2) + [0] * pad,
        weights=[1.0, *weights, 1.0] + [1.0] * pad,
        fixes=[(offset + 1, embedding) for offset, embedding in fixes],  # + 1: after bos
    )


def empty_chunk(tokenizer, chunk_length: int = 75) -> PromptChunk:
    """``[bos, eos, pad...]``: what the empty prompt tokenizes to."""
    return _frame([], [], tokenizer, chunk_length)


def _pieces(prompt: str, embeddings) -> list[tuple[str | Embedding, float]]:
    """The emphasis segments, with each text cut around the embedding triggers it names."""
    pieces: list[tuple[str | Embedding, float]] = []
    for text, weight in parse_emphasis(prompt):
        if (text, weight) == BREAK or embeddings is None:
            pieces.append((text, weight))
        else:
            pieces.extend((part, weight) for part in embeddings.split(text))
    return pieces


def _weighted_tokens(prompt: str, tokenizer, embeddings=None) -> list[tuple[int | Embedding, float] | None]:
    """Tokens of ``prompt`` with their emphasis weight; ``None`` marks a BREAK, and an
    :class:`Embedding` stands for the vectors of a trigger ``embeddings`` knows.

    Each segment is tokenized on its own, and sentencepiece then treats every segment as
    the start of a word (Metaspace prepends '▁').  To stay close to tokenizing the whole
    prompt at once, whitespace at a boundary between segments is moved onto the right
    segment, and a bare '▁' token that a right segment starts with is dropped when the
    prompt had no whitespace there (``红色的(房子)``, ``(red), blue``).  A prompt that is
    one segment is tokenized exactly as ``tokenizer(prompt)`` would.
    """
    _, bare_space = _vocab_facts(tokenizer)
    segments = _pieces(prompt, embeddings)
    out: list[tuple[int | Embedding, float] | None] = []
    carry = ""  # whitespace moved from the end of the previous segment
    for i, (text, weight) in enumerate(segments):
        if (text, weight) == BREAK:
            out.append(None)
            carry = ""
            continue
        if isinstance(text, Embedding):  # its vectors take the place of the trigger's tokens
            out.append((text, weight))
            carry = ""
            continue
        continues = i > 0 and segments[i - 1] != BREAK
        text = carry + text
        carry = ""
        if i + 1 < len(segments) and segments[i + 1] != BREAK:
            stripped = text.rstrip()
            text, carry = stripped, text[len(stripped) :]
        if not text:
            continue
        # verbose=False: a long segment is expected here, chunking is what handles it.
        ids = tokenizer(text, add_special_tokens=False, verbose=False).input_ids
        if continues and ids and ids[0] == bare_space and not text[0].isspace():
            ids = ids[1:]
        out.extend((t, weight) for t in ids)
    return out


@dataclass
class _OpenChunk:
    """The chunk being filled: content tokens, their weights, embeddings placed, the last comma."""

    ids: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    fixes: list[tuple[int, Embedding]] = field(default_factory=list)  # (content offset, embedding)
    last_comma: int = -1

    def split_after(self, cut: int) -> _OpenChunk:
        """Move everything from content offset ``cut`` on into a new chunk, which is returned."""
        moved = _OpenChunk(self.ids[cut:], self.weights[cut:], [(o - cut, e) for o, e in self.fixes if o >= cut], -1)
        self.ids, self.weights = self.ids[:cut], self.weights[:cut]
        self.fixes = [(o, e) for o, e in self.fixes if o < cut]
        return moved


def tokenize_prompt(
    prompt: str, tokenizer, chunk_length: int = 75, comma_backtrack: int = 20, embeddings=None
) -> list[PromptChunk]:
    """Cut a prompt into A1111 chunks of at most ``chunk_length`` content tokens.

    When a chunk is full and a comma sits among its last ``comma_backtrack`` tokens, the
    chunk is cut right after that comma and the tokens after it move to the next chunk,
    so a comma-separated phrase is not split between two encoder windows (A1111's
    ``comma_padding_backtrack``; 0 disables it).  ``BREAK`` ends a non-empty chunk.
    A prompt without tokens gives one chunk ``[bos, eos, pad...]``.

    ``embeddings`` (an :class:`~altdiffusion.prompts.embeddings.EmbeddingDatabase`) turns each
    trigger into as many positions as its embedding has vectors, all with the trigger's
    emphasis; an embedding that does not fit in the current chunk starts the next one, so
    its vectors are never split between chunks (A1111's rule).

    For a prompt without emphasis syntax that fits in one chunk, ``input_ids`` and
    ``attention_mask`` equal ``tokenizer(prompt, padding="max_length",
    max_length=chunk_length + 2, truncation=True)``.
    """
    commas = comma_token_ids(tokenizer)
    placeholder = tokenizer.unk_token_id
    chunks: list[PromptChunk] = []
    current = _OpenChunk()

    def flush(following: _OpenChunk | None = None) -> None:
        nonlocal current
        chunks.append(_frame(current.ids, current.weights, tokenizer, chunk_length, current.fixes))
        current = following or _OpenChunk()

    for item in _weighted_tokens(prompt, tokenizer, embeddings):
        if item is None:
            if current.ids:
                flush()
            continue
        piece, weight = item
        if len(current.ids) == chunk_length:
            near_comma = current.last_comma >= 0 and len(current.ids) - current.last_comma <= comma_backtrack
            if near_comma and (isinstance(piece, Embedding) or piece not in commas):
                flush(current.split_after(current.last_comma + 1))
            else:
                flush()
        if isinstance(piece, Embedding):
            if len(current.ids) + piece.count > chunk_length:
                flush()
            current.fixes.append((len(current.ids), piece))
            current.ids += [placeholder] * piece.count
            current.weights += [weight] * piece.count
            continue
        if piece in commas:
            current.last_comma = len(current.ids)
        current.ids.append(piece)
        current.weights.append(weight)
    if current.ids or not chunks:
        flush()
    return chunks


def pad_to_same_length(
    a: list[PromptChunk], b: list[PromptChunk], tokenizer
) -> tuple[list[PromptChunk], list[PromptChunk]]:
    """Append empty chunks to the shorter list so both hold as many chunks.

    Conditional and unconditional embeddings are batched together for classifier-free
    guidance, so their sequence lengths (chunks * 77) must agree; A1111 pads with the
    encoding of the empty prompt.  The inputs are not modified.
    """
    n = max(len(a), len(b))
    size = len((a or b)[0].input_ids) if (a or b) else 77

    def filled(chunks: list[PromptChunk]) -> list[PromptChunk]:
        return list(chunks) + [empty_chunk(tokenizer, size - 2) for _ in range(n - len(chunks))]

    return filled(a), filled(b)


def apply_original_weighting(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111 "Original" emphasis: scale token states, then restore each item's mean.

    With ``z`` of shape (B, T, D) and weights ``w`` (B, T)::

        z' = z * w[..., None] * mean(z) / mean(z * w[..., None])

    where ``mean`` runs over (T, D) of each batch item (A1111 takes it over the whole
    batch; per item makes the result independent of what else is batched).  Emphasised
    tokens therefore grow relative to the rest while the overall magnitude, which the
    UNet is sensitive to, stays put.  Means are taken in float32.  All-ones weights
    return ``hidden`` itself, bit-identical.
    """
    if bool((weights == 1).all()):
        return hidden
    z = hidden.float()
    before = z.mean(dim=(1, 2), keepdim=True)
    z = z * weights.to(device=z.device, dtype=z.dtype)[..., None]
    after = z.mean(dim=(1, 2), keepdim=True)
    return (z * (before / after)).to(hidden.dtype)
