"""Each training task's own options, as its ``run`` receives them.

The loop's options (steps, batch, learning rate, checkpoints, ...) are
:class:`~altdiffusion.training.params.TrainSettings`; these hold what one task needs besides.
``from_args`` reads the namespace of :mod:`altdiffusion.training.arguments` and is called only
by the command line: past it, nothing reads an ``argparse`` namespace. This module imports no
torch, so the CLI can use it before it knows which (heavy) task will run.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass

from altdiffusion.errors import InvalidInputError
from altdiffusion.training.params import TrainSettings, settings_from_args

# DreamBooth's --lr and --steps depend on what it trains: diffusers' LoRA recipe, BAAI's full UNet.
DREAMBOOTH_DEFAULTS = {"lora": {"lr": 1e-4, "steps": 500}, "full": {"lr": 5e-6, "steps": 400}}


def _language_list(text: str | None) -> dict[str, float] | None:
    """``--languages en,zh`` or ``ru:3,en,zh``: each language's sampling weight (default 1)."""
    return dict(_language_weight(item.strip()) for item in text.split(",")) if text else None


def _language_weight(item: str) -> tuple[str, float]:
    name, _, weight = item.partition(":")
    try:
        value = float(weight or 1)
    except ValueError:
        value = math.nan
    if not name or not (math.isfinite(value) and value > 0):
        raise InvalidInputError(
            f"--languages: {item!r} is not LANGUAGE or LANGUAGE:WEIGHT with a positive weight (e.g. --languages ru:3,en,zh)"
        )
    return name, value


def from_namespace(cls, args: argparse.Namespace, **converted):
    """A settings dataclass from the namespace attributes named like its fields; ``converted``
    replaces those the command line spells differently (e.g. a comma-separated list)."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(cls)}
    return cls(**{**values, **converted})


@dataclass(frozen=True)
class DistillSettings:
    """AltCLIP stage 1 (teacher learning): see :mod:`altdiffusion.training.distill`."""

    teacher: str
    student: str
    data: list[str]
    loss: str = "mse"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DistillSettings:
        return from_namespace(cls, args)


@dataclass(frozen=True)
class ContrastiveSettings:
    """AltCLIP stage 2 (contrastive learning): see :mod:`altdiffusion.training.contrastive`."""

    model: str
    shards: list[str]
    train_vision: bool = False
    freeze_text: bool = False
    languages: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.freeze_text and not self.train_vision:
            raise InvalidInputError("--freeze-text leaves nothing to train without --train-vision: add it")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ContrastiveSettings:
        return from_namespace(cls, args, languages=_language_list(args.languages))


@dataclass(frozen=True)
class VAESettings:
    """The autoencoder: see :mod:`altdiffusion.training.vae`."""

    vae: str
    data: list[str]
    resolution: int = 256
    kl_weight: float = 1e-6
    foreground_weight: float = 0.0
    posterior: str = "sample"
    decoder_only: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> VAESettings:
        return from_namespace(cls, args)


@dataclass(frozen=True)
class DiffusionSettings:
    """AltDiffusion training (stage align or quality) and fine-tuning: see
    :mod:`altdiffusion.training.diffusion`. ``None`` means the stage's preset."""

    base: str
    data: list[str]
    stage: str = "quality"
    text_encoder: str | None = None
    conditioning: str | None = None
    align_params: str = "kv"
    resolution: int | None = None
    caption_dropout: float | None = None
    noise_offset: float = 0.0
    min_snr_gamma: float | None = None
    ema_decay: float | None = None
    languages: dict[str, float] | None = None
    validate_every: int = 0
    cache_latents: bool = False
    grounding_token: float = 0.0
    grounding_pixel: float = 0.0
    grounding_background: float = 0.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DiffusionSettings:
        return from_namespace(cls, args, languages=_language_list(args.languages))


@dataclass(frozen=True)
class DreamBoothSettings:
    """DreamBooth, LoRA or ``full`` UNet: see :mod:`altdiffusion.training.dreambooth`."""

    base: str
    instance_images: str
    instance_prompt: str
    class_prompt: str | None = None
    class_images: str | None = None  # None: OUTPUT/class_images
    num_class_images: int = 100
    prior_loss_weight: float = 1.0
    class_steps: int = 30
    class_guidance: float = 7.5
    full: bool = False
    lora_rank: int = 4
    lora_alpha: float | None = None  # None: the rank
    lora_name: str | None = None  # None: the output folder's name
    resolution: int = 512
    noise_offset: float = 0.0
    min_snr_gamma: float | None = None
    validate_every: int = 0

    def __post_init__(self) -> None:
        if self.class_images and not self.class_prompt:
            raise InvalidInputError(
                "--class-images needs --class-prompt (the prompt that describes, and generates, them)"
            )
        if self.prior_loss_weight < 0:
            raise InvalidInputError(f"--prior-loss-weight must be >= 0, got {self.prior_loss_weight}")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DreamBoothSettings:
        return from_namespace(cls, args)


@dataclass(frozen=True)
class TextualInversionSettings:
    """A new trigger word's vectors, the model frozen: see :mod:`altdiffusion.training.textual_inversion`."""

    base: str
    images: str
    name: str
    vectors: int = 1
    init_text: str = "*"
    prompt: list[str] | None = None  # templates with [name] (and [filewords]); None: "[name]"
    resolution: int = 512
    noise_offset: float = 0.0
    save_format: str = "safetensors"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TextualInversionSettings:
        return from_namespace(cls, args)


def dreambooth_train_settings(args: argparse.Namespace) -> TrainSettings:
    """The loop's settings for DreamBooth: ``--lr`` and ``--steps`` default per mode."""
    defaults = DREAMBOOTH_DEFAULTS["full" if args.full else "lora"]
    return settings_from_args(
        args,
        lr=defaults["lr"] if args.lr is None else args.lr,
        steps=defaults["steps"] if args.steps is None else args.steps,
    )
