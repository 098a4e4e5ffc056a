"""The ``altdiffusion`` command.

    altdiffusion generate "一个红色的大圆形，位于画面中央，白色背景。" --model mini --steps 20 --seed 42 --out outputs/
    altdiffusion info BAAI/AltDiffusion-m9
    altdiffusion convert BAAI/AltDiffusion-m9 AltDiffusion-m9.safetensors --dtype fp16
    altdiffusion clip classify --model BAAI/AltCLIP --image cat.jpg --labels "猫,狗,汽车"
    altdiffusion dev tiny /tmp/tiny --layout altdiffusion-m18

A user's mistake (a bad path, a broken checkpoint, an invalid setting) prints one line,
``error: ...``, and exits with status 2; Ctrl-C exits with 130 and leaves no partial file.

Each command group lives in its own module (``generate``, ``info``, ``convert``, ``clip``, ``serve``,
``eval``, ``train``, ``data``, ``mini``, ``dev``) with its parser and its functions; every subcommand
names its function with ``set_defaults(func=...)``. Building the parser imports no torch,
diffusers or transformers: a command imports what it needs when it runs, so ``--help`` is quick.
"""

from __future__ import annotations

import argparse
import sys

from altdiffusion import __version__
from altdiffusion.cli.clip import add_clip_parsers
from altdiffusion.cli.convert import add_convert_parser
from altdiffusion.cli.data import add_data_parsers
from altdiffusion.cli.dev import add_dev_parsers
from altdiffusion.cli.eval import add_eval_parsers
from altdiffusion.cli.generate import add_generate_parser
from altdiffusion.cli.info import add_info_parser
from altdiffusion.cli.mini import add_mini_parsers
from altdiffusion.cli.serve import add_serve_parser
from altdiffusion.cli.train import add_train_parsers
from altdiffusion.console import quiet_libraries
from altdiffusion.errors import AltDiffusionError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="altdiffusion", description="Multilingual text-to-image with AltCLIP and AltDiffusion."
    )
    parser.add_argument("--version", action="version", version=f"altdiffusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parsers in (
        add_generate_parser,
        add_info_parser,
        add_convert_parser,
        add_clip_parsers,
        add_eval_parsers,
        add_serve_parser,
        add_train_parsers,
        add_data_parsers,
        add_mini_parsers,
        add_dev_parsers,
    ):
        add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        quiet_libraries()
        return args.func(args)
    except AltDiffusionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__ = ["build_parser", "main"]
