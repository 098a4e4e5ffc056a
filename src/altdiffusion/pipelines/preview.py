"""Cheap live previews: latents -> RGB by one linear map per latent pixel, no VAE decode.

    rgb(x, y) = 0.5 + 0.5 * (W^T z(x, y) + b)        z: the diffusion latents (C channels), W: C x 3

The Stable Diffusion VAE (SD 1.x and 2.x; AltDiffusion, -m9 and -m18 use it) gets A1111's
"Approx cheap" map (``modules/sd_vae_approx.py``, ``cheap_approximation``; b = 0). Any other
VAE (the bundled mini model's) gets W and b fitted once by least squares on solid colours it
encodes: one small VAE encode per model instead of a VAE decode per poll. The preview is then
scaled up to the image's size, so clients show it where the final image will be.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# A1111's coefficients for the SD VAE: rows are latent channels, columns R, G, B.
SD_VAE_TO_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
SD_VAE_BLOCKS = [128, 256, 512, 512]  # with 4 latent channels: the kl-f8 VAE of SD 1.x and 2.x


@dataclass(frozen=True)
class LatentToRGB:
    """A fixed latent -> RGB map and the VAE's scale factor (image pixels per latent pixel)."""

    weight: torch.Tensor  # (C, 3)
    bias: torch.Tensor  # (3,)
    scale_factor: int

    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        """(B, C, h, w) latents -> B PIL images of (w, h) x scale_factor."""
        rgb = torch.einsum("bchw,cr->bhwr", latents.detach().float().cpu(), self.weight) + self.bias
        arrays = ((rgb * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        return [self._upscale(Image.fromarray(a)) for a in arrays]

    def _upscale(self, image: Image.Image) -> Image.Image:
        return image.resize((image.width * self.scale_factor, image.height * self.scale_factor), Image.BILINEAR)


def latent_to_rgb_for(vae, device: torch.device) -> LatentToRGB:
    """A1111's map for the SD VAE, else one fitted to ``vae`` (encoding on ``device``)."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if vae.config.latent_channels == 4 and list(vae.config.block_out_channels) == SD_VAE_BLOCKS:
        return LatentToRGB(torch.tensor(SD_VAE_TO_RGB), torch.zeros(3), factor)
    weight, bias = fit_latent_to_rgb(vae, device)
    return LatentToRGB(weight, bias, factor)


@torch.no_grad()
def fit_latent_to_rgb(
    vae, device: torch.device, levels=(0.0, 0.25, 0.5, 0.75, 1.0)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares W (C x 3) and b (3) from the VAE's mean latent of each solid colour in levels^3.

    Solid colours at the VAE's own sample size (at most 64 px) fitted best of what we tried on the
    mini model's VAE (random block images and decoded random latents fitted worse)."""
    colours = torch.tensor(list(itertools.product(levels, repeat=3)))  # (N, 3) in [0, 1]
    size = min(int(vae.config.sample_size), 64)
    pixels = colours[:, :, None, None].expand(-1, -1, size, size) * 2 - 1
    posterior = vae.encode(pixels.to(device=device, dtype=vae.dtype)).latent_dist
    latents = (posterior.mode() * vae.config.scaling_factor).float().mean(dim=(2, 3)).cpu()  # (N, C)
    design = torch.cat([latents, torch.ones(len(latents), 1)], dim=1)
    solution = torch.linalg.lstsq(design, (colours * 2 - 1)).solution  # (C + 1, 3)
    return solution[:-1], solution[-1]


def preview_psnr(preview: Image.Image, decoded: Image.Image) -> float:
    """PSNR (dB) of a preview against the full decode of the same latents (tests, benchmarks)."""
    a = np.asarray(preview, dtype=np.float64)
    b = np.asarray(decoded.resize(preview.size), dtype=np.float64)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
