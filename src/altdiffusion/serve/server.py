"""Run the A1111-compatible API with uvicorn: :func:`serve`, also ``python -m altdiffusion.serve``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from altdiffusion.serve.app import DEFAULT_MAX_BODY_BYTES, create_app

logger = logging.getLogger("altdiffusion.serve")


def model_name_of(source: str | Path) -> str:
    """The configured name for a model given only by its folder / hub id: its last path part."""
    text = str(source).rstrip("/\\")
    return Path(text).name or text


def _as_models(model) -> dict[str, str | Path]:
    if isinstance(model, Mapping):
        return dict(model)
    if isinstance(model, (str, Path)):
        return {model_name_of(model): model}
    if isinstance(model, Sequence):
        return {model_name_of(m): m for m in model}
    raise ValueError(f"model must be a folder, hub id, 'mini', or a mapping of name -> model; got {model!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    model,
    host: str = "127.0.0.1",
    port: int = 7860,
    api_auth: str | None = None,
    max_queue: int = 8,
    *,
    default: str | None = None,
    device=None,
    dtype=None,
    max_pixels: int = 1024 * 1024,
    max_steps: int = 150,
    max_batch: int = 8,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    safety_checker: bool = True,
    log_level: str = "info",
    lora_dir: str | Path | None = None,
) -> None:
    """Serve ``model`` on http://host:port/sdapi/v1/ until interrupted (Ctrl+C).

    ``model``: a folder, hub id or ``"mini"`` (named after its last path part), a list of
    them, or a mapping ``{name: source}``; ``default`` picks the first one loaded (default:
    the first). Binds to loopback unless ``host`` says otherwise; serving on another address
    without ``api_auth="user:password"`` logs a warning.
    """
    import uvicorn

    models = _as_models(model)
    if not models:
        raise ValueError("no model given")
    default = default or next(iter(models))
    if not _is_loopback(host) and api_auth is None:
        logger.warning("serving on %s without --api-auth: anyone who can reach this address can use the GPU", host)
    app = create_app(
        models,
        default=default,
        device=device,
        dtype=dtype,
        max_queue=max_queue,
        max_pixels=max_pixels,
        max_steps=max_steps,
        max_batch=max_batch,
        max_body_bytes=max_body_bytes,
        api_auth=api_auth,
        safety_checker=safety_checker,
        lora_dir=lora_dir,
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)


def _model_arg(text: str) -> tuple[str, str]:
    name, sep, source = text.partition("=")
    if sep and name and source and not Path(text).exists():
        return name, source
    return model_name_of(text), text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m altdiffusion.serve", description="AUTOMATIC1111-compatible HTTP API"
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[NAME=]MODEL",
        help="model folder, hub id or 'mini'; repeat for several (the first is loaded)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--api-auth", default=None, metavar="USER:PASSWORD")
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--no-safety-checker", action="store_true")
    args = parser.parse_args(argv)
    models = dict(_model_arg(m) for m in args.model)
    from altdiffusion.errors import AltDiffusionError

    try:
        serve(
            models,
            args.host,
            args.port,
            api_auth=args.api_auth,
            max_queue=args.max_queue,
            device=args.device,
            dtype=args.dtype,
            safety_checker=not args.no_safety_checker,
        )
    except (AltDiffusionError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    return 0
