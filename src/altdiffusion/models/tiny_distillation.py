"""Tiny random starting points for distillation: an English CLIP teacher with a word-level
tokenizer, and an XLM-R student (transformers layouts).

The mini build starts from these at its own sizes (mini/architecture.py); the training tests
and benchmarks use them small.
"""

from __future__ import annotations

from pathlib import Path

import torch

from altdiffusion.models.tiny import CLIP_IMAGE_MEAN, CLIP_IMAGE_STD
from altdiffusion.models.tiny_tokenizers import write_json, write_word_level_tokenizer, write_xlmr_tokenizer


def _clip_config(vocab_size: int, width: int, layers: int, projection_dim: int, image_size: int):
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config={
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_attention_heads": 4,
            "num_hidden_layers": layers,
            "vocab_size": vocab_size,
            "max_position_embeddings": 77,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 2,
        },
        vision_config={
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_attention_heads": 4,
            "num_hidden_layers": layers,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=projection_dim,
    )


def write_tiny_clip(
    folder: str | Path,
    corpus: list[str],
    *,
    seed: int = 0,
    width: int = 32,
    layers: int = 2,
    projection_dim: int = 16,
    image_size: int = 32,
) -> Path:
    """A transformers ``CLIPModel`` folder with a word-level English tokenizer over ``corpus``."""
    from transformers import CLIPModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_word_level_tokenizer(folder, corpus)
    torch.manual_seed(seed)
    CLIPModel(_clip_config(vocab, width, layers, projection_dim, image_size)).save_pretrained(str(folder))
    write_json(
        folder / "preprocessor_config.json",
        {
            "crop_size": {"height": image_size, "width": image_size},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_resize": True,
            "image_processor_type": "CLIPImageProcessor",
            "image_mean": CLIP_IMAGE_MEAN,
            "image_std": CLIP_IMAGE_STD,
            "resample": 3,
            "size": {"shortest_edge": image_size},
        },
    )
    return folder


def write_tiny_xlmr(
    folder: str | Path,
    corpus: list[str],
    *,
    seed: int = 0,
    width: int = 32,
    layers: int = 2,
    vocab_size: int = 400,
    max_piece_length: int = 3,
    tokenizer_json: bytes | None = None,
    tokenizer_class: str = "XLMRobertaTokenizer",
) -> Path:
    """An ``XLMRobertaModel`` folder (transformers layout) with a tokenizer for ``corpus``: a
    sentencepiece model trained on it, or ``tokenizer_json`` (the mini build's: XLM-R's own,
    lower-casing, pruned to the corpus, mini/tokenizer.py) loaded as ``tokenizer_class``."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    folder = Path(folder)
    # Short pieces, as XLM-R's real vocabulary has for Chinese; a repetitive corpus would
    # otherwise merge whole phrases into one token.
    vocab = write_xlmr_tokenizer(
        folder,
        max_length=512,
        with_tokenizer_json=True,
        tokenizer_json=tokenizer_json,
        corpus=corpus,
        vocab_size=vocab_size,
        max_piece_length=max_piece_length,
        tokenizer_class=tokenizer_class,
    )
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=vocab,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=2 * width,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(str(folder))
    return folder
