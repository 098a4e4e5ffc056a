"""Opening the CLIP an evaluation uses, with its embedding cache."""

from __future__ import annotations

from pathlib import Path

from altdiffusion.eval.embeddings import EmbeddingCache, model_identity


def open_clip(model, *, device=None, dtype=None, cache_dir: str | Path | None = None):
    """(CLIP, cache, name) for a model name/folder or a loaded ``CLIP``. Embeddings are cached in ``cache_dir``
    (the CLI's default: ``default_cache_dir()``) by the model's files; None, or a loaded ``CLIP`` (whose
    weights may have changed in memory), caches nothing."""
    from altdiffusion.clip import CLIP, load_clip
    from altdiffusion.hub import resolve_model

    if isinstance(model, CLIP):
        return model, EmbeddingCache(None, ""), model.name or "clip"
    clip = load_clip(model, device=device, dtype=dtype)
    folder = Path(cache_dir).expanduser() if cache_dir else None
    identity = model_identity(resolve_model(model, kind="clip"), clip.dtype)
    return clip, EmbeddingCache(folder, identity), str(model)
