"""Loading the components of an AltDiffusion folder.

Reads the published diffusers-0.8 layout (``model_index.json`` naming the text encoder
``["alt_diffusion", "RobertaSeriesModelWithTransformation"]``, which today's diffusers cannot
resolve), the layout our own ``save_pretrained`` writes, and Stable Diffusion 1.x folders
(a ``CLIPTextModel`` text encoder, see models/clip_text.py). UNet, VAE and scheduler load
through diffusers, which also converts the 0.8-era VAE attention key names.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from altdiffusion.errors import CheckpointError
from altdiffusion.models.loading import load_text_encoder, read_json
from altdiffusion.models.tokenizer import load_tokenizer

REQUIRED = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")

SCHEDULER_CLASSES = {
    "PNDMScheduler",
    "DDIMScheduler",
    "DDPMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "LMSDiscreteScheduler",
    "HeunDiscreteScheduler",
    "UniPCMultistepScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DPMSolverSDEScheduler",
}


@dataclass
class Components:
    tokenizer: object
    text_encoder: object
    unet: object
    vae: object
    scheduler: object
    safety_checker: object | None
    feature_extractor: object | None
    model_index: dict


def _present(index: dict, name: str, folder: Path) -> bool:
    entry = index.get(name)
    return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None and (folder / name).is_dir()


def from_diffusers(cls, folder: Path, what: str):
    """``cls.from_pretrained(folder)``, with any failure turned into one CheckpointError."""
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{what}: {folder / 'config.json'} is missing; the model folder is incomplete")
    try:
        # Saying which format is there avoids diffusers' logged error when falling back to .bin.
        has_safetensors = any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))
        if cls.__module__.startswith("diffusers.models"):
            return cls.from_pretrained(str(folder), low_cpu_mem_usage=True, use_safetensors=has_safetensors)
        return cls.from_pretrained(str(folder), use_safetensors=has_safetensors)
    except Exception as err:  # diffusers raises OSError/ValueError/RuntimeError/SafetensorError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{what} {folder}: cannot load ({type(err).__name__}: {first[:400]})") from None


def cast_module(module, device=None, dtype=None) -> None:
    """``module.to(device=device, dtype=dtype)`` in place, where a cast is needed, without diffusers'
    false warning: its ``ModelMixin.to`` says on every dtype cast that modules "should be kept in
    float32: []" even when that list is empty (it tests the list for None) and tells the user to pass
    ``torch_dtype``, which our loaders' ``dtype`` is. A non-empty list still warns."""
    moves = device is not None and module.device != torch.device(device)
    if not moves and (dtype is None or module.dtype == dtype):
        return
    with _filtered("diffusers.models.modeling_utils", "should be kept in float32: []."):
        module.to(device=device, dtype=dtype)


@contextmanager
def _filtered(logger_name: str, text: str):
    """Drop the records of ``logger_name`` whose message contains ``text`` while inside."""
    log = logging.getLogger(logger_name)

    def drop(record: logging.LogRecord) -> bool:
        return text not in record.getMessage()

    log.addFilter(drop)
    try:
        yield
    finally:
        log.removeFilter(drop)


def load_scheduler(folder: Path):
    import diffusers

    config = read_json(folder / "scheduler_config.json")
    name = config.get("_class_name")
    if name not in SCHEDULER_CLASSES:
        raise CheckpointError(f"{folder / 'scheduler_config.json'}: unknown scheduler class {name!r}")
    return getattr(diffusers, name).from_config(config)


def load_components(folder: Path, *, safety_checker: bool = True) -> Components:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    index = read_json(folder / "model_index.json")
    for name in REQUIRED:
        if not (folder / name).is_dir():
            raise CheckpointError(f"{folder}: the {name}/ folder is missing; the model folder is incomplete")
    tokenizer = load_tokenizer(folder / "tokenizer", max_length=77)
    if read_json(folder / "text_encoder" / "config.json").get("model_type") == "clip_text_model":
        from altdiffusion.models.clip_text import CLIPTextConditioning

        text_encoder = CLIPTextConditioning.from_folder(folder / "text_encoder")  # a Stable Diffusion 1.x folder
    else:
        text_encoder = load_text_encoder(folder / "text_encoder")
    if len(tokenizer) > text_encoder.config.vocab_size:
        raise CheckpointError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens but the text encoder only {text_encoder.config.vocab_size}"
        )
    unet = from_diffusers(UNet2DConditionModel, folder / "unet", "UNet")
    fix_legacy_sample_size(unet)
    if unet.config.cross_attention_dim != text_encoder.conditioning_dim:
        raise CheckpointError(
            f"{folder}: the UNet attends to {unet.config.cross_attention_dim}-d text but the text encoder "
            f"produces {text_encoder.conditioning_dim}-d conditioning; these components do not belong together"
        )
    vae = from_diffusers(AutoencoderKL, folder / "vae", "VAE")
    scheduler = load_scheduler(folder / "scheduler")

    checker = extractor = None
    if safety_checker and _present(index, "safety_checker", folder):
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

        checker = from_diffusers(StableDiffusionSafetyChecker, folder / "safety_checker", "safety checker")
        if not _present(index, "feature_extractor", folder):
            raise CheckpointError(f"{folder}: a safety checker needs the feature_extractor/ folder, which is missing")
        extractor = load_image_processor(folder / "feature_extractor")
    return Components(tokenizer, text_encoder.eval(), unet.eval(), vae.eval(), scheduler, checker, extractor, index)


def fix_legacy_sample_size(unet) -> None:
    """diffusers < 0.9 wrote ``sample_size: 32`` for 512-px models; fix it once at load (as
    diffusers' own pipelines do), so the default size survives a save with a newer version."""
    size = unet.config.sample_size
    version = str(unet.config.get("_diffusers_version", "0.0.0"))
    if isinstance(size, int) and size < 64 and tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) < (0, 9):
        unet.register_to_config(sample_size=64)


PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def load_image_processor(folder: Path):
    """CLIP image preprocessing without torchvision (transformers 5's PIL backend when present)."""
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers 4
        from transformers import CLIPImageProcessor as Processor
    # 2022 folders have preprocessor_config.json; transformers 5's AltCLIPProcessor.save_pretrained
    # writes processor_config.json (the image settings under "image_processor"). transformers reads both.
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        raise CheckpointError(f"{folder}: {' or '.join(PROCESSOR_FILES)} is missing; the model folder is incomplete")
    try:
        return Processor.from_pretrained(str(folder))
    except Exception as err:
        raise CheckpointError(f"{folder}: cannot load the image preprocessor ({err})") from None
