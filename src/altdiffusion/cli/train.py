"""``altdiffusion train ...``: one subcommand per training task.

The parsers come from :mod:`altdiffusion.training.arguments`, which imports nothing heavy; each
command imports its task's module (torch, diffusers, transformers) only when it runs, turns the
namespace into settings dataclasses, runs the task and prints the exported model's folder.
"""

from __future__ import annotations

import argparse

from altdiffusion.training import arguments
from altdiffusion.training.params import settings_from_args
from altdiffusion.training.settings import (
    ContrastiveSettings,
    DiffusionSettings,
    DistillSettings,
    DreamBoothSettings,
    VAESettings,
    dreambooth_train_settings,
)


def cmd_train_clip_distill(args) -> int:
    training, settings = settings_from_args(args), DistillSettings.from_args(args)
    from altdiffusion.training import distill

    print(distill.run(settings, training))
    return 0


def cmd_train_clip_contrastive(args) -> int:
    training, settings = settings_from_args(args), ContrastiveSettings.from_args(args)
    from altdiffusion.training import contrastive

    print(contrastive.run(settings, training))
    return 0


def cmd_train_diffusion(args) -> int:
    """``train diffusion`` and ``train finetune`` (whose parser fixes the stage and the text encoder)."""
    training, settings = settings_from_args(args), DiffusionSettings.from_args(args)
    from altdiffusion.training import diffusion

    print(diffusion.run(settings, training))
    return 0


def cmd_train_vae(args) -> int:
    training, settings = settings_from_args(args), VAESettings.from_args(args)
    from altdiffusion.training import vae

    print(vae.run(settings, training))
    return 0


def cmd_train_dreambooth(args) -> int:
    training, settings = dreambooth_train_settings(args), DreamBoothSettings.from_args(args)
    from altdiffusion.training import dreambooth

    print(dreambooth.run(settings, training))
    return 0


COMMANDS = (  # name, help, parser options, command
    (
        "clip-distill",
        "AltCLIP stage 1: teacher learning on parallel text",
        arguments.add_distill_arguments,
        cmd_train_clip_distill,
    ),
    (
        "clip-contrastive",
        "AltCLIP stage 2: contrastive learning, image tower frozen",
        arguments.add_contrastive_arguments,
        cmd_train_clip_contrastive,
    ),
    (
        "diffusion",
        "AltDiffusion: assemble SD + AltCLIP text tower, train stage align or quality",
        arguments.add_diffusion_arguments,
        cmd_train_diffusion,
    ),
    (
        "finetune",
        "fine-tune an AltDiffusion on captioned images (folder or shards)",
        arguments.add_finetune_arguments,
        cmd_train_diffusion,
    ),
    (
        "vae",
        "train an AutoencoderKL (a latent diffusion model's autoencoder) to reconstruct images",
        arguments.add_vae_arguments,
        cmd_train_vae,
    ),
    (
        "dreambooth",
        "DreamBooth a subject or style into an AltDiffusion (LoRA or --full UNet)",
        arguments.add_dreambooth_arguments,
        cmd_train_dreambooth,
    ),
)


def add_train_parsers(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="training (run under accelerate launch or torchrun for many processes)")
    stages = train.add_subparsers(dest="train_command", required=True)
    for name, help_text, add_arguments, command in COMMANDS:
        p = stages.add_parser(name, help=help_text)
        add_arguments(p)
        p.set_defaults(func=command)
