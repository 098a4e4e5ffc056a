"""``altdiffusion clip ...``: AltCLIP commands (zero-shot classification)."""

from __future__ import annotations

import argparse

from altdiffusion.cli.common import add_device_arguments, open_image


def add_clip_parsers(sub: argparse._SubParsersAction) -> None:
    clip = sub.add_parser("clip", help="AltCLIP commands").add_subparsers(dest="clip_command", required=True)
    p = clip.add_parser("classify", help="zero-shot classification of an image among labels")
    p.add_argument("--model", default="mini")
    p.add_argument("--image", required=True)
    p.add_argument("--labels", required=True, help='comma-separated labels, e.g. "猫,狗,汽车"')
    p.add_argument("--language", default=None, help="template language (default: guessed from the labels' script)")
    p.add_argument("--template", action="append", help="a template with {} for the label; repeatable")
    p.add_argument("--top", type=int, default=0, help="print only the best N")
    add_device_arguments(p)
    p.set_defaults(func=cmd_clip_classify)


def cmd_clip_classify(args) -> int:
    from altdiffusion.clip import load_clip

    image = open_image(args.image, "image")
    labels = [x for x in args.labels.replace("，", ",").split(",") if x.strip()]
    clip = load_clip(args.model, device=args.device, dtype=args.dtype)
    ranked = clip.classify(image, labels, language=args.language, templates=args.template or None)
    width = max(len(label) for label, _ in ranked)
    for label, prob in ranked[: args.top or None]:
        print(f"{label:<{width}}  {prob:7.2%}")
    return 0
