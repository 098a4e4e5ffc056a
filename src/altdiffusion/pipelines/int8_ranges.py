"""On-disk cache of the int8 UNet's calibrated activation ranges, so a new process skips calibrating.

Calibrating a shape bucket (pipelines/int8.py) runs the observed float UNet over a fixed DDIM
trajectory: about 47 s of a full-size 256x256 bucket's warm-up here (benchmarks/README.md). Its
result, the observers' state (per-tensor histograms and ranges, per-channel weight ranges: 5.4 MB
for a full-size UNet), depends only on what goes in: the UNet's weights, the calibration's
conditioning, its recipe, the bucket, and the torch and torchao that ran it. A file keyed by a
SHA-256 of all of these therefore holds the same ranges a calibration would record, and a graph
converted from them is bit-identical (tests/pipelines/test_int8.py). Weights changed in any way (a
LoRA merged) give another key, so a stale file is never read. Files are safetensors (no unpickling),
written whole or not at all; the folder keeps the ``max_files`` most recently used (a file per
weights and bucket, 5.4 MB each at full size). torch's quantization lacks such a cache (its
observers are saved only inside a whole model).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from altdiffusion.models.weights import save_safetensors

OBSERVER_PREFIX = "activation_post_process_"  # what prepare_pt2e names the observer modules it inserts
logger = logging.getLogger(__name__)


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 of ``module``'s state: every tensor's name, dtype, shape and bytes (about 1 s per GB)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(_raw_bytes(tensor))
    return digest.hexdigest()


def calibration_key(weights: str, recipe: dict, conditioning: list[torch.Tensor]) -> str:
    """The cache key: the UNet's :func:`weights_digest`, the recipe (a JSON-able dict: bucket, steps,
    scheduler, versions) and the calibration's conditioning tensors."""
    digest = hashlib.sha256(weights.encode())
    digest.update(json.dumps(recipe, sort_keys=True, default=str).encode())
    for tensor in conditioning:
        digest.update(_raw_bytes(tensor.float()))
    return digest.hexdigest()


def _raw_bytes(tensor: torch.Tensor):
    """The tensor's memory as bytes, whatever its dtype (numpy has no bfloat16)."""
    return tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def observer_state(observed: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The observers' part of a prepared graph's state: what calibration changes."""
    return {name: tensor for name, tensor in observed.state_dict().items() if name.startswith(OBSERVER_PREFIX)}


class RangeCache:
    """Calibrated observer states in ``directory``, one safetensors file per key, the ``max_files`` most
    recently read or written kept."""

    def __init__(self, directory: str | Path, max_files: int = 64):
        self.directory = Path(directory)
        self.max_files = max_files

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.safetensors"

    def read(self, key: str, observed: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """The key's observer state, to load into ``observed`` (a graph just prepared); None where there
        is none, or none with exactly ``observed``'s observers (warned)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            state = load_file(str(path))
        except (OSError, SafetensorError) as error:
            return self.unusable(key, error)
        names = set(observer_state(observed))
        if set(state) != names:
            return self.unusable(key, f"it holds {len(state)} observer tensors, the graph has {len(names)}")
        # The modules' state versions, which a file does not carry: without them torchao's observers
        # take the state for their first version's and put float32's eps in place of the quantizer's.
        state = OrderedDict(state)
        state._metadata = observed.state_dict()._metadata
        with contextlib.suppress(OSError):  # a folder shared read-only: only the pruning order suffers
            os.utime(path)  # recently used: kept when the folder is pruned
        return state

    def unusable(self, key: str, why) -> None:
        """Warn that the key's file cannot be used (it is calibrated again and overwritten)."""
        logger.warning("int8: ignoring the cached calibration %s (%s); calibrating again", self.path(key), why)

    def save(self, key: str, observed: torch.nn.Module) -> None:
        """Write ``observed``'s observer state under ``key``, atomically (a reader never sees half a
        file). A folder that cannot be written costs a warning."""
        # Cloned: an observer shared by several inputs appears under each name, and safetensors stores no aliases.
        state = {name: tensor.clone() for name, tensor in observer_state(observed).items()}
        try:
            save_safetensors(state, self.path(key))
            self._prune()
        except OSError as error:
            logger.warning("int8: could not cache the calibration in %s (%s); the next process calibrates again",
                           self.directory, error)  # fmt: skip

    def _prune(self) -> None:
        """Delete all but the ``max_files`` most recently used files."""
        used = []
        for file in self.directory.glob("*.safetensors"):
            with contextlib.suppress(FileNotFoundError):  # another process pruned it first
                used.append((file.stat().st_mtime, file))
        for _, stale in sorted(used, reverse=True)[self.max_files :]:
            stale.unlink(missing_ok=True)
