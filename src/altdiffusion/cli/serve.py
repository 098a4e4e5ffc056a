"""``altdiffusion serve``: the AUTOMATIC1111-compatible HTTP API (options shared with ``python -m altdiffusion.serve``)."""

from __future__ import annotations

import argparse


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    from altdiffusion.serve.config import add_serve_arguments  # light: no torch or FastAPI

    p = sub.add_parser("serve", help="AUTOMATIC1111-compatible HTTP API (/sdapi/v1/) on loopback")
    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from altdiffusion.serve.server import run_from_args

    return run_from_args(args)
