"""Writing a pipeline as a folder in the published AltDiffusion layout (safetensors only)."""

from __future__ import annotations

import json
from pathlib import Path

from altdiffusion import __version__


def save_pipeline(pipe, folder: str | Path) -> Path:
    """Write ``pipe`` so our loader (and diffusers' component loaders) reopen it.

    The layout is the published one (diffusers 0.8's ``model_index.json`` names the text
    encoder ``alt_diffusion.RobertaSeriesModelWithTransformation``), plus our metadata; a
    pipeline with a CLIP text tower is written as a Stable Diffusion 1.x folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = _model_index(pipe)
    te = folder / "text_encoder"
    te.mkdir(exist_ok=True)
    if pipe.text_encoder.head == "sd":
        index.update(_class_name="StableDiffusionPipeline", text_encoder=["transformers", "CLIPTextModel"])
        pipe.text_encoder.save_pretrained(te)
    else:
        _save_alt_text_encoder(pipe.text_encoder, te)
    pipe.tokenizer.save_pretrained(str(folder / "tokenizer"))
    pipe.unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
    pipe.vae.save_pretrained(str(folder / "vae"), safe_serialization=True)
    pipe.scheduler.save_pretrained(str(folder / "scheduler"))
    if pipe.safety_checker is not None:
        pipe.safety_checker.save_pretrained(str(folder / "safety_checker"), safe_serialization=True)
    if pipe.feature_extractor is not None:
        pipe.feature_extractor.save_pretrained(str(folder / "feature_extractor"))
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def _model_index(pipe) -> dict:
    import diffusers

    return {
        "_class_name": "AltDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "_altdiffusion": {
            "version": __version__,
            "name": pipe.name,
            "languages": list(pipe.languages),
            **({"recommended": pipe.recommended} if pipe.recommended else {}),
        },
        "scheduler": ["diffusers", type(pipe.scheduler).__name__],
        "text_encoder": ["alt_diffusion", "RobertaSeriesModelWithTransformation"],
        "tokenizer": ["transformers", type(pipe.tokenizer).__name__],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": (
            ["stable_diffusion", "StableDiffusionSafetyChecker"] if pipe.safety_checker else [None, None]
        ),
        "feature_extractor": ["transformers", "CLIPImageProcessor"] if pipe.feature_extractor else [None, None],
    }


def _save_alt_text_encoder(text_encoder, folder: Path) -> None:
    """The published ``RobertaSeriesModelWithTransformation`` layout (config + weights)."""
    from altdiffusion.models.weights import save_safetensors

    config = text_encoder.config.to_dict()
    config.update(architectures=["RobertaSeriesModelWithTransformation"], model_type="xlm-roberta")
    if text_encoder.head == "m18":
        config["has_pre_transformation"] = True
    (folder / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    save_safetensors(text_encoder.state_dict(), folder / "model.safetensors")
