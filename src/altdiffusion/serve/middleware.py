"""Pure ASGI middleware: HTTP Basic auth and a request-body size limit.

Both run before any route (and before FastAPI reads the body), so an unauthenticated or
oversized request costs the server almost nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets

from starlette.exceptions import HTTPException


def _json_response(status: int, error: str, detail: str, headers: list[tuple[bytes, bytes]] = ()):
    body = json.dumps({"error": error, "detail": detail}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
    }
    return start, {"type": "http.response.body", "body": body}


def parse_credentials(api_auth: str) -> tuple[bytes, bytes]:
    """``"user:pass"`` -> (user, password) as UTF-8 bytes; the password may contain ':'."""
    if not isinstance(api_auth, str):
        raise ValueError("api_auth must be a string of the form user:password")
    user, sep, password = api_auth.partition(":")
    if not sep or not user or not password:
        raise ValueError("api_auth must have the form user:password, both non-empty")
    return user.encode(), password.encode()


class BasicAuthMiddleware:
    """Require HTTP Basic credentials on every request (docs and schema included)."""

    realm = b'Basic realm="altdiffusion API", charset="UTF-8"'

    def __init__(self, app, credentials: tuple[bytes, bytes]) -> None:
        self.app = app
        self.user, self.password = credentials

    def _allowed(self, header: bytes | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        # Compare both parts every time, so timing says nothing about which one was wrong.
        user_ok = secrets.compare_digest(user, self.user)
        password_ok = secrets.compare_digest(password, self.password)
        return bool(sep) and user_ok and password_ok

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        header = dict(scope.get("headers") or []).get(b"authorization")
        if self._allowed(header):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        start, body = _json_response(
            401,
            "Unauthorized",
            "missing or wrong credentials; use HTTP Basic auth",
            [(b"www-authenticate", self.realm)],
        )
        await send(start)
        await send(body)


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than this server accepts ({limit} bytes)")


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``: by Content-Length up front, and by counting the
    bytes actually received (chunked uploads, or a Content-Length that lies)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                start, body = _json_response(400, "BadRequest", "invalid Content-Length header")
                await send(start)
                await send(body)
                return
            if declared > self.max_bytes:
                start, body = _json_response(413, "PayloadTooLarge", BodyTooLarge(self.max_bytes).detail)
                await send(start)
                await send(body)
                return

        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            start, body = _json_response(413, "PayloadTooLarge", exc.detail)
            await send(start)
            await send(body)
