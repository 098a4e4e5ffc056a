"""``altdiffusion generate``: text-to-image, image-to-image and inpainting."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from altdiffusion.cli.common import (
    add_config_argument,
    add_device_arguments,
    add_performance_arguments,
    open_image,
    positive_int,
)
from altdiffusion.cli.generation_options import add_hires_arguments, add_noise_arguments, noise_and_hires
from altdiffusion.cli.prompt_batch import output_folder, process_state, run_units, units_of
from altdiffusion.cli.prompt_file import read_prompt_file
from altdiffusion.errors import InvalidInputError


def add_generate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="text-to-image, image-to-image and inpainting")
    p.add_argument(
        "prompt", nargs="?", help="the prompt, in any supported language; A1111 (emphasis:1.2) and BREAK work"
    )
    p.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="a prompt a line, or A1111 prompt-file lines (--prompt ... --seed 1 --steps 20); resumable, "
        "split across processes under accelerate launch",
    )
    p.add_argument(
        "--model",
        default="mini",
        help="hub id, local folder, single file (.safetensors/.ckpt in A1111's layout), or 'mini' (bundled; default)",
    )
    add_config_argument(p)
    p.add_argument(
        "--vae", default=None, metavar="FILE|FOLDER", help="another VAE: an A1111 .safetensors or a diffusers folder"
    )
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: the model's)")
    p.add_argument(
        "--guidance", type=float, default=None, help="classifier-free guidance (CFG) scale (default: the model's)"
    )
    p.add_argument("--seed", type=int, default=-1, help="-1 picks a random seed (printed and stored in the PNG)")
    p.add_argument("--width", type=int, default=None, help="default: the model's native size (or the init image's)")
    p.add_argument("--height", type=int, default=None, help="default: the model's native size (or the init image's)")
    p.add_argument(
        "--sampler", default=None, help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M Karras' (default: the model's)"
    )
    p.add_argument("--batch", type=positive_int, default=1, help="images to generate")
    p.add_argument("--out", default="outputs/", help="a .png file or a folder (default outputs/)")
    _add_image_arguments(p)
    p.add_argument("--no-safety-checker", action="store_true", help="do not load or run the safety checker")
    p.add_argument(
        "--lora",
        action="append",
        default=None,
        metavar="FILE[:SCALE]",
        help="merge a LoRA (kohya or diffusers .safetensors) at SCALE (default 1); repeatable. "
        "FILE:NUMBER always splits at the last ':', so a path that ends in ':NUMBER' needs an explicit :SCALE",
    )
    p.add_argument(
        "--embeddings-dir",
        default=None,
        metavar="DIR",
        help="textual-inversion embeddings (.pt, .bin, .safetensors); a file's stem is its trigger word",
    )
    add_noise_arguments(p)
    add_hires_arguments(p)
    p.add_argument("--no-progress", action="store_true")
    add_device_arguments(p, generation=True)
    add_performance_arguments(p)
    _add_int8_argument(p)
    p.set_defaults(func=cmd_generate)


def _add_int8_argument(p: argparse.ArgumentParser) -> None:
    """generate's alone: the server merges LoRAs per job, and each merge would quantize again."""
    p.add_argument(
        "--int8",
        action="store_true",
        help="with --compile on a CPU with VNNI: the UNet quantized to int8 (about 1.4x over --compile in bf16; each "
        "size/batch calibrates and compiles first, minutes at full size)",
    )


def _add_image_arguments(p: argparse.ArgumentParser) -> None:
    """Image-to-image and inpainting: the starting image, how much to change, and where."""
    p.add_argument("--init-image", default=None, help="image-to-image: the starting image")
    p.add_argument("--strength", type=float, default=0.75, help="image-to-image denoising strength, 0..1")
    p.add_argument(
        "--mask", default=None, help="inpainting: white = repaint, black = keep (same size as the init image)"
    )
    p.add_argument("--mask-blur", type=int, default=4)


