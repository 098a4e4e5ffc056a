"""sha256 of weight files, read in blocks (checkpoints are gigabytes), as A1111 and model sites hash them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

BLOCK = 1 << 20


def update_from_file(digest, path: str | Path, *, offset: int = 0) -> None:
    """Feed ``path``'s bytes from ``offset`` on into ``digest``."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        for block in iter(lambda: fh.read(BLOCK), b""):
            digest.update(block)


def sha256_files(paths: Iterable[str | Path]) -> str:
    """Hex sha256 of the files' bytes, concatenated in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        update_from_file(digest, path)
    return digest.hexdigest()


def unet_weight_files(folder: str | Path) -> list[Path]:
    """A diffusers folder's UNet weight files (sharded or not), in a stable order."""
    return sorted(Path(folder).glob("unet/diffusion_pytorch_model*"))


def unet_sha256(folder: str | Path) -> str | None:
    """sha256 of a model folder's UNet weights: the model's identity in infotexts and ``sd-models``."""
    files = unet_weight_files(folder)
    return sha256_files(files) if files else None


def safetensors_body_sha256(path: str | Path) -> str:
    """sha256 of a safetensors file after its JSON header (A1111's "addnet" hash of LoRAs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        header = int.from_bytes(fh.read(8), "little")
    update_from_file(digest, path, offset=8 + header)
    return digest.hexdigest()


def sidecar_path(path: str | Path) -> Path:
    """Where a file's sha256 is cached: ``model.safetensors`` -> ``model.safetensors.sha256.json``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256.json")


def file_sha256(path: str | Path) -> str:
    """sha256 of a whole file (A1111's "Model hash" is its first 10 digits), computed once: the
    digest is cached in a sidecar JSON and trusted while the file's size and mtime are unchanged."""
    import json
    import os

    path = Path(path)
    stat = path.stat()
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    sidecar = sidecar_path(path)
    try:
        cached = json.loads(sidecar.read_text())
        if {k: cached.get(k) for k in stamp} == stamp and len(cached.get("sha256", "")) == 64:
            return cached["sha256"]
    except (OSError, ValueError, AttributeError):
        pass  # no cache yet, or an unreadable one: hash the file
    digest = sha256_files([path])
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    try:
        tmp.write_text(json.dumps({"sha256": digest, **stamp}) + "\n")
        os.replace(tmp, sidecar)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only model folder: the hash is just not cached
    return digest


def model_sha256(source: str | Path) -> str | None:
    """A model's identity in infotexts and ``sd-models``: a single file's own sha256 (as A1111), a folder's UNet files'."""
    source = Path(source)
    return file_sha256(source) if source.is_file() else unet_sha256(source)
