"""Tiny checkpoints in the six published layouts, written once per session, and references.

The folders under ``tiny_layouts`` are shared: a test that needs to change files copies the
folder first (``copy_layout``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from altdiffusion.models.tiny import VARIANTS, write_tiny_altclip, write_tiny_altdiffusion
from tests.models import cli_batch

# Real text in the scripts the tiny tokenizer was trained on (models/tiny_tokenizers.py CORPUS).
PROMPTS = {
    "zh": "一只可爱的猫坐在窗台上",
    "en": "a photo of a cat",
    "mixed": "一只可爱的 cat 坐在 red car 上",
}


@pytest.fixture(scope="session")
def tiny_layouts(tmp_path_factory) -> dict[str, Path]:
    """``{"altclip-m2": folder, ..., "altdiffusion-m18": folder}``: read-only, shared."""
    root = tmp_path_factory.mktemp("layouts")
    folders = {}
    for variant in VARIANTS:
        folders[f"altclip-{variant}"] = write_tiny_altclip(root / f"altclip-{variant}", variant)
        folders[f"altdiffusion-{variant}"] = write_tiny_altdiffusion(root / f"altdiffusion-{variant}", variant)
    return folders


@pytest.fixture
def copy_layout(tiny_layouts, tmp_path):
    """``copy_layout("altdiffusion-m9")``: a private copy of a layout that a test may break."""

    def copy(name: str, dest_name: str | None = None) -> Path:
        dest = tmp_path / (dest_name or name)
        shutil.copytree(tiny_layouts[name], dest)
        return dest

    return copy


@pytest.fixture(scope="session")
def run_cli_batch():
    """``run_cli_batch([argv, ...]) -> [result(returncode, stdout, stderr), ...]``: see cli_batch.py."""
    return cli_batch.run_cli_batch


@pytest.fixture(scope="session")
def prompts() -> dict[str, str]:
    return dict(PROMPTS)


@pytest.fixture(scope="session")
def xlmr_reference():
    """``xlmr_reference(text_encoder_folder) -> (XLMRobertaModel, head tensors)``."""
    return _xlmr_reference


@pytest.fixture(scope="session")
def tokenize_77():
    """``tokenize_77(tokenizer, texts)``: diffusion tokenisation (pad to 77, truncation, mask)."""
    return _tokenize_77


def _xlmr_reference(text_encoder_folder: Path):
    """transformers' XLMRobertaModel with the ``roberta.*`` weights of a text_encoder folder,
    plus the head tensors (``transformation``, ``pre_LN``, ``transformation_pre``) as found in the file."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    config = XLMRobertaConfig.from_dict(json.loads((text_encoder_folder / "config.json").read_text()))
    state = torch.load(text_encoder_folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    model = XLMRobertaModel(config, add_pooling_layer=True)
    roberta = {k.removeprefix("roberta."): v for k, v in state.items() if k.startswith("roberta.")}
    result = model.load_state_dict(roberta, strict=False)
    assert result.missing_keys == [], result.missing_keys
    assert set(result.unexpected_keys) <= {"embeddings.position_ids"}, result.unexpected_keys
    heads = {k: v for k, v in state.items() if not k.startswith("roberta.")}
    return model.eval(), heads


def _tokenize_77(tokenizer, texts):
    """Diffusion tokenisation: pad to 77 with truncation, with the attention mask."""
    return tokenizer(list(texts), padding="max_length", max_length=77, truncation=True, return_tensors="pt")
