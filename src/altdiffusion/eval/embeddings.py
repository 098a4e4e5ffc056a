"""Image and text embeddings in batches, with a progress bar and an on-disk cache.

The cache is keyed by the model's files (path, size, mtime), the dtype, and the dataset's files or the
texts themselves, so a re-run (another metric, another template set) embeds nothing it has seen.
Entries are safetensors files written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "altdiffusion" / "eval"


@dataclass(frozen=True)
class EmbeddingCache:
    """``folder`` None: no caching. ``model`` identifies the model's weights and dtype."""

    folder: Path | None
    model: str

    def _path(self, kind: str, identity: str) -> Path:
        key = hashlib.sha256(f"{self.model}\0{kind}\0{identity}".encode()).hexdigest()[:32]
        return self.folder / f"{kind}-{key}.safetensors"

    def load(self, kind: str, identity: str) -> dict[str, torch.Tensor] | None:
        from safetensors.torch import load_file

        if self.folder is None or not self._path(kind, identity).is_file():
            return None
        return load_file(self._path(kind, identity))

    def save(self, kind: str, identity: str, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(kind, identity)
        partial = path.with_suffix(f".partial-{os.getpid()}")
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, partial)
        os.replace(partial, path)


def model_identity(folder: Path, dtype: torch.dtype) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stats = [f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files]
    return hashlib.sha256(f"{folder.resolve()}\0{dtype}\0{stats}".encode()).hexdigest()


def decode(data: bytes | None) -> Image.Image | None:
    if data is None:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def embed_texts(clip, texts: Sequence[str], batch_size: int, cache: EmbeddingCache) -> torch.Tensor:
    """(len(texts), dim), L2-normalised."""
    identity = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    cached = cache.load("text", identity)
    if cached is not None:
        return cached["embeddings"]
    chunks = [
        clip.embed_text(list(texts[i : i + batch_size])).cpu()
        for i in tqdm(range(0, len(texts), batch_size), desc="texts", unit="batch", leave=False)
    ]
    embeddings = torch.cat(chunks) if chunks else torch.zeros(0, clip.model.config.projection_dim)
    cache.save("text", identity, {"embeddings": embeddings})
    return embeddings


def embed_images(clip, images, count: int, batch_size: int, cache: EmbeddingCache, identity: str):
    """Embeddings of the readable images among ``count`` byte strings, and the indices of those images."""
    cached = cache.load("image", identity)
    if cached is not None:
        return cached["embeddings"], cached["valid"]
    chunks, valid, batch = [], [], []
    with tqdm(total=count, desc="images", unit="image", leave=False) as bar:
        for index, data in enumerate(images):
            image = decode(data)
            if image is not None:
                batch.append(image)
                valid.append(index)
            if len(batch) == batch_size:
                chunks.append(clip.embed_image(batch).cpu())
                batch = []
            bar.update(1)
    if batch:
        chunks.append(clip.embed_image(batch).cpu())
    embeddings = torch.cat(chunks) if chunks else torch.zeros(0, clip.model.config.projection_dim)
    valid = torch.tensor(valid, dtype=torch.long)
    cache.save("image", identity, {"embeddings": embeddings, "valid": valid})
    return embeddings, valid
