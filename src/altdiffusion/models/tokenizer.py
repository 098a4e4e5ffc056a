"""Loading the XLM-R tokenizer from a checkpoint folder.

Published folders hold the slow tokenizer's ``sentencepiece.bpe.model`` (diffusion) or
``tokenizer.json`` (AltCLIP). transformers 5 ignores ``XLMRobertaTokenizer(vocab_file=...)``,
so the folder goes through ``from_pretrained``, which converts the sentencepiece model
(that conversion needs ``protobuf``).
"""

from __future__ import annotations

from pathlib import Path

from altdiffusion.errors import CheckpointError


def load_tokenizer(folder: Path, *, max_length: int | None = None):
    from transformers import AutoTokenizer

    if not folder.is_dir():
        raise CheckpointError(f"{folder}: tokenizer folder is missing")
    if not ((folder / "tokenizer.json").is_file() or (folder / "sentencepiece.bpe.model").is_file()):
        raise CheckpointError(f"{folder}: no tokenizer.json or sentencepiece.bpe.model; the download is incomplete")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:  # transformers raises many types for a broken tokenizer folder
        raise CheckpointError(f"{folder}: cannot load the tokenizer ({type(err).__name__}: {err})") from None
    if tokenizer.pad_token_id is None or tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise CheckpointError(f"{folder}: the tokenizer lacks <s>, </s> or <pad>; it is not an XLM-R tokenizer")
    if max_length is not None:
        tokenizer.model_max_length = max_length
    return tokenizer
