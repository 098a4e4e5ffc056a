"""A1111's extra-network prompt tags: ``<lora:name>`` or ``<lora:name:weight>``.

The tag names a LoRA to apply to this generation; it is removed from the text that
conditions the UNet and kept in the prompt an infotext records (as in A1111).
"""

from __future__ import annotations

import re

from altdiffusion.errors import InvalidInputError

# <lora:name> or <lora:name:weight> (A1111 also allows a third, ignored field)
LORA_TAG = re.compile(r"<lora:([^:<>]+)(?::([^:<>]*))?(?::[^<>]*)?>")


def extract_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """The prompt without LoRA tags, and the (name, weight) of each tag in order."""
    tags = []
    for match in LORA_TAG.finditer(prompt):
        name, weight = match[1].strip(), (match[2] or "1").strip() or "1"
        try:
            tags.append((name, float(weight)))
        except ValueError:
            raise InvalidInputError(f"LoRA tag {match[0]!r}: the weight {weight!r} is not a number") from None
    return LORA_TAG.sub("", prompt), tags
