"""End-to-end generation with tiny random AltDiffusion checkpoints (CPU, a few seconds each).

* parity with diffusers' own (deprecated) ``AltDiffusionPipeline`` built from the same parts;
* reproducibility: seeds, batches (image i of a batch == a single run with seed + i), random seeds;
* every sampler of the table runs through the pipeline;
* img2img (strength 0 is the VAE round trip) and inpainting (black mask pixels are kept);
* ``callback`` and ``should_stop``.

Images are 32-48 px (the tiny VAE halves the size: 16x16 to 16x24 latents) and runs take 3 steps.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers

import numpy as np
import pytest
import torch
from PIL import Image

from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.alt_diffusion import MAX_SEED, AltDiffusionPipeline, GenerationInterrupted
from altdiffusion.pipelines.infotext import parse_infotext
from altdiffusion.pipelines.samplers import available_samplers, make_scheduler

STEPS = 3
SIZE = 32
# Parity runs use a non-square size so swapped height/width cannot go unnoticed.
PARITY_H, PARITY_W = 32, 48
PARITY_TOL = 1e-4

PROMPTS = {
    "zh": "一只可爱的猫坐在窗台上",
    "en": "a photo of a cat",
    "mixed": "穿着唐装的女孩，a painting of mountains in the style of guohua",
}
NEGATIVE = "一张狗的照片"

# Samplers whose random step noise comes from a single source for the whole batch (see the
# report of the test-writing session): image i of a batch is not a single run with seed + i.

# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-generation")
    return {v: write_tiny_altdiffusion(root / v, v, safety_checker=False) for v in ("m9", "m18")}


@pytest.fixture(scope="module")
def pipes(folders):
    return {v: AltDiffusionPipeline.from_pretrained(folder, device="cpu") for v, folder in folders.items()}


@pytest.fixture(scope="module")
def pipe(pipes):
    return pipes["m9"]


@pytest.fixture(scope="module")
def reference_text_encoders(folders):
    """diffusers' RobertaSeriesModelWithTransformation holding the very same weights."""
    from diffusers.pipelines.deprecated.alt_diffusion.modeling_roberta_series import (
        RobertaSeriesConfig,
        RobertaSeriesModelWithTransformation,
    )

    encoders = {}
    for variant, folder in folders.items():
        config = RobertaSeriesConfig(**json.loads((folder / "text_encoder" / "config.json").read_text()))
        model = RobertaSeriesModelWithTransformation(config)
        state = torch.load(folder / "text_encoder" / "pytorch_model.bin", weights_only=True, map_location="cpu")
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not missing, missing
        assert set(unexpected) <= {"roberta.embeddings.position_ids"}, unexpected
        assert model.has_pre_transformation == (variant == "m18")
        encoders[variant] = model.eval()
    return encoders


def reference_pipeline(pipe, text_encoder, scheduler):
    from diffusers import AltDiffusionPipeline as DiffusersAltDiffusionPipeline

    ref = DiffusersAltDiffusionPipeline(
        vae=pipe.vae,
        text_encoder=text_encoder,
        tokenizer=pipe.tokenizer,
        # diffusers rewrites the legacy unet sample_size in place: keep ours untouched.
        unet=copy.deepcopy(pipe.unet),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)
    return ref


def run_np(pipe, prompt="一只可爱的猫", **kwargs) -> np.ndarray:
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("guidance_scale", 7.5)  # the diffusers references' (the pipeline's own default is the model's)
    kwargs.setdefault("height", SIZE)
    kwargs.setdefault("width", SIZE)
    return pipe(prompt, output_type="np", progress=False, **kwargs)


