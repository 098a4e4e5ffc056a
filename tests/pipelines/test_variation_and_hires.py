"""A1111's variation seeds, "Seed resize from", RNG source and hires fix, on a tiny random m9 pipeline.

The tiny VAE halves the size (32 px images are 16x16 latents); runs take 3 Euler steps (a
deterministic sampler, so the step noise of the seed's generator plays no part).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from altdiffusion.errors import InvalidInputError
from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline, HiresFix
from altdiffusion.pipelines.infotext import parse_infotext
from altdiffusion.pipelines.noise import Variation, initial_noise, slerp

PROMPT = "一只可爱的猫坐在窗台上"
RUN = dict(num_inference_steps=3, height=32, width=32, sampler="Euler", progress=False)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = write_tiny_altdiffusion(tmp_path_factory.mktemp("variation") / "m9", "m9", safety_checker=False)
    return AltDiffusionPipeline.from_pretrained(folder, device="cpu")


def _np(pipe, **kwargs):
    return pipe(PROMPT, output_type="np", **{**RUN, **kwargs})


# ---------------------------------------------------------------------------- variation seeds


def test_subseed_strength_0_is_the_seed_1_is_the_subseed_and_half_is_neither(pipe):
    seed, sub = _np(pipe, seed=11), _np(pipe, seed=12)
    assert np.abs(_np(pipe, seed=11, subseed=12, subseed_strength=0.0) - seed).max() == 0
    assert np.abs(_np(pipe, seed=11, subseed=12, subseed_strength=1.0) - sub).max() == 0
    half = _np(pipe, seed=11, subseed=12, subseed_strength=0.5)
    assert np.abs(half - seed).max() > 0.01 and np.abs(half - sub).max() > 0.01


def test_variation_noise_is_a1111_slerp_of_the_two_seeds_noises():
    shape = (4, 6, 5)
    a = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    b = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    # A1111's formula written out: per (channel, column), the angle between the H-vectors.
    unit_a, unit_b = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((unit_a * unit_b).sum(1, keepdim=True))
    expected = (torch.sin(0.3 * omega) * a + torch.sin(0.7 * omega) * b) / torch.sin(omega)
    assert torch.allclose(slerp(0.7, a, b), expected, atol=1e-6)
    noise, _ = initial_noise(shape, [3], Variation((4,), 0.7), torch.device("cpu"), 2)
    assert torch.equal(noise[0], slerp(0.7, a, b))


def test_a_batch_with_variation_keeps_the_seed_and_counts_up_the_subseed(pipe):
    result = pipe(PROMPT, seed=5, subseed=40, subseed_strength=0.25, num_images_per_prompt=2, **RUN)
    assert result.seeds == [5, 5]
    params = [parse_infotext(text)[2] for text in result.infotexts]
    assert [p["Variation seed"] for p in params] == ["40", "41"]
    assert all(p["Variation seed strength"] == "0.25" and p["Seed"] == "5" for p in params)
    single = pipe(PROMPT, seed=5, subseed=41, subseed_strength=0.25, output_type="np", **RUN)
    batch = pipe(PROMPT, seed=5, subseed=40, subseed_strength=0.25, num_images_per_prompt=2, output_type="np", **RUN)
    assert np.abs(batch[1] - single[0]).max() < 1e-5  # image 1 of the batch is subseed 41


# ------------------------------------------------------------------------------ seed resize


@pytest.mark.parametrize("resize_from", [(8, 12), (20, 16), (6, 14)])
def test_seed_resize_from_pastes_the_seeds_noise_at_the_centre(resize_from):
    """(C, 10, 10) noise: the seed's noise drawn at resize_from / 2 (latent size), centred and cropped."""
    shape, seed, factor = (4, 10, 10), 9, 2
    width, height = resize_from
    noise, _ = initial_noise(shape, [seed], Variation(resize_from=resize_from), torch.device("cpu"), factor)
    full = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    small = torch.randn((4, height // factor, width // factor), generator=torch.Generator().manual_seed(seed))
    expected = full.clone()
    for row in range(10):
        for col in range(10):
            src_row, src_col = row - (10 - small.shape[1]) // 2, col - (10 - small.shape[2]) // 2
            if 0 <= src_row < small.shape[1] and 0 <= src_col < small.shape[2]:
                expected[:, row, col] = small[:, src_row, src_col]
    assert torch.equal(noise[0], expected)


def test_seed_resize_from_its_own_size_is_the_plain_image_and_another_is_not(pipe):
    plain = _np(pipe, seed=3)
    assert np.abs(_np(pipe, seed=3, seed_resize_from_w=32, seed_resize_from_h=32) - plain).max() == 0
    assert np.abs(_np(pipe, seed=3, seed_resize_from_w=24, seed_resize_from_h=16) - plain).max() > 0.01
    text = pipe(PROMPT, seed=3, seed_resize_from_w=24, seed_resize_from_h=16, **RUN).infotexts[0]
    assert parse_infotext(text)[2]["Seed resize from"] == "24x16"


# ---------------------------------------------------------------------------------- RNG source


def test_rng_is_recorded_and_gpu_on_a_cpu_model_draws_cpu_noise(pipe):
    cpu = pipe(PROMPT, seed=8, **RUN)
    assert parse_infotext(cpu.infotexts[0])[2]["RNG"] == "CPU"
    gpu = pipe(PROMPT, seed=8, randn_source="gpu", **RUN)  # the model is on the CPU: A1111 draws there too
    assert parse_infotext(gpu.infotexts[0])[2]["RNG"] == "CPU"
    assert np.array_equal(np.asarray(cpu.images[0]), np.asarray(gpu.images[0]))
    with pytest.raises(InvalidInputError, match="randn_source"):
        pipe(PROMPT, seed=8, randn_source="NV", **RUN)


# ------------------------------------------------------------------------------------- hires fix


def test_hires_fix_returns_the_scaled_size_and_its_first_pass_is_the_plain_generation(pipe):
    plain = _np(pipe, seed=21)
    seen = []
    result = pipe(
        PROMPT, seed=21, hires=HiresFix(scale=1.5, steps=2), callback=lambda i, n, x: seen.append((i, n, x)), **RUN
    )
    assert result.images[0].size == (48, 48)
    assert [(i, n) for i, n, _ in seen] == [(i, 5) for i in range(1, 6)]  # 3 first-pass + 2 hires steps
    first_pass = pipe.decode_latents(seen[2][2])
    assert np.abs(first_pass - plain).max() == 0
    params = parse_infotext(result.infotexts[0])[2]
    assert params["Size"] == "32x32" and params["Hires upscale"] == "1.5" and params["Hires steps"] == "2"
    assert params["Denoising strength"] == "0.7" and "Hires upscaler" not in params


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (bicubic antialiased)", "Lanczos", "Nearest"])
def test_each_upscaler_runs_and_is_recorded(pipe, upscaler):
    result = pipe(PROMPT, seed=2, hires=HiresFix(upscaler=upscaler, denoising_strength=0.5), **RUN)
    assert result.images[0].size == (64, 64)
    assert parse_infotext(result.infotexts[0])[2]["Hires upscaler"] == upscaler


def test_latent_and_lanczos_upscalers_give_different_pictures(pipe):
    latent = _np(pipe, seed=2, hires=HiresFix(upscaler="Latent"))
    lanczos = _np(pipe, seed=2, hires=HiresFix(upscaler="Lanczos"))
    assert latent.shape == lanczos.shape == (1, 64, 64, 3)
    assert np.abs(latent - lanczos).max() > 0.01


@pytest.mark.parametrize(
    ("resize", "size"),
    [((48, 0), (48, 48)), ((0, 40), (40, 40)), ((48, 40), (48, 40)), ((40, 48), (40, 48))],
)
def test_hires_resize_to_a_box(pipe, resize, size):
    result = pipe(PROMPT, seed=4, hires=HiresFix(resize_x=resize[0], resize_y=resize[1]), **RUN)
    assert result.images[0].size == size
    assert parse_infotext(result.infotexts[0])[2]["Hires resize"] == f"{resize[0]}x{resize[1]}"


def test_hires_steps_0_runs_as_many_steps_as_the_first_pass(pipe):
    seen = []
    pipe(PROMPT, seed=4, hires=HiresFix(steps=0), callback=lambda i, n, x: seen.append(n), **RUN)
    assert seen[-1] == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(subseed_strength=1.5), "subseed_strength"),
        (dict(seed_resize_from_w=32), "seed_resize_from"),
        (dict(hires=HiresFix(upscaler="ESRGAN_4x")), "unknown hires upscaler"),
        (dict(hires=HiresFix(denoising_strength=0)), "denoising strength"),
        (dict(hires=HiresFix(scale=0.1)), "too small"),
    ],
)
def test_bad_settings_fail_with_one_message(pipe, kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        pipe(PROMPT, seed=1, **{**RUN, **kwargs})
