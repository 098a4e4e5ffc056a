"""``altdiffusion convert``: a model folder <-> one ``.safetensors`` in A1111's layout.

    folder -> file    components as stored (no dtype change unless asked) -> LDM names
                      (models/ldm_layout.py) -> one safetensors file, written atomically
    file -> folder    models/single_file.py -> the published diffusers layout (pipelines/saving.py),
                      written to a temporary folder beside the target and renamed into place

Both directions only rename (and reshape the VAE's 1x1-convolution attention weights), so
folder -> file -> folder gives bit-identical tensors.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from altdiffusion.errors import InvalidInputError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def convert(source: str | Path, target: str | Path, *, dtype: str | None = None, config=None) -> Path:
    """Write ``source`` (folder, hub id, ``mini`` or single file) as ``target`` in the other layout."""
    from altdiffusion.hub import resolve_model

    if dtype is not None and dtype not in DTYPES:
        raise InvalidInputError(f"--dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    target = Path(target)
    resolved = resolve_model(source, kind="diffusion")
    if resolved.is_file():
        if target.suffix.lower() == ".safetensors" or target.is_file():
            raise InvalidInputError(f"{source} is a single file: the target {target} must be a new folder")
        return file_to_folder(resolved, target, DTYPES.get(dtype), config)
    if target.suffix.lower() != ".safetensors":
        raise InvalidInputError(f"converting the folder {resolved}: the target {target} must end in .safetensors")
    return folder_to_file(resolved, target, DTYPES.get(dtype))


def folder_to_file(folder: Path, target: Path, dtype: torch.dtype | None) -> Path:
    from altdiffusion.models.ldm_layout import ldm_state_dict
    from altdiffusion.models.weights import save_safetensors
    from altdiffusion.pipelines.components import load_components
    from altdiffusion.training.precision import stored_dtype

    c = load_components(folder, safety_checker=False)
    modules = {"unet": c.unet, "vae": c.vae, "text_encoder": c.text_encoder}
    for name, module in modules.items():
        # diffusers loads float16 weights as float32: "as stored" means the dtype on disk
        wanted = dtype or stored_dtype(folder / name)
        if wanted is not None and any(p.dtype != wanted for p in module.parameters()):
            module.to(dtype=wanted)
    save_safetensors(ldm_state_dict(c.unet, c.vae, c.text_encoder), target)
    return target


def file_to_folder(path: Path, target: Path, dtype: torch.dtype | None, config=None) -> Path:
    from altdiffusion.models.single_file import load_single_file
    from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline
    from altdiffusion.pipelines.saving import save_pipeline

    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInputError(f"{target} exists and is not an empty folder; choose a new folder")
    c = load_single_file(path, config=config)
    pipe = AltDiffusionPipeline(
        tokenizer=c.tokenizer,
        text_encoder=c.text_encoder,
        unet=c.unet,
        vae=c.vae,
        scheduler=c.scheduler,
        name=path.stem,
    )
    if dtype is not None:
        for module in pipe.modules().values():
            module.to(dtype=dtype)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_pipeline(pipe, tmp)
        if target.is_dir():
            target.rmdir()  # empty, checked above
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
