"""The ``/sdapi/v1/`` routes, by topic; each module has one ``router``."""

from fastapi import Request

from altdiffusion.serve.service import Service

API_PREFIX = "/sdapi/v1"


def service_of(request: Request) -> Service:
    """The app's :class:`Service` (a FastAPI dependency)."""
    return request.app.state.service
