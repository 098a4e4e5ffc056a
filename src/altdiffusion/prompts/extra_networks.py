"""A1111's extra-network prompt tags: ``<lora:name>`` or ``<lora:name:weight>``.

The tag names a LoRA to apply to this generation; it is removed from the text that
conditions the UNet and kept in the prompt an infotext records (as in A1111).
"""

from __future__ import annotations

import math
import re

from altdiffusion.errors import InvalidInputError

# A LoRA's weight scales its update to the model; far outside this range (or inf/nan) it only
# destroys the image (e.g. all black), so such a tag is refused.
MAX_LORA_WEIGHT = 10.0

# <lora:name> or <lora:name:weight> (A1111 also allows a third, ignored field)
LORA_TAG = re.compile(r"<lora:([^:<>]+)(?::([^:<>]*))?(?::[^<>]*)?>")


def extract_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """The prompt without LoRA tags, and the (name, weight) of each tag in order."""
    tags = []
    for match in LORA_TAG.finditer(prompt):
        name, weight = match[1].strip(), (match[2] or "1").strip() or "1"
        try:
            value = float(weight)
        except ValueError:
            raise InvalidInputError(f"LoRA tag {match[0]!r}: the weight {weight!r} is not a number") from None
        if not math.isfinite(value) or abs(value) > MAX_LORA_WEIGHT:
            raise InvalidInputError(
                f"LoRA tag {match[0][:80]!r}: the weight must be a finite number from "
                f"{-MAX_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}, got {weight[:40]}"
            )
        tags.append((name, value))
    return LORA_TAG.sub("", prompt), tags
