"""The configured checkpoints, by name: their folders, their UNet hashes, and the one loaded pipeline.

Models are chosen only by their configured name; a request can never point the server at
a path. ``sd-models`` lists them with A1111's ``title = "name [sha256[:10]]"``, and a client
may refer to one by title, name or hash.
"""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path
from typing import Any

import torch

from altdiffusion.errors import AltDiffusionError
from altdiffusion.hashing import model_sha256
from altdiffusion.pipelines.defaults import ModelDefaults, folder_defaults
from altdiffusion.serve.config import ServeConfig

logger = logging.getLogger("altdiffusion.serve")

AUTOMATIC_VAE = "Automatic"
OWN_VAE_CHOICES = (AUTOMATIC_VAE, "None")  # A1111's names for "the model's own VAE"


class ModelRegistry:
    """Configured name -> source, resolved folders and hashes (cached), and the loaded pipeline."""

    def __init__(self, config: ServeConfig):
        self.sources = dict(config.models)
        self.device, self.dtype, self.safety_checker = config.device, config.dtype, config.safety_checker
        self.compile, self.memory = config.compile, config.memory
        self.embeddings_dir = config.embeddings_dir  # loaded into every pipeline, for its text encoder's width
        self.current = config.default_model  # the model jobs use unless they ask for another
        self.config = config.config  # single files' architecture, when not a published one
        self.vaes = dict(config.vaes)  # A1111's sd_vae choices: name -> file or folder
        self.vae = AUTOMATIC_VAE  # the chosen one; "Automatic"/"None": each model's own
        self.pipe = None  # the loaded pipeline of ``current``, or None
        self._lock = threading.Lock()
        self._hash_locks = {name: threading.Lock() for name in self.sources}
        self._folders: dict[str, Path] = {}
        self._sha: dict[str, str | None] = {}
        self._defaults: dict[str, ModelDefaults] = {}

    def resolve_all(self) -> None:
        """Resolve every source now (downloads hub ids once, at startup), so a wrong path fails fast."""
        for name in self.sources:
            self.folder(name)

    def vae_items(self) -> list[dict[str, str]]:
        """A1111's ``sd-vae`` entries; ``filename`` is the name, never a server path."""
        return [{"model_name": name, "filename": name} for name in self.vaes]

    def set_vae(self, name: str) -> None:
        """Choose the VAE (a configured name, "Automatic" or "None"); worker thread only."""
        self.vae = name
        if self.pipe is not None:
            self.pipe.load_vae(self.vaes.get(name), name=name)

    def hash_in_background(self) -> threading.Thread:
        """Hash every model's UNet in a daemon thread, so ``sd-models`` answers quickly later."""
        thread = threading.Thread(
            target=lambda: [self.sha256(n) for n in self.sources], name="altdiffusion-hash", daemon=True
        )
        thread.start()
        return thread

    def folder(self, name: str) -> Path:
        from altdiffusion.hub import resolve_model

        with self._lock:
            if name not in self._folders:
                self._folders[name] = resolve_model(self.sources[name], kind="diffusion")
            return self._folders[name]

    def defaults(self, name: str) -> ModelDefaults:
        """What a request for model ``name`` runs with when it leaves a setting out (read from its configs)."""
        folder = self.folder(name)
        with self._lock:
            if name not in self._defaults:
                self._defaults[name] = folder_defaults(folder)
            return self._defaults[name]

    def sha256(self, name: str) -> str | None:
        with self._hash_locks[name]:  # one reader of a multi-GB file at a time
            with self._lock:
                if name in self._sha:
                    return self._sha[name]
            try:
                value = model_sha256(self.folder(name))
            except (AltDiffusionError, OSError) as exc:
                logger.warning("cannot hash model %r: %s", name, exc)
                value = None
            with self._lock:
                self._sha[name] = value
            return value

    def title(self, name: str) -> str:
        sha = self.sha256(name)
        return f"{name} [{sha[:10]}]" if sha else name

    def items(self) -> list[dict[str, Any]]:
        """A1111's ``sd-models`` entries; ``filename`` is the name, never a server path. Beyond A1111's
        fields, each says what a request that leaves a setting out gets, and prompts the model draws well."""
        out = []
        for name in self.sources:
            sha = self.sha256(name)
            defaults = self.defaults(name)
            out.append(
                {
                    "title": self.title(name),
                    "model_name": name,
                    "hash": sha[:10] if sha else None,
                    "sha256": sha,
                    "filename": name,
                    "config": None,
                    "defaults": defaults.settings(),
                    "examples": [{"lang": lang, "prompt": prompt} for lang, prompt in defaults.examples],
                }
            )
        return out

    def lookup(self, text: str) -> str | None:
        """The configured name a client's checkpoint title/name/hash refers to, or None."""
        text = text.strip()
        if text in self.sources:
            return text
        for name in self.sources:
            sha = self.sha256(name)
            if text == self.title(name) or (sha and text.lower() in (sha[:10], sha[:8], sha)):
                return name
        return None

    def refresh(self) -> None:
        with self._lock:
            self._folders.clear()
            self._sha.clear()
            self._defaults.clear()

    def load(self, name: str | None = None):
        """Load ``name`` (default: the current one) unless it is already loaded; worker thread only."""
        from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline

        name = name or self.current
        if self.pipe is not None and name == self.current:
            return self.pipe
        self.unload()
        pipe = AltDiffusionPipeline.from_pretrained(
            self.folder(name),
            device=self.device,
            dtype=self.dtype,
            safety_checker=self.safety_checker,
            name=name,
            config=self.config,
        )
        pipe.load_vae(self.vaes.get(self.vae), name=self.vae)
        self.load_embeddings(pipe)
        self._apply_modes(pipe)  # last: offload hooks and compiled modules wrap the final components
        self.pipe, self.current = pipe, name
        logger.info("loaded model %r on %s (%s, memory %s)", name, pipe.device, pipe.dtype, self.memory)
        return pipe

    def _apply_modes(self, pipe) -> None:
        """``--memory`` and ``--compile``; speed mode warms up at the model's native size, batch 1."""
        d = pipe.defaults
        warm_up = dict(prompt="", height=d.height, width=d.width, guidance_scale=d.cfg_scale)
        # Not frozen: a prompt's <lora:...> merges per job, and frozen graphs would recompile twice per such job.
        seconds = pipe.enable_modes(self.memory, self.compile, warm_up, freeze=False)
        if seconds is not None:
            logger.info(
                "speed mode: compiled %dx%d, batch 1 in %.1f s (cache %s)",
                d.width,
                d.height,
                seconds,
                pipe.speed.cache_dir,
            )

    def load_embeddings(self, pipe) -> None:
        """(Re)read ``--embeddings-dir`` for ``pipe``; files that do not fit it are listed as skipped."""
        if self.embeddings_dir is None:
            return
        database = pipe.load_embeddings(self.embeddings_dir)
        for name, skipped in database.skipped.items():
            logger.warning("embedding %r skipped: %s", name, skipped.reason)

    def unload(self) -> None:
        if self.pipe is None:
            return
        self.pipe = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
