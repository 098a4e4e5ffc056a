"""Opening the CLIP an evaluation uses, with its embedding cache."""

from __future__ import annotations

from pathlib import Path

from altdiffusion.eval.embeddings import EmbeddingCache, default_cache_dir, model_identity


def open_clip(model, *, device=None, dtype=None, cache_dir: str | Path | None = "default"):
    """(CLIP, cache, name) for a model name/folder (cached by its files) or a loaded ``CLIP`` (not cached:
    its weights may have changed in memory). ``cache_dir=None`` turns caching off."""
    from altdiffusion.clip import CLIP, load_clip
    from altdiffusion.hub import resolve_model

    if isinstance(model, CLIP):
        return model, EmbeddingCache(None, ""), model.name or "clip"
    clip = load_clip(model, device=device, dtype=dtype)
    folder = Path(default_cache_dir() if cache_dir == "default" else cache_dir) if cache_dir else None
    identity = model_identity(resolve_model(model, kind="clip"), clip.dtype)
    return clip, EmbeddingCache(folder, identity), str(model)
