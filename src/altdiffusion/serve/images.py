"""Base64 images in and out of the API.

Inputs are base64 strings, raw or ``data:image/...;base64,`` URLs. URLs to fetch
(``http://``, ``https://``, ``file:``...) are refused: the server never reaches out to the
network or the filesystem on a client's behalf. Images are checked for size from their header
(:func:`read_image`) and decoded only when a job needs their pixels, so a small compressed file
cannot expand into gigabytes while it waits.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from altdiffusion.pipelines.infotext import PNG_KEY, png_bytes
from altdiffusion.serve.reprs import without_reprs

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*;base64,", re.IGNORECASE)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
# Plain raster formats only: PIL would hand e.g. EPS to Ghostscript.
INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


class BadImage(ValueError):
    """The client sent something that is not a usable base64 image; the message says why."""


@dataclass(frozen=True)
class EncodedImage:
    """An image as the client sent it, checked from its header: size and format are known, the
    pixels are decoded only by :meth:`decode`, when a job needs them."""

    data: bytes
    width: int
    height: int
    field: tuple[str | int, ...]  # where the request carried it: ("init_images", 0), ("mask",)

    @property
    def label(self) -> str:
        return self.field[0] + "".join(f"[{part}]" for part in self.field[1:])

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def open(self) -> Image.Image:
        """The image with its header and metadata read, its pixels not yet decoded."""
        return Image.open(io.BytesIO(self.data), formats=INPUT_FORMATS)

    def decode(self) -> Image.Image:
        """The decoded image, or :class:`BadImage` (a header can be fine and the data truncated)."""
        try:
            image = self.open()
            image.load()
        except Exception as exc:
            raise BadImage(f"{self.label} cannot be decoded ({_reason(exc)}); send a complete image file") from None
        return image


def read_image(data: str, *, max_pixels: int, field: tuple[str | int, ...]) -> EncodedImage:
    """The base64 image ``data``, its header checked (format, ``max_pixels``), or :class:`BadImage`."""
    label = EncodedImage(b"", 0, 0, field).label
    raw = _base64_bytes(data, label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(raw), formats=INPUT_FORMATS).size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"{label} is too large to decode; send a smaller image") from None
    except Exception as exc:
        raise BadImage(
            f"{label} is not a readable image ({_reason(exc)}); send one of: {', '.join(INPUT_FORMATS)}"
        ) from None
    if width <= 0 or height <= 0 or width * height > max_pixels:
        raise BadImage(
            f"{label} is {width}x{height} pixels, more than this server accepts ({max_pixels} pixels); send a smaller image"
        )
    return EncodedImage(raw, width, height, field)


def _base64_bytes(data: str, label: str) -> bytes:
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
    return raw


def _reason(exc: Exception) -> str:
    """What went wrong, for the client: PIL's message without the object reprs it carries."""
    if isinstance(exc, UnidentifiedImageError):
        return "unknown image format"
    return f"{type(exc).__name__}: {without_reprs(str(exc))}"


def encode_png(image: Image.Image, infotext: str | None = None) -> str:
    """Base64 PNG carrying ``infotext`` in the ``parameters`` chunk (as A1111 writes it)."""
    return base64.b64encode(png_bytes(image, infotext)).decode("ascii")


def text_chunks(image: Image.Image) -> dict[str, str]:
    """The text metadata an image's header carries (PNG text chunks before the pixels, as A1111 reads
    ``image.info``, plus EXIF UserComment when present); the pixels are never decoded."""
    items: dict[str, str] = {}
    for key, value in image.info.items():
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
