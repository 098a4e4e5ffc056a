"""The autoencoder of a latent diffusion model (AutoencoderKL), trained to reconstruct images.

    q(z|x) = N(mu(x), sigma(x)^2)      z ~ q(z|x) (or z = mu with --posterior mode)      x_hat = D(z)
    loss   = mean w |x - x_hat|  +  kl_weight * KL(q(z|x) || N(0, I)) / (pixels per image)
    w      = 1 (+ foreground_weight where a pixel differs from the image's border colour)

Stable Diffusion's VAE adds LPIPS and a patch discriminator; both need pretrained image
networks (torchvision), and flat synthetic images reconstruct well without them. At export
``scaling_factor`` becomes 1/std(mu) over training images, the rule behind SD's 0.18215, so
the diffusion model sees unit-variance latents.

``decoder_only`` trains D alone on the frozen encoder's mu (the KL term is then a constant and
left out) and keeps ``scaling_factor``: every latent means what it meant, so a UNet trained on
the old VAE decodes through the new one unchanged, as SD's ft-MSE decoder does.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from altdiffusion.errors import CheckpointError, InvalidInputError
from altdiffusion.training.data import (
    SkipCounter,
    crop_pixels,
    data_source,
    decode_plan,
    image_text_samples,
    micro_batch_plans,
    micro_batch_seed,
)
from altdiffusion.training.params import TrainSettings
from altdiffusion.training.precision import stored_dtype
from altdiffusion.training.prefetch import PlannedBatches
from altdiffusion.training.settings import VAESettings


def load_or_init_vae(folder: Path, seed: int):
    """A VAE folder with weights, or one with only ``config.json`` (initialised from ``seed``)."""
    from diffusers import AutoencoderKL

    from altdiffusion.models.loading import read_json

    config = read_json(folder / "config.json")
    try:
        if any(folder.glob("diffusion_pytorch_model.*")):
            return AutoencoderKL.from_pretrained(str(folder))
        torch.manual_seed(seed)
        return AutoencoderKL.from_config(config)
    except Exception as err:
        raise CheckpointError(f"VAE {folder}: cannot build it ({type(err).__name__}: {err})") from None


def foreground_mask(pixels: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """1 where a pixel's colour differs from its image's border colour (median of the edge pixels).

    On object-on-background images the background is most of every image, so a plain pixel loss
    learns it first and leaves small objects blurred and colourless for a long time; weighting
    the rest by ``1 + foreground_weight`` reaches the objects early.
    """
    edges = torch.cat(
        [pixels[..., 0, :], pixels[..., -1, :], pixels[..., :, 0], pixels[..., :, -1]], dim=-1
    )  # (B, C, 4W)
    border = edges.median(dim=-1).values[..., None, None]
    return ((pixels - border).abs().amax(dim=1, keepdim=True) > threshold).float()


class VAEModel(torch.nn.Module):
    """The autoencoder's training pass as one forward, as DDP needs it to average the gradients
    (a call of ``encode`` and ``decode`` on the wrapped model would bypass it): encode, draw z
    (the posterior's mean, plus its std times seeded noise with ``posterior`` "sample"), decode."""

    def __init__(self, vae, posterior: str, decoder_only: bool):
        super().__init__()
        self.vae, self.posterior, self.decoder_only = vae, posterior, decoder_only

    def forward(self, pixels: torch.Tensor, noise_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, KL divergence of each sample's posterior from the prior)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.decoder_only):
            posterior = self.vae.encode(pixels).latent_dist
        z = posterior.mean
        if self.posterior == "sample":
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(noise_seed))
            z = z + posterior.std * noise.to(pixels.device)
        return self.vae.decode(z).sample, posterior.kl()


class VAETask(PlannedBatches):
    name = "vae"

    def __init__(
        self,
        vae_folder: str | Path,
        data,
        *,
        resolution: int,
        kl_weight: float = 1e-6,
        seed: int = 0,
        posterior: str = "sample",
        foreground_weight: float = 0.0,
        decoder_only: bool = False,
    ):
        if resolution % 8:
            raise InvalidInputError(f"--resolution must be a multiple of 8, got {resolution}")
        if decoder_only and not any(Path(vae_folder).glob("diffusion_pytorch_model.*")):
            raise InvalidInputError(
                f"--decoder-only keeps the encoder of a trained VAE, and {vae_folder} has no weights: "
                "train the whole VAE first (without --decoder-only)"
            )
        vae = load_or_init_vae(Path(vae_folder), seed)
        if decoder_only:  # the latent space is the encoder's: frozen, and scaled as it was
            for part in (vae.encoder, vae.quant_conv):
                if part is not None:
                    part.requires_grad_(False)
        self.source_dtype = stored_dtype(Path(vae_folder))  # diffusers loads float32; export like the file
        self.source = data_source(data)
        if posterior not in ("sample", "mode"):
            raise InvalidInputError(f"--posterior must be sample or mode, got {posterior!r}")
        self.model = VAEModel(vae, posterior, decoder_only)
        self.resolution, self.kl_weight, self.seed = resolution, kl_weight, seed
        self.foreground_weight, self.decoder_only = foreground_weight, decoder_only
        self.skipped = SkipCounter()

    def plans(self, start_step, micro, rank, world, grad_accum):
        """This rank's micro-batches from optimizer step ``start_step`` on, images not yet decoded."""
        return micro_batch_plans(
            self.source, start=start_step * grad_accum, micro=micro, rank=rank, world=world, seed=self.seed
        )

    def prepare(self, plan):
        """((pixels, noise seed), passed-over samples) of ``plan``."""
        decoded = decode_plan(plan)
        pixels = torch.stack([crop_pixels(image, self.resolution) for image in decoded.images])
        return (pixels, micro_batch_seed(self.seed, plan.index, plan.rank)), decoded.skipped

    def loss(self, model, batch):
        pixels, noise_seed = batch
        pixels = pixels.to(next(model.parameters()).device)
        recon, kl = model(pixels, noise_seed)
        error = (recon.float() - pixels.float()).abs()
        if self.foreground_weight:
            error = error * (1 + self.foreground_weight * foreground_mask(pixels))
        l1 = error.mean()
        kl = kl.mean() / pixels[0].numel()
        loss = l1 if self.decoder_only else l1 + self.kl_weight * kl
        return loss, {"l1": float(l1.detach()), "kl": float(kl.detach())}

    @torch.no_grad()
    def latent_std(self, vae, n: int = 512) -> float:
        stream = image_text_samples(self.source, rank=0, world=1, seed=self.seed + 1)
        pixels = torch.stack([crop_pixels(next(stream)[0], self.resolution) for _ in range(n)])
        device = next(vae.parameters()).device
        means = torch.cat([vae.encode(chunk.to(device)).latent_dist.mean.float().cpu() for chunk in pixels.split(64)])
        return float(means.std())

    def export(self, model, folder: Path) -> None:
        vae = model.vae
        was_training = vae.training
        vae.eval()
        std = self.latent_std(vae)
        vae.train(was_training)
        if not self.decoder_only:
            vae.register_to_config(scaling_factor=round(1.0 / std, 5))
        vae.save_pretrained(str(folder), safe_serialization=True)
        (folder / "data_report.json").write_text(
            json.dumps({"skipped": self.skipped.counts, "latent_std": std}, indent=2) + "\n"
        )


def run(settings: VAESettings, training: TrainSettings) -> Path:
    """Autoencoder training from ``settings`` under the loop's ``training`` settings; the model folder."""
    from altdiffusion.training.loop import train

    task = VAETask(
        settings.vae,
        settings.data,
        resolution=settings.resolution,
        kl_weight=settings.kl_weight,
        seed=training.seed,
        posterior=settings.posterior,
        foreground_weight=settings.foreground_weight,
        decoder_only=settings.decoder_only,
    )
    return train(task, training)