def run_pil(pipe, prompt="一只可爱的猫", **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("height", SIZE)
    kwargs.setdefault("width", SIZE)
    return pipe(prompt, progress=False, **kwargs)


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# ------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("variant", ["m9", "m18"])
@pytest.mark.parametrize("language", list(PROMPTS))
def test_parity_with_diffusers_default_scheduler(pipes, reference_text_encoders, variant, language):
    pipe = pipes[variant]
    ref = reference_pipeline(
        pipe, reference_text_encoders[variant], type(pipe.scheduler).from_config(pipe.scheduler.config)
    )
    prompt, seed = PROMPTS[language], 1234
    ids = pipe.tokenizer(prompt).input_ids
    assert len(ids) <= 77, "parity covers prompts of at most 75 tokens"
    assert pipe.tokenizer.unk_token_id not in ids, "the tiny tokenizer should know every word of the prompt"

    expected = ref(
        prompt,
        negative_prompt=NEGATIVE,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        height=PARITY_H,
        width=PARITY_W,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    ).images
    ours = run_np(
        pipe, prompt, negative_prompt=NEGATIVE, guidance_scale=7.5, height=PARITY_H, width=PARITY_W, seed=seed
    )
    assert ours.shape == expected.shape == (1, PARITY_H, PARITY_W, 3)
    assert max_diff(ours, expected) <= PARITY_TOL


@pytest.mark.parametrize(
    ("variant", "sampler"), [("m9", "Euler"), ("m18", "Euler"), ("m9", "Euler a"), ("m9", "DPM++ 2M")]
)
def test_parity_with_diffusers_other_samplers(pipes, reference_text_encoders, variant, sampler):
    pipe = pipes[variant]
    ref = reference_pipeline(pipe, reference_text_encoders[variant], make_scheduler(sampler, pipe.scheduler.config))
    prompt, seed = PROMPTS["mixed"], 99
    expected = ref(
        prompt,
        negative_prompt=NEGATIVE,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        height=PARITY_H,
        width=PARITY_W,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    ).images
    ours = run_np(pipe, prompt, negative_prompt=NEGATIVE, height=PARITY_H, width=PARITY_W, seed=seed, sampler=sampler)
    assert max_diff(ours, expected) <= PARITY_TOL
    default = run_np(pipe, prompt, negative_prompt=NEGATIVE, height=PARITY_H, width=PARITY_W, seed=seed)
    assert max_diff(ours, default) > 100 * PARITY_TOL, f"{sampler} gave the default sampler's image"


@pytest.mark.parametrize("variant", ["m9", "m18"])
def test_parity_tolerance_is_meaningful(pipes, variant):
    """Prompt, negative prompt and seed each move pixels far more than the parity tolerance."""
    pipe = pipes[variant]
    kw = dict(height=PARITY_H, width=PARITY_W, seed=1234)
    base = run_np(pipe, PROMPTS["zh"], negative_prompt=NEGATIVE, **kw)
    assert max_diff(base, run_np(pipe, PROMPTS["en"], negative_prompt=NEGATIVE, **kw)) > 10 * PARITY_TOL
    assert max_diff(base, run_np(pipe, PROMPTS["zh"], **kw)) > 10 * PARITY_TOL
    assert (
        max_diff(base, run_np(pipe, PROMPTS["zh"], negative_prompt=NEGATIVE, **{**kw, "seed": 1235})) > 10 * PARITY_TOL
    )


def test_casting_says_nothing_false_but_keeps_real_diffusers_warnings(folders):
    """diffusers 0.42 warns on every dtype cast that modules "should be kept in float32: []" (an empty
    list) and asks for torch_dtype, which load_pipeline's dtype is: that false warning is dropped."""
    from altdiffusion.pipelines.components import cast_module

    log = logging.getLogger("diffusers.models.modeling_utils")
    collect = logging.handlers.BufferingHandler(capacity=100)
    level = log.level
    log.setLevel(logging.WARNING)
    log.addHandler(collect)
    try:
        pipe = AltDiffusionPipeline.from_pretrained(folders["m9"], device="cpu", dtype=torch.bfloat16)
        assert pipe.dtype == torch.bfloat16 and not collect.buffer
        unet = copy.deepcopy(pipe.unet)
        unet._keep_in_fp32_modules = ["conv_in"]
        cast_module(unet, dtype=torch.float32)
    finally:
        log.removeHandler(collect)
        log.setLevel(level)
    assert unet.dtype == torch.float32
    assert [r.getMessage().split(":")[0] for r in collect.buffer] == [
        "There are modules in UNet2DConditionModel that should be kept in float32"
    ]


# ------------------------------------------------------------------------------ reproducibility


def test_same_seed_same_pixels_different_seed_different(pipe):
    a = run_pil(pipe, seed=42)
    b = run_pil(pipe, seed=42)
    c = run_pil(pipe, seed=43)
    assert np.array_equal(np.asarray(a.images[0]), np.asarray(b.images[0]))
    assert a.infotexts == b.infotexts
    assert max_diff(a.images[0], c.images[0]) > 5  # uint8 levels
    assert a.seeds == [42] and c.seeds == [43]


@pytest.mark.parametrize(
    "sampler",
    available_samplers(),
)
def test_every_sampler_is_reproducible(pipe, sampler):
    a = run_np(pipe, seed=5, sampler=sampler)
    b = run_np(pipe, seed=5, sampler=sampler)
    assert max_diff(a, b) == 0.0


@pytest.mark.parametrize(
    "sampler",
    [
        None,  # the checkpoint's PNDM: PLMS
        "Euler",
        "DDIM",
        "UniPC",
        "Euler a",
        "DPM++ SDE",
    ],
)
def test_batch_image_i_equals_single_run_with_seed_plus_i(pipe, sampler):
    batch = run_np(pipe, seed=1000, num_images_per_prompt=2, sampler=sampler)
    first = run_np(pipe, seed=1000, sampler=sampler)
    second = run_np(pipe, seed=1001, sampler=sampler)
    assert batch.shape == (2, SIZE, SIZE, 3)
    # Batched UNet/VAE kernels may differ from single ones in the last float bits only.
    assert max_diff(batch[0], first[0]) <= 1e-5
    assert max_diff(batch[1], second[0]) <= 1e-5
    assert max_diff(batch[0], batch[1]) > 1e-2


def test_batch_records_seeds_in_result_and_infotexts(pipe):
    result = run_pil(pipe, "一只可爱的猫", negative_prompt="模糊", seed=1000, num_images_per_prompt=2)
    assert result.seeds == [1000, 1001]
    assert len(result.images) == len(result.infotexts) == 2
    for seed, text in zip(result.seeds, result.infotexts):
        prompt, negative, params = parse_infotext(text)
        assert (prompt, negative) == ("一只可爱的猫", "模糊")
        assert params["Seed"] == str(seed)
        assert params["Steps"] == str(STEPS)
        assert params["Size"] == f"{SIZE}x{SIZE}"
        assert params["Sampler"] == "PLMS"
    single = run_pil(pipe, "一只可爱的猫", negative_prompt="模糊", seed=1001)
    assert max_diff(result.images[1], single.images[0]) <= 1  # uint8 rounding of a ~1e-6 float difference


@pytest.mark.parametrize("seed", [None, -1])
def test_random_seed_is_recorded_and_reproduces_the_image(pipe, seed):
    first = run_pil(pipe, seed=seed)
    second = run_pil(pipe, seed=seed)
    recorded = first.seeds[0]
    assert isinstance(recorded, int) and 0 <= recorded <= MAX_SEED
    assert parse_infotext(first.infotexts[0])[2]["Seed"] == str(recorded)
    assert second.seeds[0] != recorded, "two random seeds collided (p = 2**-32) or the seed is not random"
    again = run_pil(pipe, seed=recorded)
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(first.images[0]))


