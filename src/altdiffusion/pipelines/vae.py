"""Swapping the VAE, as A1111's "SD VAE" setting does.

A VAE comes as a single file (A1111's ``.safetensors``/``.pt``/``.ckpt``: LDM names, bare
``encoder.*``/``decoder.*`` or under ``first_stage_model.``; diffusers names work too) or as
a diffusers ``AutoencoderKL`` folder. A single file takes the architecture of the model's own
VAE (A1111 loads it into the model's ``first_stage_model``). Its identity in the infotext is
A1111's: ``VAE hash`` (sha256[:10] of the file) and ``VAE`` (the file name).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from altdiffusion.errors import CheckpointError, InvalidInputError
from altdiffusion.models.ldm_layout import VAE_PREFIX


@dataclass(frozen=True)
class VaeSource:
    name: str  # the file or folder name, A1111's "VAE"
    sha256: str

    def infotext(self) -> dict[str, str]:
        return {"VAE hash": self.sha256[:10], "VAE": self.name}


def load_vae(source: str | Path, like, name: str | None = None) -> tuple[torch.nn.Module, VaeSource]:
    """The VAE at ``source``; ``like`` (the model's VAE) gives a single file's architecture;
    ``name`` is its "VAE" in infotexts (default: the file or folder name)."""
    path = Path(source).expanduser()
    if path.is_dir():
        vae, sha = _vae_folder(path)
        return vae, VaeSource(name or path.name, sha)
    if not path.is_file():
        raise InvalidInputError(f"VAE {source}: no such file or folder (give an A1111 VAE file or a diffusers folder)")
    from altdiffusion.hashing import file_sha256
    from altdiffusion.models.single_file import CheckpointFile, vae_from_ldm

    ckpt = CheckpointFile(path, like.dtype)
    state = ckpt.take(VAE_PREFIX if any(k.startswith(VAE_PREFIX) for k in ckpt.names()) else "")
    if not any(k.startswith(("encoder.", "decoder.")) for k in state):
        raise CheckpointError(f"VAE {path}: no encoder.*/decoder.* weights; this is not a VAE file")
    if any(".down_blocks." in k or ".up_blocks." in k for k in state):
        vae = _vae_from_diffusers_names(state, like.config, str(path))
    else:
        vae = vae_from_ldm(state, dict(like.config), str(path))
    return vae.eval(), VaeSource(name or path.name, file_sha256(path))


def _vae_folder(folder: Path):
    from diffusers import AutoencoderKL

    from altdiffusion.hashing import sha256_files
    from altdiffusion.pipelines.components import from_diffusers

    vae = from_diffusers(AutoencoderKL, folder, "VAE")
    return vae.eval(), sha256_files(sorted(folder.glob("diffusion_pytorch_model*")))


def _vae_from_diffusers_names(state: dict, config, where: str):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    from altdiffusion.models.weights import load_strict

    with init_empty_weights():
        vae = AutoencoderKL.from_config(config)
    load_strict(vae, state, where=f"VAE {where}")
    return vae
