"""The command-line options of every ``altdiffusion train`` command.

Kept apart from the tasks, and free of torch, diffusers and transformers, so that
``altdiffusion --help`` and every other command start without importing a training module;
:mod:`altdiffusion.training.settings` turns the parsed options into each task's settings.
"""

from __future__ import annotations

import argparse

from altdiffusion.training.params import add_common_arguments

LANGUAGES_HELP = (
    "with multilingual json captions: sample only these, uniformly (en,zh) or by weight (ru:3,en,zh: "
    "Russian three times as often as each other)"
)


def add_distill_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--teacher", required=True, help="CLIP (transformers CLIPModel folder or hub id) or an AltCLIP to extend"
    )
    p.add_argument("--student", required=True, help="XLM-R-family encoder folder or hub id (e.g. xlm-roberta-large)")
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        help="parallel text: TSV (english<TAB>translation) or JSONL ({'en':..., 'zh':...}); English-only lines allowed",
    )
    p.add_argument("--loss", default="mse", choices=["mse", "cosine"])
    add_common_arguments(p, lr=1e-4, batch_size=256, steps=10000)


def add_contrastive_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, help="the AltCLIP folder teacher learning wrote (OUTPUT/model), or a CLIPModel folder"
    )
    p.add_argument(
        "--shards", required=True, nargs="+", help="webdataset shards: a folder, a glob, or data/{00000..00099}.tar"
    )
    p.add_argument("--train-vision", action="store_true", help="also train the image tower (the paper freezes it)")
    p.add_argument(
        "--freeze-text",
        action="store_true",
        help="with --train-vision: train the image tower alone; the text embeddings (what an AltDiffusion "
        "conditioned on this text tower reads) stay exactly as they are",
    )
    p.add_argument("--languages", default=None, help=LANGUAGES_HELP)
    add_common_arguments(p, lr=2e-5, batch_size=256, steps=5000)


def add_vae_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--vae",
        required=True,
        help="an AutoencoderKL folder: config.json, with weights to continue training or without to start from scratch",
    )
    p.add_argument(
        "--data", required=True, nargs="+", help="a folder of images with .txt captions, or webdataset shards"
    )
    p.add_argument("--resolution", type=int, default=256)
    p.add_argument("--kl-weight", type=float, default=1e-6, help="weight of the KL term (per pixel)")
    p.add_argument(
        "--foreground-weight",
        type=float,
        default=0.0,
        help="extra loss weight on pixels unlike the image border (objects on plain backgrounds), e.g. 10",
    )
    p.add_argument(
        "--posterior",
        default="sample",
        choices=["sample", "mode"],
        help="decode a sample of q(z|x) (SD) or its mean: faster to train, and the diffusion stages encode with the mean",
    )
    p.add_argument(
        "--decoder-only",
        action="store_true",
        help="train the decoder of a trained VAE and freeze its encoder and scaling factor: the latent space stays, "
        "so a UNet trained on this VAE's latents decodes with the result unchanged (as SD's ft-MSE VAE)",
    )
    add_common_arguments(p, lr=1e-4, batch_size=32, steps=5000)


def add_diffusion_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base",
        required=True,
        help="SD-1.x / SD-2.x diffusers folder or single file (with --text-encoder), or an AltDiffusion folder or single file",
    )
    p.add_argument("--text-encoder", default=None, help="AltCLIP folder or hub id whose text tower conditions the UNet")
    p.add_argument("--conditioning", default=None, choices=["m9", "m18"], help="text path (default: from the widths)")
    p.add_argument("--stage", default="quality", choices=["align", "quality"])
    p.add_argument(
        "--align-params", default="kv", choices=["kv", "attn2"], help="align: K/V only (paper) or all attn2 (BAAI code)"
    )
    _add_image_text_training_arguments(p)


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", dest="base", required=True, help="the AltDiffusion folder, single file or hub id to fine-tune"
    )
    # Fine-tuning is diffusion training of an AltDiffusion as it is, at the finetune preset.
    p.set_defaults(stage="finetune", text_encoder=None, conditioning=None, align_params="kv")
    _add_image_text_training_arguments(p)


