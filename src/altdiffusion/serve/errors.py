"""Errors as JSON ``{"error": ..., "detail": ...}``, and the field errors request checks raise.

422 for invalid input (a field-level ``detail`` list for request validation), 413 for bodies
over ``max_body_bytes``, 429 for a full queue, 503 for a job past ``--max-job-seconds``, 401 without the right credentials, 400 for an
unknown model or another error the user can act on, 503 when the GPU is out of memory.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from altdiffusion.errors import AltDiffusionError, InvalidInputError
from altdiffusion.serve.reprs import without_reprs
from altdiffusion.serve.runner import JobTimeLimit, QueueFull

logger = logging.getLogger("altdiffusion.serve")

HTTP_ERROR_NAMES = {401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge"}


def field_error(field: str | tuple, message: str) -> RequestValidationError:
    """A 422 naming the request field at fault (``("init_images", 0)`` for a nested one)."""
    loc = ("body", *(field if isinstance(field, tuple) else (field,)))
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": None}])


def error_response(status: int, error: str, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    if isinstance(detail, str):
        detail = without_reprs(detail)
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def clean_errors(errors) -> list[dict[str, Any]]:
    """Field-level messages without echoing the (possibly huge) input back."""
    out = []
    for err in errors:
        loc = [part if isinstance(part, (str, int)) else str(part) for part in err.get("loc", ())]
        out.append(
            {"loc": loc, "msg": without_reprs(str(err.get("msg", ""))), "type": str(err.get("type", "value_error"))}
        )
    return out


async def _validation(request: Request, exc: RequestValidationError):
    return error_response(422, "RequestValidationError", clean_errors(exc.errors()))


async def _http(request: Request, exc: StarletteHTTPException):
    name = HTTP_ERROR_NAMES.get(exc.status_code, "HTTPException")
    return error_response(exc.status_code, name, exc.detail, getattr(exc, "headers", None))


async def _queue_full(request: Request, exc: QueueFull):
    return error_response(429, "QueueFull", f"queue full: {exc}; retry later", {"Retry-After": "1"})


async def _time_limit(request: Request, exc: JobTimeLimit):
    return error_response(503, "JobTimeLimit", str(exc))


async def _invalid(request: Request, exc: InvalidInputError):
    return error_response(422, "InvalidInputError", str(exc))


async def _altdiffusion(request: Request, exc: AltDiffusionError):
    return error_response(400, type(exc).__name__, str(exc))


async def _out_of_memory(request: Request, exc: Exception):
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return error_response(
        503, "OutOfMemoryError", "out of GPU memory; try a smaller size or batch", {"Retry-After": "5"}
    )


async def _unexpected(request: Request, exc: Exception):
    logger.exception("unexpected error on %s", request.url.path)
    return error_response(500, type(exc).__name__, str(exc) or "internal error")


def add_exception_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(QueueFull, _queue_full)
    app.add_exception_handler(JobTimeLimit, _time_limit)
    app.add_exception_handler(InvalidInputError, _invalid)
    app.add_exception_handler(AltDiffusionError, _altdiffusion)
    app.add_exception_handler(torch.cuda.OutOfMemoryError, _out_of_memory)
    app.add_exception_handler(Exception, _unexpected)
