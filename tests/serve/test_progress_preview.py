"""The live preview of ``/sdapi/v1/progress`` is the model's cheap latent -> RGB map of the latest
latents (A1111's "Approx cheap" idea), not a VAE decode per poll."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline
from altdiffusion.serve.progress import ProgressReporter
from altdiffusion.serve.runner import JobState


def test_progress_preview_is_the_cheap_map_of_the_latest_latents():
    pipe = AltDiffusionPipeline.from_pretrained("mini", device="cpu")
    state = JobState()
    reporter = ProgressReporter(state)
    state.begin("txt2img", 1, None, pipe.latent_to_rgb)
    assert reporter.report(False)["current_image"] is None  # no step yet
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    state.step(3, 20, latents)
    sent = Image.open(io.BytesIO(base64.b64decode(reporter.report(False)["current_image"])))
    expected = pipe.latent_to_rgb(latents[:1])[0]
    assert sent.size == (64, 64) and np.array_equal(np.asarray(sent.convert("RGB")), np.asarray(expected))
    decoded = (pipe.decode_latents(latents[:1])[0] * 255).round().astype(np.uint8)
    assert not np.array_equal(np.asarray(expected), decoded)  # a different (cheaper) picture than the decode
