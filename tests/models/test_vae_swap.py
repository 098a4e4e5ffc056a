"""Swapping the VAE (A1111's "SD VAE"): a single LDM file or a diffusers folder."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from altdiffusion import InvalidInputError, load_pipeline
from altdiffusion.models.ldm_layout import vae_ldm_name
from altdiffusion.models.weights import save_safetensors

KW = dict(num_inference_steps=2, seed=3, height=64, width=64, progress=False)
PROMPT = "一只可爱的猫坐在窗台上"


@pytest.fixture(scope="module")
def other_vae(tiny_layouts, tmp_path_factory):
    """Another VAE of the tiny model's architecture: as an A1111 file (bare LDM names) and as a folder."""
    from diffusers import AutoencoderKL

    pipe = load_pipeline(tiny_layouts["altdiffusion-m9"], device="cpu", safety_checker=False)
    torch.manual_seed(123)
    vae = AutoencoderKL.from_config(pipe.vae.config)
    root = tmp_path_factory.mktemp("vae")
    file = root / "other-vae.safetensors"
    save_safetensors({vae_ldm_name(k, vae.config): _ldm(k, v) for k, v in vae.state_dict().items()}, file)
    vae.save_pretrained(str(root / "other-vae"), safe_serialization=True)
    return file, root / "other-vae"


def _ldm(key, value):
    name = vae_ldm_name(key, {"up_block_types": [0, 0]})
    attention = ".mid.attn_1." in name and not name.endswith(("norm.weight", "bias"))
    return value[:, :, None, None] if attention and value.ndim == 2 else value


def test_a_swapped_vae_changes_the_image_and_the_infotext_and_unswaps_exactly(tiny_layouts, other_vae):
    file, folder = other_vae
    pipe = load_pipeline(tiny_layouts["altdiffusion-m9"], device="cpu", safety_checker=False)
    own = pipe(PROMPT, **KW)
    pipe.load_vae(file)
    swapped = pipe(PROMPT, **KW)
    assert np.asarray(own.images[0]).tolist() != np.asarray(swapped.images[0]).tolist()
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    assert f"VAE hash: {sha[:10]}, VAE: other-vae.safetensors" in swapped.infotexts[0]
    assert "VAE" not in own.infotexts[0]
    pipe.load_vae(folder)  # the same weights as a diffusers folder decode identically
    assert np.array_equal(np.asarray(pipe(PROMPT, **KW).images[0]), np.asarray(swapped.images[0]))
    pipe.load_vae(None)
    again = pipe(PROMPT, **KW)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(own.images[0]))
    assert again.infotexts[0] == own.infotexts[0]


def test_a_missing_vae_is_one_clear_error(tiny_layouts, tmp_path):
    pipe = load_pipeline(tiny_layouts["altdiffusion-m9"], device="cpu", safety_checker=False)
    with pytest.raises(InvalidInputError, match="no such file or folder"):
        pipe.load_vae(tmp_path / "nope.safetensors")


def test_generate_vae_flag_writes_the_vae_into_the_png(tiny_layouts, other_vae, tmp_path, run_cli_batch):
    file, _ = other_vae
    out = tmp_path / "x.png"
    model = tiny_layouts["altdiffusion-m9"]
    argv = ["generate", PROMPT, "--model", model, "--vae", file, "--steps", "2", "--seed", "1", "--out", out]
    (result,) = run_cli_batch([[*argv, "--no-safety-checker", "--no-progress"]])
    assert result.returncode == 0, result.stderr
    assert "VAE: other-vae.safetensors" in Image.open(out).info["parameters"]
