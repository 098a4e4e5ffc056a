"""The ``altdiffusion`` command.

    altdiffusion generate "一个红色的大圆形，位于画面中央，白色背景。" --model mini --steps 20 --seed 42 --out outputs/
    altdiffusion info BAAI/AltDiffusion-m9
    altdiffusion clip classify --model BAAI/AltCLIP --image cat.jpg --labels "猫,狗,汽车"
    altdiffusion dev tiny /tmp/tiny --layout altdiffusion-m18

A user's mistake (a bad path, a broken checkpoint, an invalid setting) prints one line,
``error: ...``, and exits with status 2; Ctrl-C exits with 130 and leaves no partial file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from altdiffusion import __version__
from altdiffusion import mini as mini_defaults
from altdiffusion.errors import AltDiffusionError, InvalidInputError


def _open_image(path: str, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise InvalidInputError(f"{what} {path!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InvalidInputError(
            f"{what} {path!r} is not a readable image ({err}); use a PNG, JPEG or WebP file"
        ) from None


def _quiet_libraries() -> None:
    """Library log chatter (legacy-config notices, load reports) is noise at the CLI."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _millions(n: int) -> str:
    return f"{n / 1e6:,.1f} M" if n >= 1e5 else f"{n:,}"


def cmd_info(args) -> int:
    from altdiffusion.hub import resolve_model

    folder = resolve_model(args.model, kind="clip" if args.model == "mini" and args.clip else None)
    if (folder / "model_index.json").is_file():
        from altdiffusion.pipelines.alt_diffusion import load_pipeline

        pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, safety_checker=True)
        te = pipe.text_encoder
        rows = [
            ("family", "AltDiffusion (text-to-image)"),
            ("model", pipe.name),
            ("folder", str(pipe.folder)),
            ("languages", ", ".join(pipe.languages) or "unknown"),
            ("conditioning", pipe.conditioning),
            (
                "text encoder",
                f"XLM-R {te.config.num_hidden_layers} layers x {te.config.hidden_size}, vocab {te.config.vocab_size:,}, -> {te.conditioning_dim}-d; {_millions(_count(te))} params",
            ),
            (
                "unet",
                f"cross-attention {pipe.unet.config.cross_attention_dim}-d; {_millions(_count(pipe.unet))} params",
            ),
            (
                "vae",
                f"{pipe.vae.config.latent_channels} latent channels, /{pipe.vae_scale_factor}; {_millions(_count(pipe.vae))} params",
            ),
            (
                "safety checker",
                f"{_millions(_count(pipe.safety_checker))} params" if pipe.safety_checker is not None else "none",
            ),
            ("scheduler", type(pipe.scheduler).__name__),
            ("default size", f"{pipe.default_size}x{pipe.default_size}"),
            ("dtype", str(pipe.dtype).removeprefix("torch.")),
            ("device", str(pipe.device)),
        ]
    else:
        from altdiffusion.clip import load_clip

        clip = load_clip(args.model, device=args.device, dtype=args.dtype)
        m = clip.model
        rows = [
            ("family", "AltCLIP (image-text embeddings)"),
            ("model", clip.name),
            ("folder", str(folder)),
            ("languages", ", ".join(clip.languages) or "unknown"),
            (
                "text tower",
                f"XLM-R {m.text_model.config.num_hidden_layers} layers x {m.text_model.config.hidden_size}, vocab {m.text_model.config.vocab_size:,}; {_millions(_count(m.text_model))} params",
            ),
            (
                "vision tower",
                f"ViT {m.vision_model.config.num_hidden_layers} layers x {m.vision_model.config.hidden_size}, {m.vision_model.config.image_size} px / patch {m.vision_model.config.patch_size}; {_millions(_count(m.vision_model))} params",
            ),
            ("embedding", f"{m.config.projection_dim}-d"),
            ("dtype", str(clip.dtype).removeprefix("torch.")),
            ("device", str(clip.device)),
        ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_clip_classify(args) -> int:
    from altdiffusion.clip import load_clip

    image = _open_image(args.image, "image")
    labels = [x for x in args.labels.replace("，", ",").split(",") if x.strip()]
    clip = load_clip(args.model, device=args.device, dtype=args.dtype)
    ranked = clip.classify(image, labels, language=args.language, templates=args.template or None)
    width = max(len(label) for label, _ in ranked)
    for label, prob in ranked[: args.top or None]:
        print(f"{label:<{width}}  {prob:7.2%}")
    return 0


def cmd_generate(args) -> int:
    from altdiffusion.pipelines.alt_diffusion import load_pipeline
    from altdiffusion.pipelines.infotext import output_paths, write_png
    from altdiffusion.pipelines.lora import parse_lora_arg

    init = _open_image(args.init_image, "init image") if args.init_image else None
    mask = _open_image(args.mask, "mask") if args.mask else None
    if mask is not None and init is None:
        raise InvalidInputError("--mask needs --init-image (the image to inpaint)")
    if args.sampler:
        from altdiffusion.pipelines.samplers import canonical_sampler_name

        canonical_sampler_name(args.sampler)
    output_paths(args.out, args.batch, seed=max(args.seed, 0))  # a bad --out fails before any work
    loras = [parse_lora_arg(text) for text in args.lora or []]
    for lora_path, _ in loras:  # a missing LoRA fails before the model loads
        if not Path(lora_path).is_file():
            raise InvalidInputError(f"--lora {lora_path}: no such file (give FILE or FILE:SCALE)")
    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, safety_checker=not args.no_safety_checker)
    for lora_path, scale in loras:
        pipe.load_lora(lora_path, scale)
    result = pipe(
        args.prompt,
        negative_prompt=args.negative,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        height=args.height,
        width=args.width,
        seed=args.seed,
        num_images_per_prompt=args.batch,
        image=init,
        strength=args.strength,
        mask_image=mask,
        mask_blur=args.mask_blur,
        sampler=args.sampler,
        progress=not args.no_progress,
    )
    paths = output_paths(args.out, len(result.images), seed=result.seeds[0])
    for image, text, path in zip(result.images, result.infotexts, paths):
        write_png(image, path, text)
        print(path)
    if any(result.nsfw):
        print("note: the safety checker blacked out some images (--no-safety-checker disables it)", file=sys.stderr)
    print(f"seed {result.seeds[0]}", file=sys.stderr)
    return 0


