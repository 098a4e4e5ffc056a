"""The web UI: a static page at ``/`` (HTML + vanilla JS + CSS, no external resources).

The page talks to the same ``/sdapi/v1/`` endpoints as any API client, so HTTP Basic auth,
when the server has it, protects the page too. Files are served from a fixed allow-list
read once from the package's ``static/`` folder (plain files directly inside it): a request
names a file, never a path, so nothing outside that folder can be reached.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

logger = logging.getLogger("altdiffusion.serve")

STATIC_DIR = Path(__file__).with_name("static")

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# Only this origin: the page works offline and cannot be made to load or post elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
}


def static_files(folder: Path = STATIC_DIR) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, media type) for the servable files directly in ``folder``."""
    files: dict[str, tuple[bytes, str]] = {}
    if not folder.is_dir():
        return files
    for path in sorted(folder.iterdir()):
        kind = _TYPES.get(path.suffix.lower())
        if kind and path.is_file() and not path.is_symlink() and not path.name.startswith("."):
            files[path.name] = (path.read_bytes(), kind)
    return files


def add_ui(app: FastAPI, folder: Path = STATIC_DIR) -> None:
    """Serve ``index.html`` at ``/`` and the other files at ``/static/<name>``."""
    files = static_files(folder)
    missing = "index.html" not in files
    if missing:  # the API still works; only the page is unavailable
        logger.warning("web UI files are missing (no index.html in %s); serving the API only", folder)

    def _file(name: str) -> Response:
        entry = files.get(name)
        if entry is None:
            if missing and name == "index.html":
                detail = "the web UI files are not installed with this package; the API at /sdapi/v1/ works"
                return JSONResponse({"error": "NotFound", "detail": detail}, status_code=404)
            return JSONResponse({"error": "NotFound", "detail": "Not Found"}, status_code=404)
        data, kind = entry
        return Response(data, media_type=kind, headers=_HEADERS)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return _file("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        return _file(name)
