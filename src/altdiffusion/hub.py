"""Turning a model name into a folder: local path, bundled model, or Hugging Face hub id.

Hub ids go through ``huggingface_hub.snapshot_download`` and its normal cache, so a model
downloaded once (by us, diffusers or ``hf download``) is found offline. When a model is
neither on disk nor reachable, the error says so and how to fix it; there is never a silent
fallback to another model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from altdiffusion.errors import ModelNotFoundError

M2_LANGUAGES = ("en", "zh")
M9_LANGUAGES = ("en", "zh", "es", "fr", "ru", "ja", "ko", "ar", "it")
M18_LANGUAGES = (
    "en",
    "zh",
    "ja",
    "th",
    "ko",
    "hi",
    "uk",
    "ar",
    "tr",
    "vi",
    "pl",
    "nl",
    "pt",
    "it",
    "es",
    "de",
    "fr",
    "ru",
)


@dataclass(frozen=True)
class KnownCheckpoint:
    repo_id: str
    family: str  # "clip" or "diffusion"
    languages: tuple[str, ...]


KNOWN_CHECKPOINTS = {
    c.repo_id: c
    for c in (
        KnownCheckpoint("BAAI/AltCLIP", "clip", M2_LANGUAGES),  # XLM-R large + CLIP ViT-L/14, 768-d
        KnownCheckpoint("BAAI/AltCLIP-m9", "clip", M9_LANGUAGES),  # XLM-R large + CLIP ViT-L/14, 768-d
        KnownCheckpoint("BAAI/AltCLIP-m18", "clip", M18_LANGUAGES),  # XLM-R large + OpenCLIP ViT-H/14, 1024-d
        KnownCheckpoint("BAAI/AltDiffusion", "diffusion", M2_LANGUAGES),  # SD v1.4 UNet, last layer, 768-d
        KnownCheckpoint("BAAI/AltDiffusion-m9", "diffusion", M9_LANGUAGES),  # SD v1.4 UNet, last layer, 768-d
        # SD v2.1-base UNet, penultimate-layer conditioning, 1024-d
        KnownCheckpoint("BAAI/AltDiffusion-m18", "diffusion", M18_LANGUAGES),
    )
}

# Files a pipeline or CLIP folder needs; skips Flax/TF/ONNX duplicates and `.ckpt` files.
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.model", "*.txt"]
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def bundled_model_dir(kind: str) -> Path:
    """Folder of the bundled mini model (``kind`` is "clip" or "diffusion")."""
    return Path(__file__).parent / "mini" / "weights" / ("AltCLIP-mini" if kind == "clip" else "AltDiffusion-mini")


def resolve_model(name_or_path: str | Path, *, kind: str | None = None) -> Path:
    """A local folder holding the model ``name_or_path`` names, or a single checkpoint file.

    Order: an existing path (a folder, or a ``.safetensors``/``.ckpt``/``.pt`` file in A1111's
    layout, see models/single_file.py); ``"mini"`` (the bundled model, ``kind`` picks CLIP or diffusion);
    a hub id (``owner/name``) from the hub cache, downloading when online.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() and path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ModelNotFoundError(
                f"{path} is neither a model folder (holding model_index.json or config.json) nor a single-file "
                f"checkpoint ({', '.join(SINGLE_FILE_SUFFIXES)})"
            )
        if not path.is_dir() and kind == "clip":
            raise ModelNotFoundError(f"{path} is a file; an AltCLIP model is a folder (holding config.json)")
        return path.resolve()
    if text == "mini":
        folder = bundled_model_dir(kind or "diffusion")
        if not (folder / ("model_index.json" if (kind or "diffusion") == "diffusion" else "config.json")).is_file():
            raise ModelNotFoundError(
                f"the bundled mini model is not in this installation ({folder} is missing); "
                "rebuild it with `altdiffusion mini build` or reinstall altdiffusion"
            )
        return folder
    if not _REPO_ID.match(text):
        raise ModelNotFoundError(
            f"no folder {text!r} exists, and it is not a hub id of the form owner/name "
            f"(known: {', '.join(KNOWN_CHECKPOINTS)}, or 'mini')"
        )
    return _from_hub(text)


def tokenizer_files(repo_id: str, subfolder: str) -> Path:
    """The tokenizer folder of a hub model (cache first), for a single file that carries none."""
    prefix = f"{subfolder}/" if subfolder else ""
    folder = _from_hub(repo_id, [f"{prefix}*.json", f"{prefix}*.model", f"{prefix}*.txt"])
    return folder / subfolder if subfolder else folder


def _from_hub(repo_id: str, patterns: list[str] = DOWNLOAD_PATTERNS) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"{repo_id!r} does not exist on the Hugging Face hub (or is private: log in with `hf auth login`)"
        ) from None
    except GatedRepoError:
        raise ModelNotFoundError(
            f"{repo_id!r} is gated: accept its licence on the hub and log in with `hf auth login`"
        ) from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError, OSError) as err:
        cache = constants.HF_HUB_CACHE
        why = (
            "offline mode is on (HF_HUB_OFFLINE=1)"
            if constants.HF_HUB_OFFLINE
            else f"the hub cannot be reached ({type(err).__name__})"
        )
        raise ModelNotFoundError(
            f"model {repo_id!r} is not in the Hugging Face cache ({cache}) and {why}. "
            f"On a machine with internet run `hf download {repo_id}` and copy the cache folder here, "
            "or pass the path of a local copy of the model folder."
        ) from None
