"""``altdiffusion dev ...``: developer tools."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_dev_parsers(sub: argparse._SubParsersAction) -> None:
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


def cmd_dev_tiny(args) -> int:
    from altdiffusion.models.tiny import write_tiny_altclip, write_tiny_altdiffusion

    family, _, variant = args.layout.partition("-")
    writer = write_tiny_altclip if family == "altclip" else write_tiny_altdiffusion
    writer(Path(args.folder), variant or "m2", seed=args.seed)
    print(args.folder)
    return 0
