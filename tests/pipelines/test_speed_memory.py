"""Speed and memory modes on tiny random checkpoints (CPU): offloading, attention slicing, VAE tiling
without seams, the fp16 VAE's NaN fallback, the compiled pipeline, and cheap previews."""

from __future__ import annotations

import copy
import logging
import os

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from altdiffusion.errors import InvalidInputError
from altdiffusion.hub import bundled_model_dir
from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline
from altdiffusion.pipelines.conditioning import token_embedding_width
from altdiffusion.pipelines.lora import LoraLayer, layers_to_kohya
from altdiffusion.pipelines.memory import OneResident, decode_with_fallback
from altdiffusion.pipelines.preview import SD_VAE_TO_RGB, latent_to_rgb_for, preview_psnr
from altdiffusion.prompts.embedding_files import Embedding, write_embedding

SIZE, STEPS = 32, 3
CALL = dict(prompt="一只猫，水墨画", negative_prompt="模糊", num_inference_steps=STEPS, height=SIZE, width=SIZE, seed=3)
Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
MINI_VAE = bundled_model_dir("diffusion") / "vae"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_altdiffusion(tmp_path_factory.mktemp("speed-memory") / "m9", "m9", safety_checker=True)


def generate(pipe, **kwargs) -> np.ndarray:
    return pipe(**{**CALL, "output_type": "np", "progress": False, **kwargs})


@pytest.fixture(scope="module")
def resident(folder):
    """The reference: every component resident, no mode."""
    pipe = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    return pipe, generate(pipe)


# ----------------------------------------------------------------------------- offloading


def test_balanced_offload_gives_the_resident_image_bit_for_bit(folder, resident):
    pipe = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    pipe.enable_memory_mode("balanced")
    assert np.array_equal(generate(pipe), resident[1])
    images = pipe(**CALL, progress=False).images  # through the safety checker and PIL too
    assert np.array_equal(np.asarray(images[0]), np.asarray(resident[0](**CALL, progress=False).images[0]))


def test_low_memory_mode_streams_weights_and_matches_within_1e5(folder, resident):
    pipe = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    pipe.enable_memory_mode("low")
    assert pipe.unet.conv_in.weight.device.type == "meta"  # weights wait on the CPU, loaded per layer
    assert np.abs(generate(pipe) - resident[1]).max() < 1e-5


def test_modes_refuse_what_cannot_work(folder):
    pipe = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    with pytest.raises(InvalidInputError, match="unknown memory mode 'tiny'"):
        pipe.enable_memory_mode("tiny")
    pipe.enable_memory_mode("balanced")
    with pytest.raises(InvalidInputError, match="cannot be combined with --memory balanced"):
        pipe.enable_speed_mode()
    with pytest.raises(InvalidInputError, match="call to\\(\\) before it"):
        pipe.to("cpu")


@pytest.fixture(scope="module")
def embeddings_dir(folder, tmp_path_factory):
    """A two-vector textual-inversion embedding ("roundy") of the tiny text encoder's width."""
    pipe = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    vectors = torch.randn(2, token_embedding_width(pipe.text_encoder), generator=torch.Generator().manual_seed(5))
    root = tmp_path_factory.mktemp("ti")
    write_embedding(Embedding("roundy", vectors), root / "roundy.safetensors")
    return root


@pytest.mark.parametrize("mode", ["balanced", "low"])
def test_embedding_triggers_work_under_memory_modes(folder, embeddings_dir, mode):
    """The trigger's vectors are looked up where the offloaded table waits, then encoded on the device."""
    prompt = "a roundy cat, (roundy:1.3)"
    pipe = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    pipe.load_embeddings(embeddings_dir)
    expected = generate(pipe, prompt=prompt)
    assert np.abs(expected - generate(pipe)).max() > 1e-3  # the trigger changes the image
    offloaded = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    offloaded.load_embeddings(embeddings_dir)
    offloaded.enable_memory_mode(mode)
    assert np.abs(generate(offloaded, prompt=prompt) - expected).max() < 1e-5