def cmd_dev_tiny(args) -> int:
    from altdiffusion.models.tiny import write_tiny_altclip, write_tiny_altdiffusion

    family, _, variant = args.layout.partition("-")
    writer = write_tiny_altclip if family == "altclip" else write_tiny_altdiffusion
    writer(Path(args.folder), variant or "m2", seed=args.seed)
    print(args.folder)
    return 0


def cmd_serve(args) -> int:
    from altdiffusion.serve.server import run_from_args

    return run_from_args(args)


def cmd_train(args) -> int:
    if args.train_command == "clip-distill":
        from altdiffusion.training.distill import run
    elif args.train_command == "clip-contrastive":
        from altdiffusion.training.contrastive import run
    elif args.train_command == "vae":
        from altdiffusion.training.vae import run
    else:
        from altdiffusion.training.diffusion import run
    folder = run(args)
    print(folder)
    return 0


def cmd_mini_build(args) -> int:
    from altdiffusion.mini.build import Build
    from altdiffusion.mini.package import install, size_mb

    log = Build(
        Path(args.out),
        seed=args.seed,
        smoke=args.smoke,
        steps_scale=args.steps_scale,
        baseline=not args.no_baseline,
        scratch_segments=args.scratch_segments,
    )()
    print(f"built in {log['total_wall_s']:.0f} s: {log['outputs']}")
    if args.install:
        dest = install(
            Path(log["outputs"]["altclip"]), Path(log["outputs"]["altdiffusion"]), Path(args.out) / "build.json"
        )
        print(f"installed as the bundled model: {dest} ({size_mb(dest):.1f} MB)")
    return 0


def cmd_mini_report(args) -> int:
    from altdiffusion.mini.report import build_report, markdown, write_report

    report, samples = build_report(
        args.clip,
        args.model,
        scenes=args.scenes,
        seeds=args.seeds,
        guidance=args.guidance,
        build_log=Path(args.build_log) if args.build_log else None,
    )
    write_report(Path(args.out), report, samples)
    print(markdown(report))
    print(f"wrote {args.out}/report.json, report.md, samples.png")
    return 0


def cmd_mini_data(args) -> int:
    from altdiffusion.mini.world import write_shards

    paths = write_shards(Path(args.out), args.n, args.seed, split=args.split, shard_size=args.shard_size)
    print(f"wrote {len(paths)} shards to {args.out}")
    return 0


