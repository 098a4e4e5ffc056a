"""Pixels in and out of the pipeline: PIL <-> tensors, the inpainting mask, A1111's overlay."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFilter


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(1, C, H, W) float in [0, 1]."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[..., None]
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def to_pil(pixels: np.ndarray) -> list[Image.Image]:
    """(B, H, W, 3) float in [0, 1] -> 8-bit PIL images."""
    return [Image.fromarray((p * 255).round().astype("uint8")) for p in pixels]


def latent_mask(mask_image: Image.Image, width: int, height: int, factor: int) -> torch.Tensor:
    """The mask at latent resolution, 1 where the image is repainted (white), else 0."""
    mask = mask_image.convert("L").resize((width // factor, height // factor), Image.BOX)
    return (to_tensor(mask) > 0.5).float()


def overlay(generated: Image.Image, init: Image.Image, mask_image: Image.Image, blur: int) -> Image.Image:
    """Paste the original pixels back outside the (blurred) mask, as A1111 does."""
    width, height = generated.size
    mask = mask_image.convert("L").resize((width, height), Image.NEAREST)
    if blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(blur))
    return Image.composite(generated, init.convert("RGB").resize((width, height), Image.LANCZOS), mask)
