"""AUTOMATIC1111-style "infotext": the generation settings stored in a PNG.

A1111 writes the prompt, the negative prompt and a ``Key: value, Key: value`` line
into a PNG text chunk named ``parameters``. Reading and writing the same format lets
users paste settings between this project and the A1111 ecosystem, and lets every
image we write carry what is needed to reproduce it.

Layout::

    <prompt, possibly several lines>
    Negative prompt: <negative, possibly several lines>   (omitted when empty)
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x512
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path

from PIL import Image, PngImagePlugin

from altdiffusion.errors import InvalidInputError

NEGATIVE_PREFIX = "Negative prompt:"
PNG_KEY = "parameters"

# One ``Key: value`` pair of the parameters line. A value is either JSON-quoted or runs
# to the next comma (it may contain ':' as in "Time taken: 1:05").
_PAIR = re.compile(
    r'\s*(?P<key>[^\s,:"][^,:"\n]*?)\s*:\s*'
    r'(?P<value>"(?:\\.|[^\\"\n])*"|[^,\n]*?)\s*(?:,|$)'
)
_SIZE = re.compile(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*")
_NUMBERED = r"(\d{5,})(?!\d)"


# ---------------------------------------------------------------------------- format


def _format_value(key: str, value: object) -> str:
    """Write a value the way A1111 does: 7.0 -> "7", 7.5 -> "7.5", (512, 768) -> "512x768"."""
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, float):
        text = repr(value)  # shortest text that reads back as the same float
    elif key == "Size" and isinstance(value, (tuple, list)) and len(value) == 2:
        text = f"{value[0]}x{value[1]}"
    else:
        text = str(value)
    # A1111 quotes values containing ',', newline or ':'. We also quote values that
    # start with '"' or have outer whitespace, which the parser would otherwise alter.
    if any(c in text for c in ",\n:") or text.startswith('"') or text != text.strip():
        return json.dumps(text, ensure_ascii=False)
    return text


def format_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object]) -> str:
    """Build the infotext for one image; ``params`` keep their order, ``None`` values are skipped."""
    if not isinstance(prompt, str) or not isinstance(negative_prompt, str):
        raise InvalidInputError(
            "infotext: prompt and negative prompt must be strings; "
            f"got {type(prompt).__name__} and {type(negative_prompt).__name__}"
        )
    pairs = []
    for key, value in params.items():
        if value is None:
            continue
        if not isinstance(key, str) or not key.strip() or any(c in key for c in ',:"\n'):
            raise InvalidInputError(
                f"infotext: parameter name {key!r} cannot be written; names must be non-empty "
                "text without ',', ':', '\"' or line breaks (use A1111 names like 'CFG scale')"
            )
        pairs.append(f"{key.strip()}: {_format_value(key, value)}")
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{NEGATIVE_PREFIX} {negative_prompt}")
    if pairs:
        lines.append(", ".join(pairs))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- parse


def generation_infotexts(pipe, inputs, extra: Mapping[str, object] | None = None) -> list[str]:
    """A1111's infotext for each image of a generation: ``inputs`` (pipelines/inputs.py) as the
    ``pipe`` that made them (its model hash and name, VAE, LoRAs and embeddings) sees them."""
    from altdiffusion import __version__
    from altdiffusion.pipelines.noise import rng_infotext
    from altdiffusion.pipelines.samplers import sampler_name_for

    params = {
        "Steps": inputs.steps,
        "Sampler": inputs.sampler or sampler_name_for(pipe.scheduler),
        "Schedule type": inputs.schedule,
        "CFG scale": inputs.guidance_scale,
        "Seed": None,
        "Size": f"{inputs.width}x{inputs.height}",
        "Model hash": pipe.model_hash,
        "Model": pipe.name or None,
        **(pipe.vae_source.infotext() if pipe.vae_source else {}),
        "Variation seed": None,
        **inputs.variation.infotext(),
        "Denoising strength": inputs.hires.settings.denoising_strength if inputs.hires else inputs.strength,
        "Mask blur": inputs.mask_blur if inputs.mask_image is not None else None,
        "RNG": rng_infotext(inputs.randn_source, pipe.device),
        **(inputs.hires.infotext() if inputs.hires else {}),
        "Lora hashes": pipe.merged_loras.hashes(),
        "TI hashes": pipe.embeddings.infotext_hashes([*inputs.conditioning_prompts, *inputs.negative_prompts]),
        **(extra or {}),
        "Version": f"altdiffusion {__version__}",
    }
    subseeds = inputs.variation.subseeds or [None] * inputs.batch
    rows = zip(inputs.prompts, inputs.negative_prompts, inputs.seeds, subseeds)
    return [format_infotext(p, n, {**params, "Seed": s, "Variation seed": u}) for p, n, s, u in rows]


def _parse_params_line(line: str) -> dict[str, str] | None:
    """Pairs of a parameters line, or None if the line is not one.

    A1111 treats the last line as parameters when it holds at least 3 pairs. We also
    require the pairs to cover the whole line, so a prompt such as
    "photo, style: anime, light: soft, mood: calm" stays a prompt.
    """
    pairs: dict[str, str] = {}
    pos = 0
    while pos < len(line) and line[pos:].strip():
        match = _PAIR.match(line, pos)
        if match is None or match.end() == pos:
            return None
        value = match["value"]
        if value.startswith('"') and len(value) >= 2:
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        pairs[match["key"]] = value
        pos = match.end()
    return pairs if len(pairs) >= 3 else None


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Split an infotext into ``(prompt, negative_prompt, params)``; values stay strings."""
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    params = _parse_params_line(lines[-1]) if lines else None
    if params is not None:
        lines = lines[:-1]
    prompt_lines: list[str] = []
    negative_lines: list[str] | None = None
    for line in lines:
        if negative_lines is None and line.startswith(NEGATIVE_PREFIX):
            rest = line[len(NEGATIVE_PREFIX) :]
            negative_lines = [rest[1:] if rest.startswith(" ") else rest]
        elif negative_lines is not None:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)
    negative = "\n".join(negative_lines) if negative_lines is not None else ""
    return "\n".join(prompt_lines), negative, params or {}