def _add_image_text_training_arguments(p: argparse.ArgumentParser) -> None:
    """What diffusion training and fine-tuning share."""
    p.add_argument(
        "--data", required=True, nargs="+", help="a folder of images with .txt captions, or webdataset shards"
    )
    p.add_argument("--resolution", type=int, default=None, help="training size (default: 256 for align, 512 otherwise)")
    p.add_argument(
        "--caption-dropout", type=float, default=None, help="probability of an empty caption (CFG); default per stage"
    )
    p.add_argument("--noise-offset", type=float, default=0.0)
    p.add_argument("--min-snr-gamma", type=float, default=None, help="min-SNR loss weighting, e.g. 5")
    p.add_argument("--ema-decay", type=float, default=None, help="keep an EMA of the weights, e.g. 0.9999 (exported)")
    p.add_argument("--languages", default=None, help=LANGUAGES_HELP)
    p.add_argument("--validate-every", type=int, default=0, help="save validation images every N steps (0: never)")
    p.add_argument(
        "--cache-latents", action="store_true", help="encode each training image with the VAE once (kept in memory)"
    )
    g = p.add_argument_group(
        "grounding (samples whose json gives each phrase's box: see altdiffusion.training.grounding)"
    )
    g.add_argument("--grounding-token", type=float, default=0.0, help="weight of the token loss, e.g. 0.01")
    g.add_argument("--grounding-pixel", type=float, default=0.0, help="weight of the pixel loss, e.g. 0.01")
    g.add_argument("--grounding-background", type=float, default=0.0, help="the background pass's weight, e.g. 1")
    add_common_arguments(p, lr=1e-4, batch_size=32, steps=10000)


def add_textual_inversion_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", dest="base", required=True, help="the AltDiffusion folder or hub id (kept frozen)")
    p.add_argument("--images", required=True, help="folder of the concept's images (optional NAME.txt beside each)")
    p.add_argument("--name", required=True, help="the trigger word, also the embedding's file name")
    p.add_argument("--vectors", type=int, default=1, help="vectors (token positions) the trigger takes (A1111: 1)")
    p.add_argument("--init-text", default="*", help="start from the token embeddings of this text (A1111: '*')")
    p.add_argument(
        "--prompt",
        action="append",
        default=None,
        help="caption template; [name] is the trigger, [filewords] the image's .txt; repeatable (default: [name])",
    )
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--noise-offset", type=float, default=0.0)
    p.add_argument(
        "--save-format",
        default="safetensors",
        choices=["safetensors", "pt"],
        help="safetensors (emb_params, as kohya) or pt (A1111's string_to_param)",
    )
    add_common_arguments(p, lr=5e-3, batch_size=1, steps=1000)


def add_dreambooth_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", dest="base", required=True, help="the AltDiffusion folder, single file or hub id to teach"
    )
    p.add_argument("--instance-images", required=True, help="folder with the few images of the subject or style")
    p.add_argument(
        "--instance-prompt", required=True, help='the caption of every instance image, e.g. "一张<sks>风格的画"'
    )
    g = p.add_argument_group("prior preservation")
    g.add_argument("--class-prompt", default=None, help='e.g. "一张画"; turns prior preservation on')
    g.add_argument(
        "--class-images",
        default=None,
        help="class image folder; missing images are generated (default OUT/class_images)",
    )
    g.add_argument("--num-class-images", type=int, default=100)
    g.add_argument("--prior-loss-weight", type=float, default=1.0)
    g.add_argument("--class-steps", type=int, default=30, help="sampling steps when generating class images")
    g.add_argument("--class-guidance", type=float, default=7.5, help="CFG scale when generating class images")
    g = p.add_argument_group("what to train")
    g.add_argument("--full", action="store_true", help="train the whole UNet (BAAI's recipe) instead of a LoRA")
    g.add_argument("--lora-rank", type=int, default=4)
    g.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the rank, i.e. scale 1)")
    g.add_argument(
        "--lora-name", default=None, help="name of the kohya-format file (default: the output folder's name)"
    )
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--noise-offset", type=float, default=0.0)
    p.add_argument("--min-snr-gamma", type=float, default=None)
    p.add_argument(
        "--validate-every", type=int, default=0, help="save images of the instance (and class) prompt every N steps"
    )
    add_common_arguments(p, lr=0.0, batch_size=4, steps=0)
    p.set_defaults(lr=None, steps=None)  # per mode (settings.DREAMBOOTH_DEFAULTS): LoRA 1e-4 / 500, full 5e-6 / 400
