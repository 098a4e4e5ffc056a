"""``altdiffusion info``: what a model is (family, languages, sizes, dtype, device)."""

from __future__ import annotations

import argparse

from altdiffusion.cli.common import add_config_argument, add_device_arguments


def add_info_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a model: family, languages, sizes, dtype, device")
    p.add_argument("model", help="hub id, local folder, single file (.safetensors/.ckpt, A1111 layout), or 'mini'")
    add_config_argument(p)
    p.add_argument("--clip", action="store_true", help="with 'mini': describe the bundled AltCLIP instead")
    add_device_arguments(p, generation=True)
    p.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    from altdiffusion.hub import resolve_model

    folder = resolve_model(args.model, kind="clip" if args.model == "mini" and args.clip else None)
    is_pipeline = folder.is_file() or (folder / "model_index.json").is_file()
    rows = _pipeline_rows(args) if is_pipeline else _clip_rows(args, folder)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def _pipeline_rows(args) -> list[tuple[str, str]]:
    from altdiffusion.pipelines.alt_diffusion import load_pipeline

    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype, safety_checker=True, config=args.config)
    te = pipe.text_encoder
    return [
        ("family", "AltDiffusion (text-to-image)"),
        ("model", pipe.name),
        ("file" if pipe.folder.is_file() else "folder", str(pipe.folder)),
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


def _clip_rows(args, folder) -> list[tuple[str, str]]:
    from altdiffusion.clip import load_clip

    clip = load_clip(args.model, device=args.device, dtype=args.dtype)
    m = clip.model
    return [
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


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _millions(n: int) -> str:
    return f"{n / 1e6:,.1f} M" if n >= 1e5 else f"{n:,}"
