"""Run the A1111-compatible API with uvicorn: :func:`serve`, ``python -m altdiffusion.serve``
and ``altdiffusion serve`` (both parse :func:`~altdiffusion.serve.config.add_serve_arguments`)."""

from __future__ import annotations

import argparse
import functools
import ipaddress
import logging
import sys

from altdiffusion.errors import AltDiffusionError
from altdiffusion.serve.config import FILE_RESERVE, ServeConfig, add_serve_arguments, config_from_args, models_from

logger = logging.getLogger("altdiffusion.serve")


def serve(
    model, host: str = "127.0.0.1", port: int = 7860, api_auth: str | None = None, max_queue: int = 8, **settings
):
    """Serve ``model`` on http://host:port/sdapi/v1/ until interrupted (Ctrl+C).

    ``model``: a folder, hub id or ``"mini"`` (named after its last path part), a list of
    them, or a mapping ``{name: source}``. ``settings`` are the other :class:`ServeConfig`
    fields (``default``, ``device``, ``max_steps``, ``lora_dir``...).
    """
    config = ServeConfig(models_from(model), host=host, port=port, api_auth=api_auth, max_queue=max_queue, **settings)
    run(config)


def run(config: ServeConfig) -> None:
    """Build the app for ``config`` and serve it with uvicorn (one process: one GPU job at a time)."""
    import uvicorn

    from altdiffusion.serve.app import create_app

    if not _is_loopback(config.host) and config.api_auth is None:
        logger.warning(
            "serving on %s without --api-auth: anyone who can reach this address can use the GPU", config.host
        )
    app = create_app(config)  # validates config, the hard open-files limit included
    raise_open_file_limit(config.max_connections + FILE_RESERVE)
    uvicorn.Server(uvicorn_config(app, config)).run()


def raise_open_file_limit(needed: int) -> None:
    """Lift the soft open-files limit to ``needed`` (validate() checked the hard limit allows it):
    with `ulimit -n` at 1,024 and --max-connections 2,000, the connection limit would otherwise be
    "Too many open files" instead of the 503 it promises."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        logger.info("raised the open-files limit from %d to %d for --max-connections", soft, needed)


def uvicorn_config(app, config: ServeConfig, **overrides):
    """uvicorn's settings for ``config``: its address, the connection limits and timeouts, and a
    log that a flood of connections cannot fill (repeated messages are rate limited)."""
    import uvicorn

    from altdiffusion.serve.connections import ConnectionLimits, GuardedH11Protocol, limit_log_rate

    limits = ConnectionLimits(config.max_connections, config.header_timeout, config.body_timeout)
    settings = dict(
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        workers=1,
        http=functools.partial(GuardedH11Protocol, limits=limits),
        timeout_keep_alive=config.keep_alive_timeout,
        backlog=max(128, config.max_connections),
    )
    uvicorn_settings = uvicorn.Config(app, **{**settings, **overrides})  # configures uvicorn's loggers
    limit_log_rate()
    return uvicorn_settings


def run_from_args(args: argparse.Namespace) -> int:
    """Serve what parsed :func:`add_serve_arguments` options say; a mistake raises AltDiffusionError."""
    run(config_from_args(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m altdiffusion.serve", description="AUTOMATIC1111-compatible HTTP API (/sdapi/v1/)"
    )
    return add_serve_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    from altdiffusion.console import quiet_libraries

    args = build_parser().parse_args(argv)
    try:
        quiet_libraries()  # as `altdiffusion serve` does: hub download bars in the log, no library chatter
        return run_from_args(args)
    except AltDiffusionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