def parse_size(text: str) -> tuple[int, int]:
    """``"512x768"`` -> ``(512, 768)`` (width, height), as in A1111's ``Size`` value."""
    match = _SIZE.fullmatch(str(text))
    if match is None or int(match[1]) <= 0 or int(match[2]) <= 0:
        raise InvalidInputError(
            f"size {text!r} is not valid; write it as WIDTHxHEIGHT with positive numbers, e.g. 512x768"
        )
    return int(match[1]), int(match[2])


# ------------------------------------------------------------------------- PNG files


def png_bytes(image: Image.Image, infotext: str | None = None) -> bytes:
    """``image`` as PNG bytes carrying ``infotext`` in the ``parameters`` chunk, as A1111 writes it:
    tEXt when the text is Latin-1 (what most viewers read), else iTXt (UTF-8: Chinese, Arabic...)."""
    info = PngImagePlugin.PngInfo()
    if infotext:
        try:
            infotext.encode("latin-1")
            info.add_text(PNG_KEY, infotext)
        except UnicodeEncodeError:
            info.add_itxt(PNG_KEY, infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def write_png(image: Image.Image, path: str | os.PathLike[str], infotext: str) -> Path:
    """Write ``image`` as a PNG carrying ``infotext``, never leaving a partial file.

    The data goes to a hidden ``.<name>.<random>.tmp`` file in the same folder, is
    fsync'ed and then renamed over ``path`` (atomic on one filesystem). Any failure,
    KeyboardInterrupt included, removes the temporary file and leaves ``path`` as it was.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InvalidInputError(f"only PNG output is supported: {path}; use a name ending in .png")
    if path.is_dir():
        raise InvalidInputError(f"cannot write image to {path}: it is a folder; give a file name ending in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    done = False
    try:
        # 0o666 lets the umask decide permissions, as for any normally created file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as handle:
            handle.write(png_bytes(image, infotext))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        done = True
    finally:
        if not done:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return path


def read_infotext(path_or_image: str | os.PathLike[str] | Image.Image) -> str | None:
    """The ``parameters`` text of a PNG (file or opened image), or None if it has none."""
    if isinstance(path_or_image, Image.Image):
        return _parameters(path_or_image)
    path = Path(path_or_image)
    if not path.is_file():
        raise InvalidInputError(f"cannot read settings from {path}: no such file; check the path")
    try:
        with Image.open(path) as image:
            return _parameters(image)
    except (OSError, SyntaxError) as exc:  # PIL raises these for broken or non-image files
        raise InvalidInputError(f"cannot read settings from {path}: not a readable image ({exc})") from exc


def _parameters(image: Image.Image) -> str | None:
    # ``.text`` also loads text chunks stored after the image data; ``.info`` may not.
    chunks = getattr(image, "text", None) or image.info
    value = chunks.get(PNG_KEY)
    return str(value) if value is not None else None


# ------------------------------------------------------------------------ file names


def output_paths(out: str | os.PathLike[str], count: int, *, seed: int, prefix: str = "") -> list[Path]:
    """Where to save ``count`` images.

    * ``out`` ends in ``.png``: that file for one image, ``stem-0.png, stem-1.png…`` for more.
    * otherwise ``out`` is a folder (created) and names follow A1111:
      ``<prefix>00042-<seed+i>.png``, numbered after the highest number already there.
      Image ``i`` is assumed to use ``seed + i`` (A1111's batch convention). Numbers are
      only taken by writing files, so call again after saving.
    """
    raw = os.fspath(out)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise InvalidInputError(f"image count must be a whole number of at least 1, got {count!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InvalidInputError(f"seed must be a whole number >= 0 when naming files, got {seed!r}")
    if not raw or "\0" in raw:
        raise InvalidInputError(
            f"output path {raw!r} is empty or contains a NUL character; give a folder or a .png name"
        )
    _check_prefix(prefix)
    path = Path(raw)
    is_folder = path.is_dir() or raw.endswith(("/", os.sep))
    if not is_folder and path.suffix and path.suffix.lower() != ".png":
        raise InvalidInputError(
            f"only PNG output is supported: {raw}; use a name ending in .png, or a folder "
            "(for a new folder whose name contains a dot, end the path with '/')"
        )

    if not is_folder and path.suffix.lower() == ".png":
        folder = path.parent
        names = [path.name] if count == 1 else [f"{path.stem}-{i}.png" for i in range(count)]
    else:
        folder = path
        start = _next_number(folder, prefix) if folder.is_dir() else 0
        names = [f"{prefix}{start + i:05d}-{seed + i}.png" for i in range(count)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"cannot create output folder {folder}: {exc}; choose another --out") from exc

    # Lexical check (no symlink resolution): a name must be a single entry of ``folder``.
    root = Path(os.path.abspath(folder))
    paths = [folder / name for name in names]
    for p in paths:
        if Path(os.path.abspath(p)).parent != root or p.name in ("", ".", ".."):
            raise InvalidInputError(f"output name {p.name!r} would leave the folder {folder}; use a plain file name")
    return paths


def _check_prefix(prefix: str) -> None:
    """A prefix is part of a file name: it must not carry folders, drives or NUL."""
    bad = {"/", "\\", ":", "\0"} | ({os.sep} if os.sep else set()) | ({os.altsep} if os.altsep else set())
    if not isinstance(prefix, str) or any(c in prefix for c in bad) or prefix in (".", ".."):
        raise InvalidInputError(
            f"file name prefix {prefix!r} is not allowed: it must be plain text without "
            "'/', '\\', ':' or NUL (it cannot point to another folder)"
        )


def _next_number(folder: Path, prefix: str) -> int:
    """One past the highest ``<prefix>NNNNN`` file number in ``folder`` (0 if none)."""
    pattern = re.compile(re.escape(prefix) + _NUMBERED)
    highest = -1
    with os.scandir(folder) as entries:
        for entry in entries:
            match = pattern.match(entry.name)
            if match:
                highest = max(highest, int(match[1]))
    return highest + 1
