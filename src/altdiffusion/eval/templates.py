"""Built-in zero-shot templates for the m9 languages (``{c}`` = the class name), from templates.json.

en: CLIP's 80 ImageNet templates; zh: the 80 Chinese ImageNet templates of Chinese-CLIP / clip_benchmark
(``cn``); ja, ar, it: clip_benchmark's ImageNet lists; es, fr, ru, ko: translations of CLIP's (ru puts the
name after a colon, where it would otherwise have to be declined).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from altdiffusion.errors import InvalidInputError

ALIASES = {"cn": "zh", "jp": "ja"}  # clip_benchmark's codes


@cache
def _table() -> dict[str, list[str]]:
    return json.loads((Path(__file__).parent / "templates.json").read_text(encoding="utf-8"))


def builtin_templates(language: str) -> list[str]:
    table = _table()
    code = ALIASES.get(language, language)
    if code not in table:
        raise InvalidInputError(
            f"no built-in zero-shot templates for {language!r} (there are: {', '.join(table)}); "
            "pass --templates FILE with one template a line, {c} where the class name goes"
        )
    return list(table[code])
