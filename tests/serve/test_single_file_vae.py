"""A real server offering a single-file model (A1111 hashes) and a VAE clients choose with ``sd_vae``."""

import base64
import hashlib
import io
import json

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.convert import convert
from altdiffusion.serve import ServeConfig, create_app
from tests.serve.running import RunningServer

API = "/sdapi/v1"
BODY = {"prompt": "一只猫", "width": 64, "height": 64, "steps": 2, "seed": 5, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from diffusers import AutoencoderKL

    root = tmp_path_factory.mktemp("single-serve")
    folder = write_tiny_altdiffusion(root / "tiny", "m9", safety_checker=False)
    file = convert(folder, root / "tiny-file.safetensors")
    torch.manual_seed(9)
    other = AutoencoderKL.from_config(AutoencoderKL.load_config(str(folder / "vae")))
    other.save_pretrained(str(root / "blue-vae"), safe_serialization=True)
    config = ServeConfig(
        {"file": file, "folder": folder}, safety_checker=False, config=folder, vaes={"blue": root / "blue-vae"}
    )
    running = RunningServer(create_app(config))
    try:
        yield running.url, file
    finally:
        running.stop()


def _txt2img(url: str, **extra) -> tuple[np.ndarray, str]:
    response = httpx.post(url + f"{API}/txt2img", json={**BODY, **extra}, timeout=300)
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0])))
    return np.asarray(image, dtype=np.int16), json.loads(response.json()["info"])["infotexts"][0]


def test_a_single_file_model_is_listed_with_its_files_sha256(served):
    url, file = served
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    (item,) = [m for m in httpx.get(url + f"{API}/sd-models", timeout=60).json() if m["model_name"] == "file"]
    assert (item["hash"], item["sha256"], item["title"], item["filename"]) == (
        sha[:10],
        sha,
        f"file [{sha[:10]}]",
        "file",
    )


def test_the_file_draws_what_the_folder_draws_and_sd_vae_swaps_the_vae(served):
    url, file = served
    from_file, info = _txt2img(url)
    assert f"Model hash: {hashlib.sha256(file.read_bytes()).hexdigest()[:10]}" in info
    from_folder, _ = _txt2img(url, override_settings={"sd_model_checkpoint": "folder"})
    assert np.array_equal(from_file, from_folder)
    assert httpx.get(url + f"{API}/sd-vae", timeout=30).json() == [{"model_name": "blue", "filename": "blue"}]
    assert httpx.post(url + f"{API}/options", json={"sd_vae": "blue"}, timeout=300).status_code == 200
    assert httpx.get(url + f"{API}/options", timeout=30).json()["sd_vae"] == "blue"
    blue, blue_info = _txt2img(url)
    assert not np.array_equal(blue, from_file) and ", VAE: blue," in blue_info and "VAE hash: " in blue_info
    bad = httpx.post(url + f"{API}/options", json={"sd_vae": "../etc/passwd"}, timeout=30)
    assert bad.status_code == 422 and "Automatic, None, blue" in bad.text
    assert httpx.post(url + f"{API}/options", json={"sd_vae": "Automatic"}, timeout=300).status_code == 200
    assert np.array_equal(_txt2img(url)[0], from_file)