def test_a_vae_swapped_in_under_a_memory_mode_is_offloaded_too(folder, tmp_path):
    torch.manual_seed(123)
    pipe = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    AutoencoderKL.from_config(pipe.vae.config).save_pretrained(str(tmp_path / "other-vae"))
    own = generate(pipe)
    pipe.load_vae(tmp_path / "other-vae")
    swapped = generate(pipe)
    assert np.abs(swapped - own).max() > 1e-3

    offloaded = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    offloaded.enable_memory_mode("balanced")
    own_vae = offloaded.vae
    offloaded.load_vae(tmp_path / "other-vae")
    assert isinstance(getattr(offloaded.vae, "_hf_hook", None), OneResident)
    assert getattr(own_vae, "_hf_hook", None) is None  # out of the group, waiting on the CPU
    assert offloaded.vae.use_tiling and offloaded.vae.use_slicing
    assert offloaded.vae in offloaded.unet._hf_hook.group and own_vae not in offloaded.unet._hf_hook.group
    assert np.array_equal(generate(offloaded), swapped)
    offloaded.load_vae(None)
    assert isinstance(getattr(own_vae, "_hf_hook", None), OneResident)
    assert np.array_equal(generate(offloaded), own)


def test_attention_slicing_matches_within_1e5(folder, resident):
    pipe = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    pipe.unet.set_attention_slice(1)  # the most slicing: one head at a time
    assert np.abs(generate(pipe) - resident[1]).max() < 1e-5


# ----------------------------------------------------------------------------- VAE


def small_vae(sample_size: int) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        layers_per_block=1,
        sample_size=sample_size,
    ).eval()


def smooth_latents(size: int) -> torch.Tensor:
    coarse = torch.randn(1, 4, size // 4, size // 4, generator=torch.Generator().manual_seed(1))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def row_jumps(error: torch.Tensor) -> torch.Tensor:
    """Mean |difference| between neighbouring rows of an error field (B, C, H, W): one value per row gap."""
    return (error[:, :, 1:] - error[:, :, :-1]).abs().mean(dim=(0, 1, 3))


def seam_ratio(error: torch.Tensor, borders: list[int]) -> float:
    """Largest jump at a tile border over the largest jump elsewhere (<= 1: no seam)."""
    jumps = torch.cat([row_jumps(error), row_jumps(error.transpose(2, 3))]).reshape(2, -1).amax(0)
    at_border = torch.zeros_like(jumps, dtype=torch.bool)
    at_border[[b - 1 for b in borders]] = True
    return float(jumps[at_border].max() / jumps[~at_border].max())


@torch.no_grad()
@pytest.mark.parametrize("index", [0, 1, 2])
def test_tiled_vae_decode_matches_untiled_and_shows_no_seam(index):
    """The bundled mini VAE (trained weights) on a scene of its world, at its native 64 px, with tiles of
    48 px (12 latents) blended over 12 px: tiles at 0 and 9 latents, the cut at 36 px in each direction."""
    from altdiffusion.mini.world import make_sample

    vae = AutoencoderKL.from_pretrained(MINI_VAE, sample_size=48).float().eval()
    pixels = torch.from_numpy(np.array(make_sample(0, "train", index).image)).permute(2, 0, 1)[None] / 127.5 - 1
    z = vae.encode(pixels.float()).latent_dist.mode()
    whole = vae.decode(z).sample
    vae.enable_tiling()
    error = vae.decode(z).sample - whole
    # Stated tolerance, mean |difference| on the [-1, 1] scale: this VAE never saw 48 px images and each
    # tile normalises its own activations (GroupNorm), so tiles drift (measured 0.22-0.24). SD's VAE tiles
    # at 512 px, its training size.
    assert error.abs().mean() < 0.3
    assert seam_ratio(error, borders=[36]) < 0.5  # measured 0.09-0.26


@torch.no_grad()
def test_fp16_vae_that_overflows_falls_back_to_float32(caplog):
    vae = small_vae(32)
    vae.decoder.conv_in.weight.mul_(3e3)  # activations beyond float16's 65504; GroupNorm scales them back
    latents = smooth_latents(16) * 30
    half = vae.half()
    reference = copy.deepcopy(half).float().decode(latents).sample  # the same fp16-rounded weights, in fp32
    assert not torch.isfinite(half.decode(latents.half()).sample).all()  # it does overflow
    with caplog.at_level(logging.WARNING, logger="altdiffusion"):
        decoded = decode_with_fallback(half, latents)
    assert half.dtype == torch.float32 and "now runs in float32" in caplog.text
    assert torch.isfinite(decoded).all() and torch.equal(decoded, reference)


# ----------------------------------------------------------------------------- speed mode


@pytest.mark.slow  # 40-140 s each here: inductor compiles the tiny UNet and VAE decoder with g++
@pytest.mark.parametrize("freeze", [None, False], ids=["frozen-by-default-on-cpu", "not-frozen"])
def test_compiled_pipeline_matches_and_follows_loras(folder, resident, tmp_path, freeze):
    from safetensors.torch import save_file

    pipe = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    speed = pipe.enable_speed_mode(cache_dir=tmp_path / "inductor", freeze=freeze)
    assert speed.compile_mode == "default" and speed.fused_qkv and speed.frozen is (freeze is None)
    assert np.abs(generate(pipe) - resident[1]).max() < 1e-4
    # A LoRA merged after compiling must reach the fused to_qkv, and frozen graphs must be rebuilt
    # (else it would be silently ignored: frozen graphs hold the weights as constants).
    rank, width = 2, pipe.unet.get_submodule(Q).in_features
    down = torch.randn(rank, width, generator=torch.Generator().manual_seed(0))
    up = torch.randn(width, rank, generator=torch.Generator().manual_seed(1))
    tensors, metadata = layers_to_kohya([LoraLayer("unet", Q, down, up, float(rank))])
    save_file(tensors, str(tmp_path / "ink.safetensors"), metadata=metadata)
    reference = resident[0]
    for p in (pipe, reference):
        p.load_lora(tmp_path / "ink.safetensors")
    try:
        with_lora = generate(pipe)
        assert np.abs(with_lora - generate(reference)).max() < 1e-4
        assert np.abs(with_lora - resident[1]).max() > 1e-3
    finally:
        for p in (pipe, reference):
            p.unload_lora()
    assert np.abs(generate(pipe) - resident[1]).max() < 1e-4


def test_kernel_cache_goes_to_ours_unless_the_user_chose_one(folder, tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    from altdiffusion.pipelines import speed

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    cache_dir()  # what importing inductor does (diffusers imports it): the variable now holds torch's /tmp default
    monkeypatch.setattr(speed, "DEFAULT_CACHE_DIR", tmp_path / "ours")
    pipe = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    assert pipe.enable_speed_mode().cache_dir == str(tmp_path / "ours") == os.environ["TORCHINDUCTOR_CACHE_DIR"]
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "users"))
    pipe = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    assert pipe.enable_speed_mode().cache_dir == str(tmp_path / "users")


