"""``altdiffusion train ...``: one subcommand per training task.

The parsers come from :mod:`altdiffusion.training.arguments`, which imports nothing heavy; each
command imports its task's module (torch, diffusers, transformers) only when it runs, turns the
namespace into settings dataclasses, runs the task and prints the exported model's folder.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass

from altdiffusion.training import arguments
from altdiffusion.training.params import settings_from_args
from altdiffusion.training.settings import (
    ContrastiveSettings,
    DiffusionSettings,
    DistillSettings,
    DreamBoothSettings,
    TextualInversionSettings,
    VAESettings,
    dreambooth_train_settings,
)


@dataclass(frozen=True)
class TaskCommand:
    """Runs ``altdiffusion.training.<module>.run(task settings, loop settings)`` for parsed arguments."""

    module: str
    task_settings: type
    loop_settings: Callable[[argparse.Namespace], object] = settings_from_args

    def __call__(self, args: argparse.Namespace) -> int:
        training, settings = self.loop_settings(args), self.task_settings.from_args(args)
        task = importlib.import_module(f"altdiffusion.training.{self.module}")  # torch & co. only now
        print(task.run(settings, training))
        return 0


# name, help, parser options, command ("finetune" is "diffusion" with its stage fixed by its parser)
COMMANDS = (
    (
        "clip-distill",
        "AltCLIP stage 1: teacher learning on parallel text",
        arguments.add_distill_arguments,
        TaskCommand("distill", DistillSettings),
    ),
    (
        "clip-contrastive",
        "AltCLIP stage 2: contrastive learning, image tower frozen",
        arguments.add_contrastive_arguments,
        TaskCommand("contrastive", ContrastiveSettings),
    ),
    (
        "diffusion",
        "AltDiffusion: assemble SD + AltCLIP text tower, train stage align or quality",
        arguments.add_diffusion_arguments,
        TaskCommand("diffusion", DiffusionSettings),
    ),
    (
        "finetune",
        "fine-tune an AltDiffusion on captioned images (folder or shards)",
        arguments.add_finetune_arguments,
        TaskCommand("diffusion", DiffusionSettings),
    ),
    (
        "vae",
        "train an AutoencoderKL (a latent diffusion model's autoencoder) to reconstruct images",
        arguments.add_vae_arguments,
        TaskCommand("vae", VAESettings),
    ),
    (
        "dreambooth",
        "DreamBooth a subject or style into an AltDiffusion (LoRA or --full UNet)",
        arguments.add_dreambooth_arguments,
        TaskCommand("dreambooth", DreamBoothSettings, dreambooth_train_settings),
    ),
    (
        "textual-inversion",
        "learn a new trigger word's embedding vectors, the model frozen (an A1111 embedding file)",
        arguments.add_textual_inversion_arguments,
        TaskCommand("textual_inversion", TextualInversionSettings),
    ),
)


def add_train_parsers(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="training (run under accelerate launch or torchrun for many processes)")
    stages = train.add_subparsers(dest="train_command", required=True)
    for name, help_text, add_arguments, command in COMMANDS:
        p = stages.add_parser(name, help=help_text)
        add_arguments(p)
        p.set_defaults(func=command)
