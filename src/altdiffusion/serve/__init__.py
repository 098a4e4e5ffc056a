"""AUTOMATIC1111-compatible HTTP API (``/sdapi/v1/``) for AltDiffusion, on FastAPI + uvicorn."""

from altdiffusion.serve.app import create_app
from altdiffusion.serve.server import serve

__all__ = ["create_app", "serve"]
