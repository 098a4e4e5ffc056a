"""A1111's <lora:name:weight> prompt tag against a real server with a --lora-dir."""

import base64
import io
import json

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.infotext import parse_infotext
from altdiffusion.pipelines.lora import LoraLayer, layers_to_kohya
from altdiffusion.prompts.extra_networks import extract_tags
from altdiffusion.serve import ServeConfig, create_app
from tests.serve.running import RunningServer

API = "/sdapi/v1"
BODY = {"width": 64, "height": 64, "steps": 2, "seed": 11, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora-serve")
    model = write_tiny_altdiffusion(root / "tiny", "m9", safety_checker=False)
    loras = root / "loras"
    loras.mkdir()
    from altdiffusion import load_pipeline

    unet = load_pipeline(model, safety_checker=False).unet
    g = torch.Generator().manual_seed(0)
    layers = []
    for name, module in unet.named_modules():
        if name.endswith(("attn2.to_k", "attn2.to_v", "attn1.to_q")):
            out_f, in_f = module.weight.shape
            layers.append(
                LoraLayer("unet", name, torch.randn(4, in_f, generator=g), torch.randn(out_f, 4, generator=g), 4.0)
            )
    tensors, metadata = layers_to_kohya(layers)
    save_file(tensors, str(loras / "ink.safetensors"), metadata=metadata)
    running = RunningServer(
        create_app(ServeConfig({"tiny": model}, default="tiny", safety_checker=False, lora_dir=loras))
    )
    try:
        yield running.url
    finally:
        running.stop()


def _image(response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(response.json()["images"][0]))), dtype=np.int16)


def test_tag_parsing():
    assert extract_tags("a cat <lora:ink:0.7>, <lora:b> x") == ("a cat ,  x", [("ink", 0.7), ("b", 1.0)])
    assert extract_tags("no tags") == ("no tags", [])


def test_loras_are_listed_by_name_only(server):
    items = httpx.get(server + f"{API}/loras", timeout=30).json()
    assert items == [{"name": "ink", "alias": "ink", "path": "ink.safetensors", "metadata": {}}]


def test_tag_applies_the_lora_for_that_request_only(server):
    plain = httpx.post(server + f"{API}/txt2img", json={**BODY, "prompt": "一只猫"}, timeout=300)
    tagged = httpx.post(server + f"{API}/txt2img", json={**BODY, "prompt": "一只猫<lora:ink:1>"}, timeout=300)
    again = httpx.post(server + f"{API}/txt2img", json={**BODY, "prompt": "一只猫"}, timeout=300)
    assert plain.status_code == tagged.status_code == again.status_code == 200
    assert np.abs(_image(plain) - _image(tagged)).max() > 3, "the LoRA changed nothing"
    assert np.array_equal(_image(plain), _image(again)), "the LoRA leaked into the next request"
    prompt, _, params = parse_infotext(json.loads(tagged.json()["info"])["infotexts"][0])
    assert prompt == "一只猫<lora:ink:1>"
    assert "ink:" in params["Lora hashes"]


def test_unknown_lora_and_bad_weight_are_422(server):
    missing = httpx.post(server + f"{API}/txt2img", json={**BODY, "prompt": "x <lora:nope:1>"}, timeout=60)
    assert missing.status_code == 422 and "nope" in missing.text and "ink" in missing.text
    bad = httpx.post(server + f"{API}/txt2img", json={**BODY, "prompt": "x <lora:ink:lots>"}, timeout=60)
    assert bad.status_code == 422 and "not a number" in bad.text
    path = httpx.post(
        server + f"{API}/txt2img",
        json={**BODY, "prompt": "x <lora:../tiny/unet/diffusion_pytorch_model:1>"},
        timeout=60,
    )
    assert path.status_code == 422


@pytest.mark.parametrize("weight", ["inf", "-inf", "nan", "1e308", "10.5"])
def test_lora_weights_must_be_finite_and_in_range(server, weight):
    r = httpx.post(server + f"{API}/txt2img", json={**BODY, "prompt": f"x <lora:ink:{weight}>"}, timeout=60)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "prompt"] and "finite number from -10 to 10" in error["msg"]


def test_the_number_of_lora_tags_is_capped(server):
    prompt = "x" + "<lora:ink:0.01>" * 1170
    r = httpx.post(server + f"{API}/txt2img", json={**BODY, "prompt": prompt}, timeout=60)
    assert r.status_code == 422 and "--max-lora-tags" in r.text and "1170" in r.text
