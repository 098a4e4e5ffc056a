"""Base64 images in and out of the API.

Inputs are base64 strings, raw or ``data:image/...;base64,`` URLs. URLs to fetch
(``http://``, ``https://``, ``file:``...) are refused: the server never reaches out to the
network or the filesystem on a client's behalf. Images are checked for size before their
pixels are decoded, so a small compressed file cannot expand into gigabytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings

from PIL import Image

from altdiffusion.pipelines.infotext import PNG_KEY, png_bytes

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*;base64,", re.IGNORECASE)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
# Plain raster formats only: PIL would hand e.g. EPS to Ghostscript.
INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


class BadImage(ValueError):
    """The client sent something that is not a usable base64 image; the message says why."""


def decode_image(data: str, *, max_pixels: int, label: str = "image") -> Image.Image:
    """A loaded PIL image from base64 text, or :class:`BadImage`."""
    if not isinstance(data, str) or not data.strip():
        raise BadImage(f"{label} is empty; send a base64-encoded PNG/JPEG/WebP")
    text = data.strip()
    match = _DATA_URL.match(text)
    if match:
        text = text[match.end() :]
    elif _URL.match(text) or text.lower().startswith(("file:", "data:")):
        raise BadImage(
            f"{label} looks like a URL ({text[:40]!r}); this server does not fetch URLs, send the image itself as base64"
        )
    text = _WHITESPACE.sub("", text)
    text += "=" * (-len(text) % 4)  # some clients strip the padding
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage(f"{label} is not valid base64; send the file bytes base64-encoded") from None
    if not raw:
        raise BadImage(f"{label} is empty; send a base64-encoded PNG/JPEG/WebP")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw), formats=INPUT_FORMATS)
            width, height = image.size
            if width <= 0 or height <= 0 or width * height > max_pixels:
                raise BadImage(
                    f"{label} is {width}x{height} pixels, more than this server accepts ({max_pixels} pixels); send a smaller image"
                )
            image.load()
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"{label} is too large to decode; send a smaller image") from None
    except Exception as exc:
        raise BadImage(
            f"{label} is not a readable image ({type(exc).__name__}: {exc}); send one of: {', '.join(INPUT_FORMATS)}"
        ) from None
    return image


def encode_png(image: Image.Image, infotext: str | None = None) -> str:
    """Base64 PNG carrying ``infotext`` in the ``parameters`` chunk (as A1111 writes it)."""
    return base64.b64encode(png_bytes(image, infotext)).decode("ascii")


def text_chunks(image: Image.Image) -> dict[str, str]:
    """All text metadata of an image (PNG tEXt/iTXt/zTXt, plus EXIF UserComment when present)."""
    items: dict[str, str] = {}
    chunks = getattr(image, "text", None) or {}
    for key, value in {**image.info, **chunks}.items():
        if isinstance(value, str):
            items[str(key)] = value
    if PNG_KEY not in items:
        comment = _exif_user_comment(image)
        if comment:
            items[PNG_KEY] = comment
    return items


def _exif_user_comment(image: Image.Image) -> str | None:
    try:
        exif = image.getexif().get_ifd(0x8769)  # Exif IFD
        raw = exif.get(0x9286)  # UserComment
    except Exception:
        return None
    if isinstance(raw, bytes):
        if raw.startswith(b"UNICODE\0"):
            body = raw[8:]
            for enc in ("utf-16-be", "utf-16-le"):
                try:
                    return body.decode(enc).rstrip("\0")
                except UnicodeDecodeError:
                    continue
            return None
        if raw.startswith(b"ASCII\0\0\0"):
            return raw[8:].decode("ascii", "replace").rstrip("\0")
        return raw.decode("utf-8", "replace").rstrip("\0") or None
    return raw if isinstance(raw, str) else None
