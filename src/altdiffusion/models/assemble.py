"""Assembling an AltDiffusion to train: a Stable Diffusion's UNet, VAE and scheduler under the
text tower of an AltCLIP (or an AltDiffusion / SD-1.x folder as it is)."""

from __future__ import annotations

import copy
from pathlib import Path

from altdiffusion.errors import CheckpointError, InvalidInputError
from altdiffusion.models.text_encoder import AltTextEncoder
from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline


def assemble(
    base: str | Path, text_encoder: str | Path | None = None, conditioning: str | None = None
) -> AltDiffusionPipeline:
    """An AltDiffusion pipeline to train: an AltDiffusion folder as it is, or a Stable Diffusion
    folder's UNet/VAE/scheduler with the text tower of an AltCLIP.

    ``conditioning`` "m9" uses ``transformation(last layer)``; "m18" uses
    ``transformation_pre(pre_LN(penultimate layer))`` with ``transformation_pre`` starting as a
    copy of AltCLIP's ``transformation`` (AltCLIP has no such layer; this is our choice).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from altdiffusion.hub import resolve_model
    from altdiffusion.models.loading import read_json
    from altdiffusion.pipelines.components import load_scheduler

    folder = resolve_model(base, kind="diffusion")
    if folder.is_file():  # a single file in A1111's layout (models/single_file.py)
        return _from_single_file(folder, text_encoder, conditioning)
    index = read_json(folder / "model_index.json")
    if text_encoder is None:
        # An AltDiffusion folder, or a Stable Diffusion 1.x one (trained as it is: the mini recipe's SD-mini).
        names = index.get("text_encoder", [""])
        if not (str(names[0]).startswith(("alt_diffusion", "altdiffusion")) or names[-1] == "CLIPTextModel"):
            raise InvalidInputError(
                f"{folder} is not an AltDiffusion folder; pass --text-encoder ALTCLIP to assemble one"
            )
        return AltDiffusionPipeline.from_pretrained(folder, device="cpu", dtype="fp32", safety_checker=False)
    try:
        unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"))
        vae = AutoencoderKL.from_pretrained(str(folder / "vae"))
    except Exception as err:
        raise CheckpointError(f"{folder}: cannot load the UNet/VAE ({err})") from None
    return _with_altclip_tower(unet, vae, load_scheduler(folder / "scheduler"), text_encoder, conditioning, base)


def _with_altclip_tower(unet, vae, scheduler, text_encoder, conditioning, base) -> AltDiffusionPipeline:
    from altdiffusion.hub import resolve_model
    from altdiffusion.models.loading import load_altclip
    from altdiffusion.models.tokenizer import load_tokenizer

    clip_folder = resolve_model(text_encoder, kind="clip")
    encoder = _conditioning_tower(load_altclip(clip_folder).text_model, unet.config.cross_attention_dim, conditioning)
    return AltDiffusionPipeline(
        tokenizer=load_tokenizer(clip_folder, max_length=77),
        text_encoder=encoder.eval(),
        unet=unet,
        vae=vae,
        scheduler=scheduler,
        name=f"{Path(str(base)).stem}-alt",
        folder=None,
    )


def _from_single_file(path: Path, text_encoder, conditioning) -> AltDiffusionPipeline:
    """A single file to train: as it is, or its UNet/VAE/scheduler with an AltCLIP text tower."""
    if text_encoder is None:
        return AltDiffusionPipeline.from_pretrained(path, device="cpu", dtype="fp32", safety_checker=False)
    from altdiffusion.models.single_file import load_single_file

    c = load_single_file(path)
    return _with_altclip_tower(c.unet.float(), c.vae.float(), c.scheduler, text_encoder, conditioning, path)


def _conditioning_tower(source: AltTextEncoder, width: int, conditioning: str | None) -> AltTextEncoder:
    """AltCLIP's text tower with the head that feeds a ``width``-d UNet (m9, or m18 when
    ``conditioning`` says so or when only the encoder's own width fits)."""
    head = conditioning or (
        "m18" if width == source.config.hidden_size and width != source.config.project_dim else "m9"
    )
    config = copy.deepcopy(source.config)
    if head == "m18":
        config.project_dim, config.has_pre_transformation = width, True
    elif source.config.project_dim != width:
        raise InvalidInputError(
            f"the UNet attends to {width}-d text but the AltCLIP text tower projects to {source.config.project_dim}-d; "
            "use an AltCLIP of the matching width (768 for SD-1.x, 1024 for SD-2.x) or --conditioning m18"
        )
    encoder = AltTextEncoder(config, head=head)
    encoder.roberta.load_state_dict(source.roberta.state_dict())
    if head == "m18":
        if source.transformation.out_features != width:
            raise InvalidInputError(
                f"m18 conditioning needs a {width}-d transformation; the AltCLIP has {source.transformation.out_features}-d"
            )
        encoder.transformation.load_state_dict(source.transformation.state_dict())
        encoder.transformation_pre.load_state_dict(source.transformation.state_dict())
        encoder.pre_LN.load_state_dict(source.pre_LN.state_dict())
    else:
        encoder.transformation.load_state_dict(source.transformation.state_dict())
    return encoder
