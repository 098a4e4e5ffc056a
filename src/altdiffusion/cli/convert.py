"""``altdiffusion convert``: a model folder <-> one A1111-layout ``.safetensors`` (pipelines/convert.py)."""

from __future__ import annotations

import argparse

from altdiffusion.cli.common import add_config_argument


def add_convert_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="a model folder -> one .safetensors in A1111's layout, or a single file -> a diffusers folder",
    )
    p.add_argument("source", help="model folder, hub id, 'mini', or a single file (.safetensors/.ckpt/.pt)")
    p.add_argument("target", help="a .safetensors file (from a folder) or a new folder (from a file)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None, help="default: as stored")
    add_config_argument(p)
    p.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    from altdiffusion.pipelines.convert import convert

    print(convert(args.source, args.target, dtype=args.dtype, config=args.config))
    return 0
