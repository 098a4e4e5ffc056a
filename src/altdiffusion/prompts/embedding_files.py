"""Textual-inversion embedding files in the formats A1111 reads, and writing them.

An embedding is ``n`` vectors in the text encoder's token-embedding space (XLM-R's input
embeddings for AltDiffusion: 1024-d for the published models). Three layouts circulate:

    A1111 / original TI ``.pt``   {"string_to_param": {"*": (n, D)}, "name", "step",
                                   "sd_checkpoint", "sd_checkpoint_name", "string_to_token"}
    kohya ``.safetensors``        {"emb_params": (n, D)}  (our metadata: name, step, checkpoint)
    diffusers ``learned_embeds``  {"<token>": (D,) or (n, D)}  (.bin pickle or .safetensors)

Pickles are read only through ``torch.load(weights_only=True)``: a file that needs code to
unpickle (the original TI repo's ``nn.ParameterDict``) is refused, never executed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from altdiffusion.errors import CheckpointError
from altdiffusion.hashing import sha256_files

__all__ = ["EMBEDDING_SUFFIXES", "Embedding", "read_embedding", "write_embedding"]

EMBEDDING_SUFFIXES = (".pt", ".bin", ".safetensors")
_META_KEYS = ("name", "step", "sd_checkpoint", "sd_checkpoint_name")


@dataclass(eq=False)  # compared by identity: its vectors are a tensor
class Embedding:
    """One trigger word's vectors, (n, D) float32, and what its file says about its training."""

    name: str  # the trigger: the file stem, as in A1111's embeddings folder
    vectors: torch.Tensor
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    sha256: str | None = None  # of the file's bytes (A1111's "TI hashes" show its first 12 digits)

    @property
    def shape(self) -> int:
        """The vector width, as A1111 calls it."""
        return int(self.vectors.shape[-1])

    @property
    def count(self) -> int:
        """How many token positions the trigger takes."""
        return int(self.vectors.shape[0])


def read_embedding(path: str | Path) -> Embedding:
    """The embedding a file holds, named after its stem; CheckpointError says why a file is not one."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise CheckpointError(f"{path.name}: not an embedding file (expected {', '.join(EMBEDDING_SUFFIXES)})")
    data, metadata = _load(path, suffix)
    vectors = _vectors_of(data, path.name)
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or vectors.shape[0] == 0 or not vectors.is_floating_point():
        raise CheckpointError(f"{path.name}: expected (vectors, width) floats, got {tuple(vectors.shape)}")
    if not bool(torch.isfinite(vectors).all()):
        raise CheckpointError(f"{path.name}: the vectors hold NaN or infinite values")
    meta = {**metadata, **{k: data[k] for k in _META_KEYS if isinstance(data, dict) and k in data}}
    return Embedding(
        name=path.stem,
        vectors=vectors.detach().to(torch.float32),
        step=_int_or_none(meta.get("step")),
        sd_checkpoint=_str_or_none(meta.get("sd_checkpoint")),
        sd_checkpoint_name=_str_or_none(meta.get("sd_checkpoint_name")),
        sha256=sha256_files([path]),
    )


def _load(path: Path, suffix: str) -> tuple[object, dict[str, str]]:
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                return {k: fh.get_tensor(k) for k in fh.keys()}, dict(fh.metadata() or {})  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{path.name}: not a readable safetensors file ({err})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True), {}
    except Exception as err:  # an UnpicklingError for code, EOFError/RuntimeError for broken files
        raise CheckpointError(
            f"{path.name}: cannot be read safely as a torch file ({type(err).__name__}); "
            "only plain tensors and dicts are loaded (re-save it as .safetensors)"
        ) from None


def _vectors_of(data: object, filename: str) -> torch.Tensor:
    """A1111's rules: ``string_to_param`` with one entry, else a dict of exactly one tensor."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{filename}: not an embedding (expected a dict of tensors)")
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise CheckpointError(f"{filename}: string_to_param must hold exactly one entry")
        found = next(iter(params.values()))
    else:
        tensors = [v for k, v in data.items() if isinstance(v, torch.Tensor) and k not in _META_KEYS]
        if len(tensors) != 1:
            raise CheckpointError(
                f"{filename}: not an embedding: expected string_to_param, emb_params or one "
                f"{{token: tensor}}, found {len(tensors)} tensors"
            )
        found = tensors[0]
    if not isinstance(found, torch.Tensor):
        raise CheckpointError(f"{filename}: the embedding entry is not a tensor")
    return found


def _int_or_none(value) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _str_or_none(value) -> str | None:
    return None if value is None or value == "" else str(value)


def write_embedding(embedding: Embedding, path: str | Path) -> Path:
    """Write ``embedding`` atomically as ``.safetensors`` (``emb_params``) or A1111's ``.pt``."""
    path = Path(path)
    vectors = embedding.vectors.detach().cpu().contiguous()
    meta = {k: getattr(embedding, k) for k in _META_KEYS}
    if path.suffix == ".safetensors":
        from altdiffusion.models.weights import save_safetensors

        text = {k: str(v) for k, v in meta.items() if v is not None}
        save_safetensors({"emb_params": vectors}, path, {"format": "pt", **text})
        return path
    if path.suffix != ".pt":
        raise ValueError(f"embedding files are .safetensors or .pt, not {path.suffix!r}")
    # A1111's own layout; its "string_to_token" entry (265, CLIP's "*") is kept for readers that expect it.
    data = {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, **meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        torch.save(data, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
