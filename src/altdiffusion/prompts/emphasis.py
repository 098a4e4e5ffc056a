"""AUTOMATIC1111-style emphasis syntax: split a prompt into ``(text, weight)`` segments.

Semantics (A1111 "Attention/emphasis" wiki): a bracket pair scales every token inside it,
and nested pairs compose multiplicatively::

    (x)      w * 1.1          ((x))  w * 1.1 * 1.1 = 1.21 w
    [x]      w / 1.1          (x:s)  w * s   (s may be negative or fractional)

``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are literal characters; a closing bracket
with nothing open is literal text; brackets still open at the end of the prompt are
closed there (so their factor applies to the rest of the prompt).  The uppercase word
``BREAK`` yields the marker ``("BREAK", -1.0)``, which forces a new 75-token chunk.

Factors are applied in the order the brackets close, innermost first, starting from 1.0,
exactly like A1111, so the float weights match its output bit for bit
(e.g. ``((x:1.3))`` -> ``1.3 * 1.1 * 1.1 = 1.5730000000000004``).
"""

from __future__ import annotations

import re

__all__ = ["BREAK", "parse_emphasis"]

#: The chunk-break marker segment.
BREAK: tuple[str, float] = ("BREAK", -1.0)

_UP = 1.1
_DOWN = 1 / 1.1

# One token of the emphasis grammar per match; the alternatives are tried in order.
_TOKEN = re.compile(
    r"""
      \\[()\[\]\\]                      # escaped bracket or backslash: a literal character
    | :\s*(?P<w>[+-]?[.\d]+)\s*\)       # ':1.3)' closes a round bracket with an explicit factor
    | [()\[\]]                          # bare bracket
    | [^\\()\[\]:]+                     # plain text
    | [\\:]                             # a lone backslash or colon: plain text
    """,
    re.X,
)
# A1111 strips the whitespace around BREAK and requires word boundaries on both sides.
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


def parse_emphasis(text: str) -> list[tuple[str, float]]:
    """Parse A1111 emphasis syntax into ``(text, weight)`` segments.

    Adjacent segments of equal weight are merged and empty text is dropped, so a prompt
    without syntax comes back as one segment equal to itself (``(x:1.0)`` is the same as
    ``x``).  ``BREAK`` markers are never weighted or merged, even inside brackets.
    An empty prompt gives ``[("", 1.0)]``.

    >>> parse_emphasis("a (very beautiful:1.5) house")
    [('a ', 1.0), ('very beautiful', 1.5), (' house', 1.0)]
    """
    # Mutable [text, weight, is_break] rows; brackets remember the row they opened at.
    rows: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for row in rows[start:]:
            if not row[2]:
                row[1] *= factor

    def add_text(chunk: str) -> None:
        for i, part in enumerate(_BREAK.split(chunk)):
            if i:
                rows.append([BREAK[0], BREAK[1], True])
            rows.append([part, 1.0, False])

    for match in _TOKEN.finditer(text):
        tok, factor = match.group(0), match.group("w")
        if len(tok) == 2 and tok[0] == "\\":
            rows.append([tok[1], 1.0, False])
        elif tok == "(":
            round_open.append(len(rows))
        elif tok == "[":
            square_open.append(len(rows))
        elif factor is not None and round_open and _is_float(factor):
            scale(round_open.pop(), float(factor))
        elif tok == ")" and round_open:
            scale(round_open.pop(), _UP)
        elif tok == "]" and square_open:
            scale(square_open.pop(), _DOWN)
        else:  # text, or a closer with nothing open
            add_text(tok)

    for start in round_open:
        scale(start, _UP)
    for start in square_open:
        scale(start, _DOWN)

    out: list[tuple[str, float]] = []
    for seg, weight, is_break in rows:
        if is_break:
            out.append(BREAK)
        elif not seg:
            continue
        elif out and out[-1] != BREAK and out[-1][1] == weight:
            out[-1] = (out[-1][0] + seg, weight)
        else:
            out.append((seg, weight))
    return out or [("", 1.0)]


def _is_float(s: str) -> bool:
    """``[.\\d]+`` also matches ``1.2.3`` or ``.``; such text stays literal instead of raising."""
    try:
        float(s)
    except ValueError:
        return False
    return True
