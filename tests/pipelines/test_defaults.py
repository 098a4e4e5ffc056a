"""A pipeline call that leaves out size, steps and CFG runs at the model's own defaults."""

from __future__ import annotations

from altdiffusion.pipelines.alt_diffusion import load_pipeline
from altdiffusion.pipelines.defaults import ModelDefaults


def test_the_mini_model_runs_at_its_recorded_defaults():
    pipe = load_pipeline("mini", device="cpu", dtype="fp32", safety_checker=False)
    result = pipe("一个红色的圆形", seed=5, progress=False)
    assert result.images[0].size == (64, 64)
    assert "Steps: 20, Sampler: Euler a, CFG scale: 3, Seed: 5, Size: 64x64" in result.infotexts[0]
    explicit = pipe("一个红色的圆形", seed=5, num_inference_steps=2, guidance_scale=5, progress=False)
    assert "Steps: 2, Sampler: Euler a, CFG scale: 5" in explicit.infotexts[0]


def test_a_size_is_far_from_native_beyond_twice_or_half_a_side():
    sd1 = ModelDefaults(width=512, height=512, cfg_scale=7.0, sampler_name="Euler", steps=20)
    assert sd1.size_warning(512, 512) is None and sd1.size_warning(1024, 256) is None
    assert sd1.size_warning(768, 1024) is None
    for width, height in ((1032, 512), (512, 248), (64, 64)):
        warning = sd1.size_warning(width, height)
        assert f"{width}x{height}" in warning and "native size 512x512" in warning
    assert sd1.size_warning(4100, 512) is None  # not a multiple of 8: the pipeline's error says so instead
