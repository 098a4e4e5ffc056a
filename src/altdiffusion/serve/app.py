"""An AUTOMATIC1111-compatible HTTP API (``/sdapi/v1/...``) for AltDiffusion, on FastAPI.

``create_app(ServeConfig(...))`` builds it; the parts live in their own modules:

* config.py     the one configuration (models, address, auth, limits) and its command-line options
* registry.py   configured models by name, their hashes, the loaded pipeline (switching models)
* service.py    the worker (one job at a time, bounded queue) and what the routes share
* plans.py      a request checked against the limits -> a Plan (422 naming the field otherwise)
* jobs.py       a Plan run on the pipeline -> one record per image (interrupt/skip keep partial images)
* responses.py  A1111's response: PNGs with infotexts, the request echoed, ``info``
* progress.py   ``progress`` and its live preview
* errors.py     JSON errors and the exception handlers
* routes/       the endpoints; ui.py the web UI at ``/``; middleware.py auth, the body limit, Host/Origin
  checks; connections.py timeouts and the connection cap; openapi.py the limits in the schema

Behaviour worth knowing (see also the README section "HTTP API"): models are chosen only by
their configured name, never by a path; ``POST interrupt`` stops the running job before its
next sampling step and ``POST skip`` only the current iteration, and the answer is still 200
with the partially denoised images flagged in ``info`` (``partial``, ``sampling_steps_done``).
"""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from altdiffusion import __version__
from altdiffusion.serve.config import ServeConfig
from altdiffusion.serve.errors import add_exception_handlers
from altdiffusion.serve.middleware import (
    AllowedMethodsMiddleware,
    BasicAuthMiddleware,
    BodyLimitMiddleware,
    SameOriginMiddleware,
    parse_credentials,
)
from altdiffusion.serve.openapi import publish_limits
from altdiffusion.serve.routes import generation, models, utilities
from altdiffusion.serve.service import Service


def create_app(config: ServeConfig) -> FastAPI:
    """The FastAPI application serving ``config`` (validated first: a mistake is one InvalidInputError).

    Resolves every model, and loads the default one when ``config.preload``, before returning.
    """
    config.validate()
    service = Service(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.ensure_worker()
        yield
        await service.shutdown()

    app = LimitedAPI(
        title="altdiffusion API",
        description="AUTOMATIC1111-compatible HTTP API (`/sdapi/v1/`) for AltDiffusion.",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.service = service
    add_exception_handlers(app)
    for module in (generation, models, utilities):
        app.include_router(module.router)
    if config.ui:
        from altdiffusion.serve.ui import add_ui

        add_ui(app)
    # Middleware: the last added runs first, so Host, Origin and auth are checked before the body is read.
    app.add_middleware(AllowedMethodsMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    if config.api_auth is not None:
        app.add_middleware(BasicAuthMiddleware, credentials=parse_credentials(config.api_auth))
    app.add_middleware(SameOriginMiddleware, hosts=config.host_names, origins=config.cors_origins)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["*"], allow_headers=["*"]
        )
    return app


class LimitedAPI(FastAPI):
    """FastAPI whose OpenAPI schema states this server's limits (maxItems, maximum, descriptions)."""

    def openapi(self) -> dict:
        if self.openapi_schema is None:
            publish_limits(super().openapi(), self.state.service.config)
        return self.openapi_schema
