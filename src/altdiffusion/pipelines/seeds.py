"""Seeds as A1111 numbers them: one 32-bit seed per image, image i of a batch gets seed + i."""

from __future__ import annotations

import random

from altdiffusion.errors import InvalidInputError

MAX_SEED = 2**32 - 1


def resolve_seed(seed: int | None) -> int:
    """``seed`` itself, or a random one for None / -1 (A1111's "random"); refuses > MAX_SEED."""
    if seed is None or seed < 0:
        return random.randint(0, MAX_SEED)
    if seed > MAX_SEED:
        raise InvalidInputError(f"seed must be at most {MAX_SEED} (or -1 for random), got {seed}")
    return int(seed)


def wrap_seed(value: int) -> int:
    """Any whole number as a 32-bit seed (e.g. a torch generator's 64-bit initial seed)."""
    return int(value) % (MAX_SEED + 1)


def seed_range(first: int, count: int) -> list[int]:
    """The seeds of ``count`` consecutive images starting at ``first``, wrapping past MAX_SEED."""
    return [wrap_seed(first + i) for i in range(count)]