# ----------------------------------------------------------------------------- previews


def test_sd_vae_gets_a1111_approx_cheap_map_and_others_a_fitted_one():
    with torch.device("meta"):  # SD's VAE shape, no weights needed: its map is A1111's, not fitted
        sd_vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
        )
    sd_map = latent_to_rgb_for(sd_vae, torch.device("cpu"))
    assert torch.equal(sd_map.weight, torch.tensor(SD_VAE_TO_RGB)) and sd_map.scale_factor == 8
    assert sd_map(torch.zeros(1, 4, 8, 8))[0].size == (64, 64)
    assert not torch.equal(latent_to_rgb_for(small_vae(32), torch.device("cpu")).weight, sd_map.weight)


def test_preview_of_the_mini_model_resembles_the_decoded_image():
    pipe = AltDiffusionPipeline.from_pretrained("mini", device="cpu")
    seen = []
    result = pipe(
        "一个红色的大圆形，位于画面中央，白色背景。", seed=1, progress=False, callback=lambda i, n, x: seen.append(x)
    )
    preview = pipe.latent_to_rgb(seen[-1])[0]
    assert preview.size == result.images[0].size
    grey = preview.point(lambda _: 128)
    # A linear map is coarse for the mini VAE (a per-image least-squares fit reaches 23 dB, our colour
    # fit about 11); it must still be far closer than a flat grey frame.
    assert preview_psnr(preview, result.images[0]) > preview_psnr(grey, result.images[0]) + 3
