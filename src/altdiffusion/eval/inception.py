"""The standard FID network: torch-fidelity's Inception-v3 port of the TensorFlow FID graph (2048-d pool
features), as torchmetrics' FrechetInceptionDistance uses it. Needs torch-fidelity (which imports torchvision)
and its weights file in torch's hub cache; without them this says so, and ``--fid-features clip`` is the
alternative (FID in the CLIP's image-embedding space: comparable only with other runs that use it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from altdiffusion.errors import InvalidInputError

WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"  # torch-fidelity's file name for the FID weights


def weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS


def inception_features(batch_size: int):
    """A function from image paths to (N, 2048) float64 Inception features."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as err:
        raise InvalidInputError(f"FID with Inception needs torchmetrics ({err}); or use --fid-features clip") from None
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise InvalidInputError(
            "FID with Inception needs torch-fidelity (pip install torch-fidelity torchvision); "
            "or use --fid-features clip"
        ) from None
    if not weights_path().is_file():
        raise InvalidInputError(
            f"the Inception FID weights are not at {weights_path()}: download {WEIGHTS} from torch-fidelity's "
            "releases into that folder (or run once online), or use --fid-features clip"
        )
    network = NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights_path())
    ).eval()

    @torch.no_grad()
    def extract(paths: list[Path]) -> torch.Tensor:
        chunks = []
        for start in range(0, len(paths), batch_size):
            arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths[start : start + batch_size]]
            pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
            chunks.append(network(pixels).double())
        return torch.cat(chunks)

    return extract
