"""Reading weight files safely and loading them strictly.

safetensors is preferred; pickled ``.bin`` files are read only with
``torch.load(weights_only=True)``, which refuses arbitrary objects. Loading is strict
because a silently dropped tensor is how AltDiffusion-m18 produced blurry, off-prompt
images in older diffusers (FlagAI issue 312): every missing, unexpected or mis-shaped key
that matters is an error naming the keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from altdiffusion.errors import CheckpointError

# Keys present in published files that no module here uses, on purpose.
ALWAYS_IGNORED = (
    r"(^|\.)pooler\.",  # XLM-R pooler: AltCLIP/AltDiffusion pool by CLS via `transformation`
    r"(^|\.)position_ids$",  # a buffer older transformers saved
    r"^logit_scale$",  # saved in some text-encoder files, meaningless there
)


def find_weight_file(folder: Path, stems: Iterable[str]) -> Path:
    """The weight file in ``folder``: ``<stem>.safetensors`` first, then sharded, then ``.bin``."""
    stems = list(stems)
    candidates = []
    for stem in stems:
        candidates += [f"{stem}.safetensors", f"{stem}.safetensors.index.json"]
    for stem in stems:
        candidates += [f"{stem}.bin", f"{stem}.bin.index.json"]
    for name in candidates:
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(
        f"no weights in {folder}: expected one of {', '.join(candidates[:2] + candidates[-2:])}. "
        "The download may be incomplete; fetch the folder again."
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a weight file (or of the shards an ``*.index.json`` names), on CPU."""
    if path.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: unreadable shard index ({err})") from None
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_state_dict(path.parent / shard))
        return state
    if not path.is_file():
        raise CheckpointError(f"{path}: weight file is missing")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise unreadable_safetensors(path, err) from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=False)
    except Exception as err:  # pickle errors come in many types; all mean the same to the user
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        detail = (
            f"it holds a Python object ({refused[1]}), refused for safety"
            if refused
            else (text.strip().splitlines() or [type(err).__name__])[0]
        )
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch weight file with weights_only=True ({detail}). It is corrupt, "
            "truncated, or contains objects other than tensors; re-download it or convert it to safetensors."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a mapping of names to tensors")
    return state


def unreadable_safetensors(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"{path}: not a readable safetensors file ({err}); it is probably truncated or "
        "corrupt. Delete it and download or convert it again."
    )


def load_strict(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    where: str,
    ignore: Iterable[str] = (),
    hints: dict[str, str] | None = None,
) -> None:
    """Copy ``state`` into ``module``; any key mismatch that matters is one CheckpointError.

    ``ignore`` holds regular expressions for unexpected keys that may be dropped. ``hints``
    maps a regular expression to advice shown when a missing or unexpected key matches it.
    """
    patterns = [re.compile(p) for p in (*ALWAYS_IGNORED, *ignore)]
    expected = module.state_dict()
    unexpected = sorted(k for k in state if k not in expected and not any(p.search(k) for p in patterns))
    missing = sorted(k for k in expected if k not in state)
    wrong_shape = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    )
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape (file != config)", wrong_shape),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        advice = [
            text for pattern, text in (hints or {}).items() if any(re.search(pattern, k) for k in missing + unexpected)
        ]
        raise CheckpointError(
            f"{where}: the weights do not fit the config; "
            + "; ".join(parts)
            + ". "
            + (" ".join(advice) if advice else "Check that config.json belongs to these weights.")
        )
    filtered = {k: v for k, v in state.items() if k in expected}
    module.load_state_dict(filtered, strict=True, assign=_is_meta(module))


def _is_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def rename_keys(state: dict[str, torch.Tensor], rules: Iterable[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Apply regex substitutions to every key (layout differences between library versions)."""
    compiled = [(re.compile(a), b) for a, b in rules]
    out = {}
    for key, value in state.items():
        for pattern, repl in compiled:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def save_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically (a temp file in the same folder, then rename); the temp file's
    name is unique, so that writers of one path at once do not write into or delete each other's."""
    import os
    import tempfile

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=metadata or {"format": "pt"})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
