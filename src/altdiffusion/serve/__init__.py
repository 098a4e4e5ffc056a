"""AUTOMATIC1111-compatible HTTP API (``/sdapi/v1/``) for AltDiffusion, on FastAPI + uvicorn.

``create_app(ServeConfig({"name": folder}, ...))`` for an ASGI app, ``serve(folder)`` to run one.
The names are imported on first use: the CLI imports ``altdiffusion.serve.config`` while it
builds its parser, which must not pull in torch and FastAPI.
"""

from __future__ import annotations

import importlib

__all__ = ["ServeConfig", "create_app", "serve"]

_HOMES = {
    "ServeConfig": "altdiffusion.serve.config",
    "create_app": "altdiffusion.serve.app",
    "serve": "altdiffusion.serve.server",
}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