# ------------------------------------------------------------------------------ samplers


@pytest.mark.parametrize("sampler", available_samplers())
def test_every_sampler_runs_three_steps(pipe, sampler):
    calls = []
    images = run_np(
        pipe,
        seed=7,
        sampler=sampler,
        callback=lambda step, total, latents: calls.append((step, total, latents.clone())),
    )
    assert images.shape == (1, SIZE, SIZE, 3)
    assert np.isfinite(images).all()
    assert images.std() > 1e-3, "a constant image"
    assert calls, "the sampler never stepped"
    assert [c[0] for c in calls] == list(range(1, len(calls) + 1))
    assert all(c[1] == len(calls) for c in calls)
    assert len(calls) >= STEPS
    for _, _, latents in calls:
        assert latents.shape == (1, 4, SIZE // 2, SIZE // 2)
        assert torch.isfinite(latents).all()  # clamp() in decoding would hide an infinity


def test_sampler_name_goes_into_the_infotext(pipe):
    result = run_pil(pipe, seed=7, sampler="k_dpmpp_2m")
    assert parse_infotext(result.infotexts[0])[2]["Sampler"] == "DPM++ 2M"


# ------------------------------------------------------------------------------ img2img / inpainting


@pytest.fixture(scope="module")
def init_image():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    base = np.stack([x * 255 / SIZE, y * 255 / SIZE, np.full_like(x, 128.0)], axis=-1)
    noisy = np.clip(base + rng.normal(0, 40, base.shape), 0, 255)
    return Image.fromarray(noisy.astype("uint8"), "RGB")


@pytest.fixture(scope="module")
def vae_round_trip(pipe, init_image):
    """decode(encode(init).mode()) computed here, with pipe.vae only."""
    pixels = torch.from_numpy(np.asarray(init_image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None] * 2 - 1
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mode()
        decoded = pipe.vae.decode(latents).sample
    return (decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize(
    "sampler",
    [
        None,  # PLMS
        "Euler",
        "DDIM",
        "DPM++ 2M",
        "Heun",
    ],
)
def test_img2img_strength_0_is_the_vae_round_trip(pipe, init_image, vae_round_trip, sampler):
    calls = []
    out = run_np(pipe, image=init_image, strength=0.0, seed=3, sampler=sampler, callback=lambda *a: calls.append(a[:2]))
    assert out.shape == vae_round_trip.shape
    # The only difference allowed: latents * scaling_factor / scaling_factor in float32.
    assert max_diff(out, vae_round_trip) <= 1e-5
    assert calls == []  # no denoising step at all
    image = run_pil(pipe, image=init_image, strength=0.0, seed=3, sampler=sampler).images[0]
    assert max_diff(image, (vae_round_trip[0] * 255).round()) <= 1


def test_img2img_strength_1_differs_from_the_round_trip(pipe, init_image, vae_round_trip):
    out = run_np(pipe, image=init_image, strength=1.0, seed=3)
    assert max_diff(out, vae_round_trip) > 0.05
    half = run_np(pipe, image=init_image, strength=0.5, seed=3)
    assert max_diff(half, vae_round_trip) > 1e-3
    assert max_diff(half, out) > 1e-3


@pytest.mark.parametrize("strength", [0.75, 1.0])
def test_inpainting_keeps_pixels_under_the_black_mask(pipe, init_image, strength):
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:, SIZE // 2 :] = 255  # right half white: repaint; left half black: keep
    result = run_pil(
        pipe, image=init_image, mask_image=Image.fromarray(mask, "L"), mask_blur=0, strength=strength, seed=11
    )
    out = np.asarray(result.images[0]).astype(int)
    init = np.asarray(init_image).astype(int)
    keep = mask == 0
    assert np.array_equal(out[keep], init[keep])
    inside = out[:, SIZE // 2 + 4 :] - init[:, SIZE // 2 + 4 :]  # well inside the white region
    changed = np.abs(inside).max(axis=-1) > 0
    assert changed.mean() > 0.9
    assert np.abs(inside).mean() > 5
    params = parse_infotext(result.infotexts[0])[2]
    assert params["Mask blur"] == "0" and float(params["Denoising strength"]) == strength


# ------------------------------------------------------------------------------ callback / should_stop


def test_callback_once_per_step(pipe):
    calls = []
    pipe(
        "一只可爱的猫",
        num_inference_steps=STEPS,
        height=SIZE,
        width=SIZE,
        seed=1,
        sampler="Euler",
        progress=False,
        callback=lambda step, total, latents: calls.append((step, total, tuple(latents.shape))),
    )
    assert calls == [(i, STEPS, (1, 4, SIZE // 2, SIZE // 2)) for i in range(1, STEPS + 1)]


def test_should_stop_after_one_step_interrupts(pipe):
    asked, calls = [], []

    def should_stop():
        asked.append(True)
        return len(asked) > 1  # False before the first step, True before the second

    with pytest.raises(GenerationInterrupted):
        pipe(
            "一只可爱的猫",
            num_inference_steps=STEPS,
            height=SIZE,
            width=SIZE,
            seed=1,
            sampler="Euler",
            progress=False,
            callback=lambda step, total, latents: calls.append(step),
            should_stop=should_stop,
        )
    assert calls == [1]
    assert len(asked) == 2


def test_should_stop_false_runs_to_the_end(pipe):
    asked = []
    result = run_np(pipe, seed=1, sampler="Euler", should_stop=lambda: asked.append(True) or False)
    assert len(asked) == STEPS
    assert np.isfinite(result).all()
