"""Each model's own defaults through the API: what a request leaves out, sd-models, and warnings.

Served: the bundled AltDiffusion-mini (64x64, CFG 3, 20 Euler a steps) and a tiny random model
whose UNet config says sample_size 256 (x VAE factor 2 = 512, Stable Diffusion 1.x's size).
"""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from altdiffusion.mini import GUIDANCE
from altdiffusion.mini.checker import passes
from altdiffusion.mini.examples import example_prompts, example_scene
from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.defaults import PUBLISHED_EXAMPLES, folder_defaults
from altdiffusion.serve import ServeConfig, create_app
from tests.serve.running import RunningServer

API = "/sdapi/v1"


def sd1_sized_tiny(folder):
    """A tiny random model shaped as Stable Diffusion 1.x: a VAE with factor 8 (four levels) and a
    UNet sample_size of 64, so its native size is 512x512 (latents stay 64x64: quick on a CPU)."""
    from diffusers import AutoencoderKL

    write_tiny_altdiffusion(folder, "m9", safety_checker=False)
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["sample_size"] = 64
    config_path.write_text(json.dumps(config))
    for old in (folder / "vae").iterdir():
        old.unlink()
    AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=512,
    ).save_pretrained(folder / "vae")
    return folder


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    sd1 = sd1_sized_tiny(tmp_path_factory.mktemp("defaults") / "sd1")
    running = RunningServer(create_app(ServeConfig({"mini": "mini", "sd1": sd1}, default="mini", safety_checker=False)))
    try:
        with httpx.Client(base_url=running.url, timeout=120) as c:
            yield c
    finally:
        running.stop()


def images_of(body) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB") for data in body["images"]]


def test_sd_models_reports_each_models_defaults_and_examples(client):
    models = {m["model_name"]: m for m in client.get(f"{API}/sd-models").json()}
    assert models["mini"]["defaults"] == {
        "width": 64,
        "height": 64,
        "cfg_scale": GUIDANCE,
        "sampler_name": "Euler a",
        "steps": 20,
    }
    assert models["sd1"]["defaults"] == {
        "width": 512,
        "height": 512,
        "cfg_scale": 7.0,
        "sampler_name": "Euler",  # A1111's
        "steps": 20,
    }
    mini_examples = [(e["lang"], e["prompt"]) for e in models["mini"]["examples"]]
    assert {lang for lang, _ in mini_examples} == {"en", "zh", "es", "fr", "ru", "ja", "ko", "ar", "it"}
    assert ("zh", "一个红色的大圆形，位于画面中央，白色背景。") in mini_examples
    assert [(e["lang"], e["prompt"]) for e in models["sd1"]["examples"]] == list(PUBLISHED_EXAMPLES)


def test_a_request_without_settings_gets_the_mini_models_and_good_images(client):
    lang, prompt = example_prompts()[0]
    r = client.post(f"{API}/txt2img", json={"prompt": prompt, "seed": 100, "batch_size": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    info = json.loads(body["info"])
    assert (info["width"], info["height"], info["cfg_scale"], info["steps"]) == (64, 64, GUIDANCE, 20)
    assert info["sampler_name"] == "Euler a" and info["warnings"] == []
    assert "Steps: 20, Sampler: Euler a, CFG scale: 3, Seed: 100, Size: 64x64" in info["infotexts"][0]
    images = images_of(body)
    assert [im.size for im in images] == [(64, 64)] * 4
    assert sum(passes(im, example_scene(lang)) for im in images) == 4


def test_explicit_settings_are_kept_and_a_far_size_is_warned_about(client):
    req = {"prompt": "a red circle", "seed": 1, "width": 512, "height": 512, "cfg_scale": 5, "steps": 1}
    r = client.post(f"{API}/txt2img", json={**req, "sampler_name": "Euler a", "send_images": False})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert (info["width"], info["cfg_scale"], info["steps"], info["sampler_name"]) == (512, 5, 1, "Euler a")
    assert len(info["warnings"]) == 1 and "512x512" in info["warnings"][0]
    assert "native size 64x64" in info["warnings"][0]
    legacy = client.post(f"{API}/txt2img", json={"prompt": "x", "steps": 1, "sampler_index": "DDIM"}).json()
    assert json.loads(legacy["info"])["sampler_name"] == "DDIM"  # A1111's legacy spelling still names one
    near = client.post(f"{API}/txt2img", json={"prompt": "x", "steps": 1, "width": 96, "send_images": False})
    assert json.loads(near.json()["info"])["warnings"] == []  # 1.5x the native width is not far


def test_an_sd1_sized_checkpoint_gets_512_and_its_own_defaults(client):
    override = {"sd_model_checkpoint": "sd1"}
    r = client.post(f"{API}/txt2img", json={"prompt": "a cat", "steps": 1, "override_settings": override})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert (info["width"], info["height"], info["cfg_scale"]) == (512, 512, 7.0) and info["warnings"] == []
    assert [im.size for im in images_of(r.json())] == [(512, 512)]


def test_folder_defaults_match_the_loaded_pipelines(tmp_path):
    from altdiffusion.hub import bundled_model_dir
    from altdiffusion.pipelines.alt_diffusion import load_pipeline

    for folder in (bundled_model_dir("diffusion"), sd1_sized_tiny(tmp_path / "sd1")):
        pipe = load_pipeline(folder, device="cpu", dtype="fp32", safety_checker=False)
        assert pipe.defaults == folder_defaults(folder)
        saved = pipe.save_pretrained(tmp_path / "saved" / folder.name)  # a saved copy keeps its recommendations
        assert folder_defaults(saved) == pipe.defaults
