"""``altdiffusion serve``: the AUTOMATIC1111-compatible HTTP API."""

from __future__ import annotations

import argparse

from altdiffusion.cli.common import add_device_arguments


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="AUTOMATIC1111-compatible HTTP API (/sdapi/v1/) on loopback")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="[NAME=]MODEL",
        help="model folder, hub id or 'mini'; repeat to offer several (default: mini)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--api-auth", default=None, metavar="USER:PASSWORD", help="require HTTP Basic credentials")
    p.add_argument("--max-queue", type=int, default=8, help="waiting requests before 429")
    p.add_argument(
        "--lora-dir",
        default=None,
        help="folder of LoRA .safetensors files that prompts may name with <lora:name:weight>",
    )
    p.add_argument("--no-safety-checker", action="store_true")
    add_device_arguments(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from altdiffusion.serve.server import _model_arg, serve

    models = dict(_model_arg(m) for m in (args.model or ["mini"]))
    serve(
        models,
        args.host,
        args.port,
        api_auth=args.api_auth,
        max_queue=args.max_queue,
        device=args.device,
        dtype=args.dtype,
        safety_checker=not args.no_safety_checker,
        lora_dir=args.lora_dir,
    )
    return 0