def cmd_generate(args) -> int:
    from altdiffusion.pipelines.infotext import output_paths, write_png
    from altdiffusion.pipelines.inputs import resolve_size

    if (args.prompt is None) == (args.prompts is None):
        raise InvalidInputError("give a prompt or --prompts FILE (one of them)")
    init = open_image(args.init_image, "init image") if args.init_image else None
    mask = open_image(args.mask, "mask") if args.mask else None
    if mask is not None and init is None:
        raise InvalidInputError("--mask needs --init-image (the image to inpaint)")
    extras = noise_and_hires(args, init)
    lines = _prompt_lines(args, init) if args.prompts else None
    if lines is None:
        output_paths(args.out, args.batch, seed=max(args.seed, 0))  # a bad --out fails before any work
    loras = _check_model_flags(args)
    state = process_state(args.device) if lines else None
    device = args.device or (state.device if state is not None and state.num_processes > 1 else None)
    pipe = _load_pipeline(args, device, loras)
    defaults = pipe.defaults  # the same source the server and its web UI read
    warning = defaults.size_warning(*resolve_size(args.width, args.height, init, defaults))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    arguments = dict(
        negative_prompt=args.negative,
        num_inference_steps=args.steps,  # None: the model's defaults, applied by the pipeline
        guidance_scale=args.guidance,
        height=args.height,
        width=args.width,
        seed=args.seed,
        num_images_per_prompt=args.batch,
        image=init,
        strength=args.strength,
        mask_image=mask,
        mask_blur=args.mask_blur,
        sampler=args.sampler or defaults.sampler_name,
        progress=not args.no_progress,
        **extras,
    )
    _apply_modes(pipe, args, dict(arguments, prompt=args.prompt or ""))
    if lines is not None:
        run_units(pipe, units_of(lines, args.batch), output_folder(args.out), arguments, state)
        return 0
    result = pipe(args.prompt, **arguments)
    paths = output_paths(args.out, len(result.images), seed=result.seeds[0])
    for image, text, path in zip(result.images, result.infotexts, paths):
        write_png(image, path, text)
        print(path)
    if any(result.nsfw):
        print("note: the safety checker blacked out some images (--no-safety-checker disables it)", file=sys.stderr)
    print(f"seed {result.seeds[0]}", file=sys.stderr)
    return 0


def _check_model_flags(args) -> list:
    """Sampler, modes, LoRA files and the embeddings folder, checked before the model loads; the LoRAs."""
    from altdiffusion.pipelines.lora import parse_lora_arg
    from altdiffusion.pipelines.modes import check_modes

    if args.sampler:
        from altdiffusion.pipelines.samplers import canonical_sampler_name

        canonical_sampler_name(args.sampler)
    check_modes(args.compile, args.memory)
    if args.int8 and not args.compile:
        raise InvalidInputError("--int8 is part of speed mode: add --compile (or leave out --int8)")
    loras = [parse_lora_arg(text) for text in args.lora or []]
    for lora_path, _ in loras:
        if not Path(lora_path).is_file():
            raise InvalidInputError(f"--lora {lora_path}: no such file (give FILE or FILE:SCALE)")
    if args.embeddings_dir and not Path(args.embeddings_dir).is_dir():
        raise InvalidInputError(f"--embeddings-dir {args.embeddings_dir} is not a folder")
    return loras


def _apply_modes(pipe, args, call: dict) -> None:
    """``--memory``, ``--compile`` and ``--int8``; speed mode warms up on this call's shapes (a prompt file's
    lines of other sizes compile their own on first use) and says how long it took."""
    seconds = pipe.enable_modes(args.memory, args.compile, call, int8=args.int8)
    if seconds is not None:
        what = "compiled"
        if pipe.speed.int8 is not None:
            ranges = "ranges from the cache" if pipe.speed.int8.cached_buckets else "calibrated"
            what = f"int8 UNet {ranges}, compiled"
        print(f"speed mode: {what} in {seconds:.1f} s (kernel cache {pipe.speed.cache_dir})", file=sys.stderr)


def _load_pipeline(args, device, loras):
    """The model with its VAE, LoRAs and embeddings, as the flags name them."""
    from altdiffusion.pipelines.alt_diffusion import load_pipeline

    pipe = load_pipeline(
        args.model,
        device=device,
        dtype=args.dtype,
        safety_checker=not args.no_safety_checker,
        config=args.config,
    )
    if args.vae:
        pipe.load_vae(args.vae)
    for lora_path, scale in loras:
        pipe.load_lora(lora_path, scale)
    if args.embeddings_dir:
        for name, skipped in pipe.load_embeddings(args.embeddings_dir).skipped.items():
            print(f"warning: embedding {name!r} skipped: {skipped.reason}", file=sys.stderr)
    return pipe


def _prompt_lines(args, init):
    """The prompt file's lines, read and checked before any model loads."""
    if init is not None:
        raise InvalidInputError("--prompts is for text-to-image; leave out --init-image")
    lines = read_prompt_file(args.prompts)
    units_of(lines, args.batch)
    output_folder(args.out)
    return lines
