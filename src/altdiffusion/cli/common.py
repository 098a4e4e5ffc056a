"""What several commands' parsers and functions share: argument types, device options, image files."""

from __future__ import annotations

import argparse

from altdiffusion.errors import InvalidInputError


def positive_int(text: str) -> int:
    try:
        return int(text)  # range checked by the pipeline, with its one-line message
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def language_list(text: str | None) -> list[str] | None:
    """``"en, zh"`` -> ``["en", "zh"]``; None or empty: None (every language)."""
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def add_device_arguments(p: argparse.ArgumentParser, *, generation: bool = False) -> None:
    """``--device`` and ``--dtype``; ``generation``: the image pipeline's CPU default (devices.py)."""
    cpu = (
        "on CPU bf16 where the CPU computes it natively, else fp32; ALTDIFFUSION_CPU_DTYPE sets it"
        if generation
        else "fp32 on CPU"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: best available)")
    p.add_argument("--dtype", default=None, help=f"fp32, fp16, bf16 (default: fp16 on GPU, {cpu})")


def add_performance_arguments(p: argparse.ArgumentParser) -> None:
    from altdiffusion.pipelines.modes import MEMORY_MODES

    p.add_argument(
        "--compile",
        action="store_true",
        help="speed mode: torch.compile the UNet and VAE decoder (first call per size/batch compiles; "
        "kernels cached under ~/.cache/altdiffusion/inductor or TORCHINDUCTOR_CACHE_DIR)",
    )
    p.add_argument(
        "--memory",
        choices=MEMORY_MODES,
        default="full",
        help="full: all on the device; balanced: components wait on the CPU, VAE tiled (like A1111's "
        "--medvram); low: weights streamed layer by layer (like --lowvram)",
    )


def add_config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default=None,
        metavar="FOLDER",
        help="a single file's architecture: a diffusers folder of the same shapes "
        "(default: the published AltDiffusion/-m18 or SD-1.x architecture the file is detected as)",
    )


def open_image(path: str, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise InvalidInputError(f"{what} {path!r} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InvalidInputError(
            f"{what} {path!r} is not a readable image ({err}); use a PNG, JPEG or WebP file"
        ) from None