def cmd_data_shards(args) -> int:
    from altdiffusion.training.shards import make_shards

    report = make_shards(args.table, args.out, shard_size=args.shard_size, image_root=args.image_root)
    skipped = ", ".join(f"{n} {why}" for why, n in report["skipped"].items()) or "none"
    print(f"wrote {report['written']} samples in {report['shards']} shards to {args.out}; skipped: {skipped}")
    return 0


def _positive_int(text: str) -> int:
    try:
        return int(text)  # range checked by the pipeline, with its one-line message
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="altdiffusion", description="Multilingual text-to-image with AltCLIP and AltDiffusion."
    )
    parser.add_argument("--version", action="version", version=f"altdiffusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def device_args(p):
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: best available)")
        p.add_argument("--dtype", default=None, help="fp32, fp16, bf16 (default: fp16 on GPU, fp32 on CPU)")

    p = sub.add_parser("generate", help="text-to-image, image-to-image and inpainting")
    p.add_argument("prompt", help="the prompt, in any supported language; A1111 (emphasis:1.2) and BREAK work")
    p.add_argument("--model", default="mini", help="hub id, local folder, or 'mini' (bundled; default)")
    p.add_argument("--negative", default="", help="negative prompt")
    p.add_argument("--steps", type=_positive_int, default=20)
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance (CFG) scale")
    p.add_argument("--seed", type=int, default=-1, help="-1 picks a random seed (printed and stored in the PNG)")
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument(
        "--sampler", default=None, help="A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M Karras' (default: the model's)"
    )
    p.add_argument("--batch", type=_positive_int, default=1, help="images to generate")
    p.add_argument("--out", default="outputs/", help="a .png file or a folder (default outputs/)")
    p.add_argument("--init-image", default=None, help="image-to-image: the starting image")
    p.add_argument("--strength", type=float, default=0.75, help="image-to-image denoising strength, 0..1")
    p.add_argument(
        "--mask", default=None, help="inpainting: white = repaint, black = keep (same size as the init image)"
    )
    p.add_argument("--mask-blur", type=int, default=4)
    p.add_argument("--no-safety-checker", action="store_true", help="do not load or run the safety checker")
    p.add_argument(
        "--lora",
        action="append",
        default=None,
        metavar="FILE[:SCALE]",
        help="merge a LoRA (kohya or diffusers .safetensors) at SCALE (default 1); repeatable. "
        "FILE:NUMBER always splits at the last ':', so a path that ends in ':NUMBER' needs an explicit :SCALE",
    )
    p.add_argument("--no-progress", action="store_true")
    device_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("info", help="describe a model: family, languages, sizes, dtype, device")
    p.add_argument("model", help="hub id, local folder, or 'mini'")
    p.add_argument("--clip", action="store_true", help="with 'mini': describe the bundled AltCLIP instead")
    device_args(p)
    p.set_defaults(func=cmd_info)

    clip = sub.add_parser("clip", help="AltCLIP commands").add_subparsers(dest="clip_command", required=True)
    p = clip.add_parser("classify", help="zero-shot classification of an image among labels")
    p.add_argument("--model", default="mini")
    p.add_argument("--image", required=True)
    p.add_argument("--labels", required=True, help='comma-separated labels, e.g. "猫,狗,汽车"')
    p.add_argument("--language", default=None, help="template language (default: guessed from the labels' script)")
    p.add_argument("--template", action="append", help="a template with {} for the label; repeatable")
    p.add_argument("--top", type=int, default=0, help="print only the best N")
    device_args(p)
    p.set_defaults(func=cmd_clip_classify)

    p = sub.add_parser("serve", help="AUTOMATIC1111-compatible HTTP API (/sdapi/v1/) on loopback")
    from altdiffusion.serve.config import add_serve_arguments  # light: no torch or FastAPI

    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)

    train = sub.add_parser("train", help="training (run under accelerate launch or torchrun for many processes)")
    stages = train.add_subparsers(dest="train_command", required=True)
    from altdiffusion.training import contrastive, diffusion, distill, vae

    for name, help_text, add in (
        ("clip-distill", "AltCLIP stage 1: teacher learning on parallel text", distill.add_arguments),
        ("clip-contrastive", "AltCLIP stage 2: contrastive learning, image tower frozen", contrastive.add_arguments),
        (
            "diffusion",
            "AltDiffusion: assemble SD + AltCLIP text tower, train stage align or quality",
            diffusion.add_arguments,
        ),
        (
            "finetune",
            "fine-tune an AltDiffusion on captioned images (folder or shards)",
            diffusion.add_finetune_arguments,
        ),
        (
            "vae",
            "train an AutoencoderKL (a latent diffusion model's autoencoder) to reconstruct images",
            vae.add_arguments,
        ),
    ):
        p = stages.add_parser(name, help=help_text)
        add(p)
        p.set_defaults(func=cmd_train)

    from altdiffusion.training import dreambooth

    p = stages.add_parser("dreambooth", help="DreamBooth a subject or style into an AltDiffusion (LoRA or --full UNet)")
    dreambooth.add_arguments(p)
    p.set_defaults(func=dreambooth.command)

    data = sub.add_parser("data", help="data tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("shards", help="TSV/CSV/JSONL of (image, caption[, language]) -> webdataset shards")
    p.add_argument("table", help="file with columns image, caption[, language] (header row for TSV/CSV)")
    p.add_argument("--out", required=True, help="folder for 00000.tar, 00001.tar, ...")
    p.add_argument("--shard-size", type=int, default=10000)
    p.add_argument("--image-root", default=None, help="relative image paths start here (default: the table's folder)")
    p.set_defaults(func=cmd_data_shards)

    mini = sub.add_parser("mini", help="the mini world: rebuild the bundled model, report on it").add_subparsers(
        dest="mini_command", required=True
    )
    p = mini.add_parser("build", help="run the whole AltCLIP -> AltDiffusion recipe on the mini world, from a seed")
    p.add_argument("--out", default="build/mini", help="working folder (data, every stage's model, build.json)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="a few steps per stage, to check the recipe runs")
    p.add_argument(
        "--steps-scale",
        type=float,
        default=1.0,
        help="multiply every stage's steps (e.g. 0.5 for a quicker, weaker build)",
    )
    p.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the from-scratch multilingual CLIP (the report's compute comparison)",
    )
    p.add_argument(
        "--scratch-segments",
        type=_positive_int,
        default=None,
        help="carry the from-scratch baseline up to this many 250-step segments (default 4); a rerun continues it",
    )
    p.add_argument("--install", action="store_true", help="make the result the bundled model (`--model mini`)")
    p.set_defaults(func=cmd_mini_build)
    p = mini.add_parser(
        "report", help="per-language accuracy of AltCLIP-mini and AltDiffusion-mini (JSON, Markdown, PNG)"
    )
    p.add_argument("--clip", default="mini", help="AltCLIP folder (default: the bundled AltCLIP-mini)")
    p.add_argument("--model", default="mini", help="AltDiffusion folder (default: the bundled AltDiffusion-mini)")
    p.add_argument("--out", default="reports/mini")
    p.add_argument(
        "--scenes",
        type=_positive_int,
        default=mini_defaults.REPORT_SCENES,
        help="one-thing scenes per split and language (128 x 2 seeds: a rate's standard error is about 2.5 points)",
    )
    p.add_argument("--seeds", type=_positive_int, default=2, help="seeds per scene")
    p.add_argument(
        "--guidance",
        type=float,
        default=mini_defaults.GUIDANCE,
        help="classifier-free guidance scale for the generation tests (default: %(default)s, the mini models' own)",
    )
    p.add_argument("--build-log", default=None, help="build.json for the compute comparison (default: the bundled one)")
    p.set_defaults(func=cmd_mini_report)
    p = mini.add_parser("data", help="write mini-world webdataset shards (9-language captions and labels)")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=_positive_int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", choices=["train", "seen", "heldout"])
    p.add_argument("--shard-size", type=_positive_int, default=1000)
    p.set_defaults(func=cmd_mini_data)

    dev = sub.add_parser("dev", help="developer tools").add_subparsers(dest="dev_command", required=True)
    p = dev.add_parser("tiny", help="write a tiny random checkpoint in a published layout (for tests and demos)")
    p.add_argument("folder")
    p.add_argument(
        "--layout",
        default="altdiffusion-m9",
        choices=[f"{f}-{v}" for f in ("altclip", "altdiffusion") for v in ("m2", "m9", "m18")],
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_dev_tiny)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _quiet_libraries()
        return args.func(args)
    except AltDiffusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
