"""Pure ASGI middleware: HTTP Basic auth, a request-body size limit, the Host / Origin checks and
the methods a path allows.

They run before any route (and before FastAPI reads the body), so an unauthenticated or
oversized request costs the server almost nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets

from starlette.exceptions import HTTPException
from starlette.routing import Match


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


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def host_name(host: str) -> str:
    """``"Example.com:7860"`` -> ``"example.com"``, ``"[::1]:80"`` -> ``"::1"``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


class SameOriginMiddleware:
    """403 for a Host header the server does not answer to, and for a state-changing request sent by
    a page of another origin.

    Without auth, a foreign page could otherwise POST ``/interrupt`` (a ``text/plain`` POST needs no
    CORS preflight) or reach the server through DNS rebinding (its own name, resolving to 127.0.0.1).
    Browsers always send ``Origin`` on such requests; other clients send none and are let through.
    """

    def __init__(self, app, hosts: tuple[str, ...], origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.any_host = "*" in hosts
        self.hosts = {host_name(h) for h in hosts}
        self.origins = {o.rstrip("/").lower() for o in origins}

    def _refusal(self, scope) -> str | None:
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.any_host and host_name(host) not in self.hosts:
            return f"Host {host!r} is not a name this server answers to; start it with --allowed-hosts {host_name(host) or 'NAME'}"
        origin = headers.get(b"origin")
        if origin is None or (scope["type"] == "http" and scope["method"] in SAFE_METHODS):
            return None
        origin_text = origin.decode("latin-1").rstrip("/").lower()
        own = f"{'wss' if scope['scheme'] in ('https', 'wss') else 'ws'}://{host}".lower()
        own_http = f"{'https' if scope['scheme'] in ('https', 'wss') else 'http'}://{host}".lower()
        if origin_text in self.origins or origin_text in (own, own_http):
            return None
        return f"cross-origin request from {origin_text!r} refused; start the server with --cors-origins to allow it"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        start, body = _json_response(403, "Forbidden", refusal)
        await send(start)
        await send(body)


class AllowedMethodsMiddleware:
    """OPTIONS answers 204 with every method a path takes, and a wrong method gets 405 with the same
    ``Allow`` list (Starlette names only the first route's methods when two routes share a path)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or _matches(scope, scope["method"]):
            return await self.app(scope, receive, send)
        methods = {method for method in HTTP_METHODS if _matches(scope, method)}
        if not methods:  # no route has this path: the app's 404
            return await self.app(scope, receive, send)
        allow = [(b"allow", ", ".join(sorted(methods | {"OPTIONS"})).encode())]
        if scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": allow})
            await send({"type": "http.response.body", "body": b""})
            return
        start, body = _json_response(405, "MethodNotAllowed", f"{scope['method']} is not allowed here", allow)
        await send(start)
        await send(body)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _matches(scope, method: str) -> bool:
    """Whether a route of the app takes ``method`` on ``scope``'s path (mounts, e.g. static files, take all)."""
    probe = {**scope, "method": method}
    return any(route.matches(probe)[0] == Match.FULL for route in scope["app"].routes)
