"""Loading one-file checkpoints in A1111's LDM layout (``.safetensors``, ``.ckpt``, ``.pt``).

What the file is, decided as A1111 does (sd_models_config.py): an XLM-R text encoder
(``cond_stage_model.roberta.embeddings.word_embeddings.weight``) makes it AltDiffusion, and m18
when ``cond_stage_model.transformation.weight`` has 1024 rows (or the file has m18's
``transformation_pre``); a CLIP text encoder (``cond_stage_model.transformer.*``) makes it
Stable Diffusion 1.x. Anything else is refused with what was found.

The architectures (configs) of the published checkpoints ship in ``models/configs/``; a
``config`` folder (any diffusers folder of the right shapes) covers others. UNet and VAE keys go
through diffusers' own LDM converters. EMA copies (``model_ema.*``) are ignored, as A1111's
inference configs (``use_ema: False``) do. Modules are built on the meta device and take the
file's tensors by assignment, so loading holds one copy of the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from altdiffusion.errors import CheckpointError, ModelNotFoundError
from altdiffusion.hub import SINGLE_FILE_SUFFIXES
from altdiffusion.models.ldm_layout import (
    CLIP_PREFIX,
    TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    unet_ldm_name,
    vae_ldm_name,
)
from altdiffusion.models.loading import read_json
from altdiffusion.models.weights import read_state_dict, unreadable_safetensors

CONFIGS = Path(__file__).parent / "configs"
ARCHITECTURES = {"m9": "altdiffusion-m9", "m18": "altdiffusion-m18", "sd": "stable-diffusion-v1"}


class CheckpointFile:
    """A single file's tensors, handed out by name prefix and cast to ``dtype`` as they are read.

    safetensors tensors are memory-mapped, and the pages read stay in RSS while the file is
    mapped: the file is therefore opened for one batch of tensors at a time, so a float16 file
    loaded as float32 holds the float32 model plus one batch, not also the whole float16 file.
    Pickles (``.ckpt``/``.pt``) are read whole, only with ``torch.load(weights_only=True)``.
    """

    BATCH = 32  # tensors per opening of a safetensors file

    def __init__(self, path: Path, dtype: torch.dtype | None = None):
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise CheckpointError(f"{path}: not a checkpoint file (expected {', '.join(SINGLE_FILE_SUFFIXES)})")
        self.path, self.dtype = path, dtype
        self._state: dict[str, torch.Tensor] | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        if path.suffix.lower() == ".safetensors":
            with self._open() as fh:
                self._shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
        else:
            self._state = read_state_dict(path)
            self._shapes = {k: tuple(v.shape) for k, v in self._state.items()}

    def _open(self):
        from safetensors import SafetensorError, safe_open

        try:
            return safe_open(str(self.path), framework="pt")
        except (SafetensorError, OSError, ValueError) as err:
            raise unreadable_safetensors(self.path, err) from None

    def names(self) -> list[str]:
        return list(self._shapes)

    def shape(self, key: str) -> tuple[int, ...] | None:
        return self._shapes.get(key)

    def take(self, prefix: str) -> dict[str, torch.Tensor]:
        """Every tensor under ``prefix`` (named without it), cast; they leave this object."""
        keys = [k for k in self._shapes if k.startswith(prefix)]
        for key in keys:
            del self._shapes[key]
        if self._state is not None:
            return {k[len(prefix) :]: self._cast(self._state.pop(k)) for k in keys}
        out = {}
        for start in range(0, len(keys), self.BATCH):
            with self._open() as fh:
                for key in keys[start : start + self.BATCH]:
                    out[key[len(prefix) :]] = self._cast(fh.get_tensor(key))
        return out

    def _cast(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.dtype is None or not tensor.is_floating_point() or tensor.dtype == self.dtype:
            return tensor
        return tensor.to(self.dtype)


def detect_architecture(ckpt: CheckpointFile, where: str) -> str:
    """``"m9"`` (AltDiffusion / -m9), ``"m18"`` or ``"sd"`` (Stable Diffusion 1.x)."""
    keys = set(ckpt.names())
    if not any(k.startswith(UNET_PREFIX) for k in keys):
        found = ", ".join(sorted({k.split(".")[0] for k in keys})[:6]) or "no tensors"
        raise CheckpointError(
            f"{where}: unknown architecture: no model.diffusion_model.* (UNet) weights (top-level names: {found}). "
            "Single files must be in A1111's LDM layout; a VAE file goes to --vae, a LoRA to --lora."
        )
    if f"{TEXT_PREFIX}roberta.embeddings.word_embeddings.weight" in keys:
        rows = (ckpt.shape(f"{TEXT_PREFIX}transformation.weight") or (0,))[0]
        return "m18" if rows == 1024 or f"{TEXT_PREFIX}transformation_pre.weight" in keys else "m9"
    if f"{CLIP_PREFIX}text_model.embeddings.token_embedding.weight" in keys:
        return "sd"
    raise CheckpointError(
        f"{where}: unknown architecture: the text encoder is neither XLM-R (AltDiffusion, cond_stage_model.roberta.*) "
        "nor SD-1.x's CLIP (cond_stage_model.transformer.*); SD-2/SDXL files are not supported"
    )


def config_folder(architecture: str, config: str | Path | None) -> Path:
    """The folder whose configs describe the file: ``config`` or the packaged published architecture."""
    if config is None:
        return CONFIGS / ARCHITECTURES[architecture]
    folder = Path(config).expanduser()
    if not (folder / "unet" / "config.json").is_file():
        raise ModelNotFoundError(
            f"--config {folder}: expected a diffusers model folder (with unet/config.json, vae/config.json, "
            "text_encoder/config.json, scheduler/ and tokenizer/)"
        )
    return folder


def check_consumed(ldm: dict[str, torch.Tensor], expected: set[str], what: str, where: str) -> None:
    """diffusers' converters skip names they do not know; refuse a file with such names instead."""
    unknown = sorted(set(ldm) - expected)
    if unknown:
        shown = ", ".join(unknown[:6]) + (f", ... ({len(unknown)} in all)" if len(unknown) > 6 else "")
        raise CheckpointError(f"{where}: {what} weights that this architecture does not have: {shown}")


