"""Object reprs out of messages a client reads: ``<_io.BytesIO object at 0x7f...>`` tells a client
nothing and an attacker where the heap is."""

from __future__ import annotations

import re

_REPR = re.compile(r"<[^<>]*\bat 0x[0-9a-fA-F]+>")
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")


def without_reprs(text: str) -> str:
    """``text`` with every ``<... at 0x...>`` repr and bare heap address removed."""
    return _ADDRESS.sub("(address)", _REPR.sub("(object)", text))
