"""The names of the speed and memory modes, and which combinations work; no torch import (the CLI's
parser and the server's configuration read this while they start)."""

from __future__ import annotations

from altdiffusion.errors import InvalidInputError

MEMORY_MODES = ("full", "balanced", "low")  # see pipelines/memory.py


def check_modes(compile: bool, memory: str) -> None:
    """One error naming the fix for a memory mode we do not know, or speed mode with offloading."""
    if memory not in MEMORY_MODES:
        raise InvalidInputError(f"unknown memory mode {memory!r}; use one of {', '.join(MEMORY_MODES)}")
    if compile and memory != "full":
        raise InvalidInputError(
            f"speed mode (--compile) keeps every component on the device; it cannot be combined with "
            f"--memory {memory} (use --memory full, or leave out --compile)"
        )
