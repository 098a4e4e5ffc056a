"""The textual-inversion embeddings a model offers, by trigger word (A1111's embeddings folder).

Every file of the folder whose vectors fit the model is *loaded* under its file stem; every
other file is *skipped* with the reason (wrong width, more vectors than a 75-token chunk holds,
not an embedding, unreadable), never a crash. ``GET /sdapi/v1/embeddings`` lists both.

A trigger is found in the prompt's text, not among its tokens as A1111 does with CLIP's BPE:
XLM-R's sentencepiece tokenizes a word differently after a space, after a Chinese character or
inside a bracket, so the same trigger would match in one place and not in another. A trigger
matches where no ASCII letter, digit or ``_`` touches it on either side; ``mystyle`` in
``一张mystyle的画`` and in ``(mystyle:1.2)`` matches, in ``mystyles`` it does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from altdiffusion.errors import AltDiffusionError
from altdiffusion.prompts.embedding_files import EMBEDDING_SUFFIXES, Embedding, read_embedding

__all__ = ["EmbeddingDatabase", "Skipped"]

#: The most vectors one trigger may have: they must fit in one chunk of 75 content tokens.
MAX_VECTORS = 75


@dataclass(frozen=True)
class Skipped:
    """A file in the folder that is not used, and why (``embedding`` None: it could not be read)."""

    reason: str
    embedding: Embedding | None = None


class EmbeddingDatabase:
    """Trigger word -> :class:`Embedding` for one model, plus the files it skipped."""

    def __init__(self, loaded: Iterable[Embedding] = (), skipped: dict[str, Skipped] | None = None):
        self.loaded: dict[str, Embedding] = {}
        self.skipped: dict[str, Skipped] = dict(skipped or {})
        self._pattern: re.Pattern | None = None
        for embedding in loaded:
            self.add(embedding)

    @classmethod
    def from_folder(cls, folder: str | Path, width: int, max_vectors: int = MAX_VECTORS) -> EmbeddingDatabase:
        """Every embedding file under ``folder`` (subfolders too) whose vectors are ``width`` wide."""
        folder = Path(folder)
        if not folder.is_dir():
            raise AltDiffusionError(f"embeddings folder {folder} is not a folder (--embeddings-dir)")
        database = cls()
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EMBEDDING_SUFFIXES)
        for path in files:
            if path.name.startswith("."):  # a temporary file of an atomic write
                continue
            reason, embedding = _check(path, width, max_vectors)
            if reason is None and path.stem in database.loaded:
                reason = f"another file already defines {path.stem!r}"
            if reason is None:
                database.add(embedding)
            else:
                database.skipped[path.stem] = Skipped(reason, embedding)
        return database

    def add(self, embedding: Embedding) -> None:
        self.loaded[embedding.name] = embedding
        self._pattern = None

    # -- prompts ---------------------------------------------------------------------------------

    def split(self, text: str) -> list[str | Embedding]:
        """``text`` as its pieces of plain text and the embeddings its triggers name, in order."""
        pattern = self._trigger_pattern()
        if pattern is None:
            return [text]
        pieces: list[str | Embedding] = []
        start = 0
        for match in pattern.finditer(text):
            if match.start() > start:
                pieces.append(text[start : match.start()])
            pieces.append(self.loaded[match.group(0)])
            start = match.end()
        if start < len(text) or not pieces:
            pieces.append(text[start:])
        return pieces

    def used_in(self, texts: Iterable[str]) -> list[Embedding]:
        """The embeddings the texts name, each once, in order of first use."""
        used: dict[str, Embedding] = {}
        for text in texts:
            for piece in self.split(text or ""):
                if isinstance(piece, Embedding):
                    used.setdefault(piece.name, piece)
        return list(used.values())

    def infotext_hashes(self, texts: Iterable[str]) -> str | None:
        """A1111's ``TI hashes`` value: ``name: sha256[:12]`` of each file used, names without ``:`` or ``,``."""
        rows = [f"{e.name.replace(':', '').replace(',', '')}: {e.sha256[:12]}" for e in self.used_in(texts) if e.sha256]
        return ", ".join(rows) or None

    def _trigger_pattern(self) -> re.Pattern | None:
        if self._pattern is None and self.loaded:
            names = sorted(self.loaded, key=len, reverse=True)  # the longest trigger wins
            alternatives = "|".join(re.escape(name) for name in names)
            self._pattern = re.compile(rf"(?<![0-9A-Za-z_])(?:{alternatives})(?![0-9A-Za-z_])")
        return self._pattern

    # -- the API ---------------------------------------------------------------------------------

    def listing(self) -> dict[str, dict]:
        """A1111's ``/sdapi/v1/embeddings`` body; a skipped entry also says why (``reason``)."""
        return {
            "loaded": {name: _describe(e) for name, e in self.loaded.items()},
            "skipped": {name: {**_describe(s.embedding), "reason": s.reason} for name, s in self.skipped.items()},
        }


def _describe(embedding: Embedding | None) -> dict:
    if embedding is None:
        return {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None, "vectors": None}
    return {
        "step": embedding.step,
        "sd_checkpoint": embedding.sd_checkpoint,
        "sd_checkpoint_name": embedding.sd_checkpoint_name,
        "shape": embedding.shape,
        "vectors": embedding.count,
    }


def _check(path: Path, width: int, max_vectors: int) -> tuple[str | None, Embedding | None]:
    """(why ``path`` cannot be used, or None; its embedding when it could be read)."""
    if path.stat().st_size == 0:
        return "empty file", None
    try:
        embedding = read_embedding(path)
    except AltDiffusionError as err:
        return str(err), None
    if embedding.shape != width:
        return (
            f"{path.name}: its vectors are {embedding.shape}-d but this model's token embeddings are {width}-d "
            "(made for another text encoder)",
            embedding,
        )
    if embedding.count > max_vectors:
        return f"{path.name}: {embedding.count} vectors; at most {max_vectors} fit in one prompt chunk", embedding
    return None, embedding
