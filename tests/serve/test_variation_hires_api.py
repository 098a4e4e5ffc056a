"""Variation seeds, the RNG source and the hires fix through the A1111 API, on a real uvicorn server."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.infotext import parse_infotext
from altdiffusion.serve import ServeConfig, create_app
from tests.serve.running import RunningServer

API = "/sdapi/v1"
SMALL = {"prompt": "a red circle", "width": 32, "height": 32, "steps": 2, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = write_tiny_altdiffusion(tmp_path_factory.mktemp("serve-hires") / "tiny", "m9", safety_checker=False)
    app = create_app(ServeConfig({"tiny": folder}, default="tiny", max_pixels=128 * 128, safety_checker=False))
    running = RunningServer(app)
    try:
        with httpx.Client(base_url=running.url, timeout=120) as c:
            yield c
    finally:
        running.stop()


def _txt2img(client, **fields) -> tuple[list[Image.Image], dict]:
    r = client.post(f"{API}/txt2img", json={**SMALL, **fields})
    assert r.status_code == 200, r.text
    body = r.json()
    images = [Image.open(io.BytesIO(base64.b64decode(data))) for data in body["images"]]
    return images, json.loads(body["info"])


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=int)


def test_variation_seed_fields_are_honoured(client):
    (plain,), _ = _txt2img(client, seed=30)
    (subseed_image,), _ = _txt2img(client, seed=31)
    (full,), info = _txt2img(client, seed=30, subseed=31, subseed_strength=1.0)
    assert np.array_equal(_pixels(full), _pixels(subseed_image))
    (half,), info = _txt2img(client, seed=30, subseed=31, subseed_strength=0.5)
    assert not np.array_equal(_pixels(half), _pixels(plain)) and not np.array_equal(_pixels(half), _pixels(full))
    assert info["subseed"] == 31 and info["subseed_strength"] == 0.5
    params = parse_infotext(half.text["parameters"])[2]
    assert params["Variation seed"] == "31" and params["Variation seed strength"] == "0.5"
    assert params["RNG"] == "CPU"

    images, info = _txt2img(client, seed=30, subseed=31, subseed_strength=0.5, batch_size=2, n_iter=2)
    assert info["all_seeds"] == [30] * 4 and info["all_subseeds"] == [31, 32, 33, 34]
    assert [parse_infotext(i.text["parameters"])[2]["Variation seed"] for i in images] == ["31", "32", "33", "34"]

    (resized,), info = _txt2img(client, seed=30, seed_resize_from_w=24, seed_resize_from_h=16)
    assert parse_infotext(resized.text["parameters"])[2]["Seed resize from"] == "24x16"
    assert info["seed_resize_from_w"] == 24


def test_hires_fix_fields_are_honoured(client):
    (image,), info = _txt2img(
        client, seed=4, enable_hr=True, hr_scale=1.5, hr_upscaler="Lanczos", denoising_strength=0.6
    )
    assert image.size == (48, 48)
    params = parse_infotext(image.text["parameters"])[2]
    assert params["Size"] == "32x32" and params["Hires upscale"] == "1.5" and params["Hires upscaler"] == "Lanczos"
    assert params["Denoising strength"] == "0.6" and info["denoising_strength"] == 0.6

    (image,), _ = _txt2img(client, seed=4, enable_hr=True, hr_resize_x=64, hr_resize_y=48, hr_second_pass_steps=1)
    params = parse_infotext(image.text["parameters"])[2]
    assert image.size == (64, 48) and params["Hires resize"] == "64x48" and params["Hires steps"] == "1"
    assert params["Denoising strength"] == "0.75"  # A1111's txt2img default when left out

    (image,), _ = _txt2img(client, seed=4, enable_hr=True, hr_sampler_name="Euler", hr_prompt=SMALL["prompt"])
    assert image.size == (64, 64)


def test_a_zero_denoising_strength_without_hires_is_accepted(client):  # some A1111 clients always send it
    (image,), _ = _txt2img(client, seed=4, denoising_strength=0)
    assert image.size == (32, 32)


def test_rng_override_setting(client):
    (image,), _ = _txt2img(client, seed=4, override_settings={"randn_source": "GPU"})  # a CPU model: CPU noise
    assert parse_infotext(image.text["parameters"])[2]["RNG"] == "CPU"


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"enable_hr": True, "hr_scale": 8}, "hr_scale"),  # 256x256 > max_pixels
        ({"enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"}, "hr_upscaler"),
        ({"enable_hr": True, "hr_sampler_name": "DDIM"}, "hr_sampler_name"),
        ({"enable_hr": True, "hr_prompt": "another picture"}, "hr_prompt"),
        ({"enable_hr": True, "hr_checkpoint_name": "other"}, "hr_checkpoint_name"),
        ({"enable_hr": True, "denoising_strength": 0}, "denoising_strength"),
        ({"subseed_strength": 2}, "subseed_strength"),
        ({"seed_resize_from_w": 32}, "seed_resize_from_w"),
        ({"override_settings": {"randn_source": "NV"}}, "override_settings"),
    ],
)
def test_bad_fields_are_refused_with_422_naming_the_field(client, fields, loc):
    r = client.post(f"{API}/txt2img", json={**SMALL, **fields})
    assert r.status_code == 422, r.text
    assert loc in r.json()["detail"][0]["loc"]