def unet_from_ldm(ldm: dict[str, torch.Tensor], config: dict, where: str):
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    from altdiffusion.models.weights import load_strict

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
    check_consumed(ldm, {unet_ldm_name(k, unet.config) for k in unet.state_dict()}, "UNet", where)
    state = convert_ldm_unet_checkpoint({UNET_PREFIX + k: v for k, v in ldm.items()}, dict(unet.config))
    load_strict(unet, state, where=f"UNet of {where}", hints=SHAPE_HINT)
    return unet


def vae_from_ldm(ldm: dict[str, torch.Tensor], config: dict, where: str):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from altdiffusion.models.weights import load_strict

    with init_empty_weights():
        vae = AutoencoderKL.from_config(config)
    ldm = {k: v for k, v in ldm.items() if not k.startswith("loss.")}  # training-only discriminator/LPIPS
    check_consumed(ldm, {vae_ldm_name(k, vae.config) for k in vae.state_dict()}, "VAE", where)
    state = convert_ldm_vae_checkpoint(ldm, dict(vae.config))
    load_strict(vae, state, where=f"VAE of {where}", hints=SHAPE_HINT)
    return vae


SHAPE_HINT = {
    r".": "The file's shapes differ from the architecture it was detected as; pass --config with a diffusers "
    "folder of its architecture (e.g. the folder it was converted from)."
}


def text_encoder_from_ldm(ckpt: CheckpointFile, folder: Path, architecture: str, where: str):
    raw = read_json(folder / "text_encoder" / "config.json")
    if architecture == "sd":
        return clip_text_from_ldm(ckpt.take(CLIP_PREFIX), raw, where)
    from altdiffusion.models.loading import text_encoder_from_state

    return text_encoder_from_state(raw, ckpt.take(TEXT_PREFIX), where=f"text encoder of {where}", hints=SHAPE_HINT)


def clip_text_from_ldm(ldm: dict[str, torch.Tensor], raw: dict, where: str):
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig, CLIPTextModel

    from altdiffusion.models.clip_text import CLIPTextConditioning
    from altdiffusion.models.weights import load_strict

    with init_empty_weights():
        model = CLIPTextModel(CLIPTextConfig.from_dict(raw))
    if not any(k.startswith("text_model.") for k in model.state_dict()):  # transformers 5 dropped the level
        ldm = {k.removeprefix("text_model."): v for k, v in ldm.items()}
    load_strict(model, ldm, where=f"text encoder of {where}", hints=SHAPE_HINT)
    return CLIPTextConditioning(model).eval()


def load_single_file(path: Path, *, config: str | Path | None = None, dtype: torch.dtype | None = None):
    """The components of a single-file checkpoint (no safety checker: A1111 files carry none),
    in ``dtype`` (None: as stored)."""
    from altdiffusion.pipelines.components import Components, fix_legacy_sample_size, load_scheduler

    where = str(path)
    ckpt = CheckpointFile(path, dtype)
    architecture = detect_architecture(ckpt, where)
    folder = config_folder(architecture, config)
    index = read_json(folder / "model_index.json") if (folder / "model_index.json").is_file() else {}
    tokenizer = single_file_tokenizer(folder, index, architecture)
    unet = unet_from_ldm(ckpt.take(UNET_PREFIX), read_json(folder / "unet" / "config.json"), where)
    fix_legacy_sample_size(unet)
    vae = vae_from_ldm(ckpt.take(VAE_PREFIX), read_json(folder / "vae" / "config.json"), where)
    text_encoder = text_encoder_from_ldm(ckpt, folder, architecture, where)
    # Never read: EMA copies and LDM's noise-schedule buffers, which A1111's inference configs ignore too.
    scheduler = load_scheduler(folder / "scheduler")
    meta = {"architecture": index.get("_altdiffusion", {}).get("architecture", folder.name), "config": str(folder)}
    return Components(tokenizer, text_encoder, unet.eval(), vae.eval(), scheduler, None, None, {"_altdiffusion": meta})


def single_file_tokenizer(folder: Path, index: dict, architecture: str):
    """The config folder's ``tokenizer/``, else the published model's from the hub cache."""
    from altdiffusion.hub import tokenizer_files
    from altdiffusion.models.tokenizer import load_tokenizer

    if (folder / "tokenizer").is_dir():
        return load_tokenizer(folder / "tokenizer", max_length=77)
    source = index.get("_altdiffusion", {}).get("tokenizer")
    if not source:
        raise ModelNotFoundError(f"--config {folder}: no tokenizer/ folder; add the model's tokenizer there")
    try:
        return load_tokenizer(tokenizer_files(source["repo"], source["subfolder"]), max_length=77)
    except ModelNotFoundError as err:
        raise ModelNotFoundError(
            f"a single file carries no tokenizer, and the {architecture} tokenizer comes from {source['repo']}: {err} "
            "(or pass --config with a diffusers folder that has tokenizer/)"
        ) from None
