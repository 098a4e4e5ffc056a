"""``--embeddings-dir`` on a real server: A1111's /sdapi/v1/embeddings, triggers in txt2img."""

import hashlib
import json

import httpx
import pytest
import torch

from altdiffusion.errors import InvalidInputError
from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.infotext import parse_infotext
from altdiffusion.prompts.embedding_files import Embedding, write_embedding
from altdiffusion.serve import ServeConfig, create_app
from altdiffusion.serve.config import add_serve_arguments, config_from_args
from tests.serve.running import RunningServer

API = "/sdapi/v1"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("embeddings-serve")
    model = write_tiny_altdiffusion(root / "tiny", "m9", safety_checker=False)
    width = json.loads((model / "text_encoder" / "config.json").read_text())["hidden_size"]
    folder = root / "embeddings"
    g = torch.Generator().manual_seed(0)
    write_embedding(
        Embedding("style", torch.randn(3, width, generator=g), step=120, sd_checkpoint="abcdef0123"),
        folder / "style.pt",
    )
    write_embedding(Embedding("sd15", torch.randn(2, 768, generator=g)), folder / "sd15.safetensors")
    config = ServeConfig({"tiny": model}, default="tiny", safety_checker=False, embeddings_dir=folder)
    running = RunningServer(create_app(config))
    try:
        yield running.url, folder, width
    finally:
        running.stop()


def test_embeddings_lists_loaded_and_skipped_as_a1111(served):
    url, _, width = served
    body = httpx.get(f"{url}{API}/embeddings", timeout=60).json()
    assert body["loaded"] == {
        "style": {"step": 120, "sd_checkpoint": "abcdef0123", "sd_checkpoint_name": None, "shape": width, "vectors": 3}
    }
    skipped = body["skipped"]["sd15"]
    assert (skipped["shape"], skipped["vectors"]) == (768, 2)
    assert "768-d" in skipped["reason"] and f"{width}-d" in skipped["reason"]


def test_trigger_in_txt2img_is_recorded_with_its_hash(served):
    url, folder, _ = served
    request = {"prompt": "a (style:1.2) cat", "negative_prompt": "sd15", "width": 64, "height": 64, "steps": 1}
    response = httpx.post(f"{url}{API}/txt2img", json={**request, "seed": 5}, timeout=120)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    params = parse_infotext(info["infotexts"][0])[2]
    assert params["TI hashes"] == f"style: {hashlib.sha256((folder / 'style.pt').read_bytes()).hexdigest()[:12]}"


def test_refresh_embeddings_reads_new_files(served):
    url, folder, width = served
    write_embedding(Embedding("later", torch.ones(1, width)), folder / "later.safetensors")
    assert "later" not in httpx.get(f"{url}{API}/embeddings", timeout=60).json()["loaded"]
    assert httpx.post(f"{url}{API}/refresh-embeddings", timeout=60).status_code == 200
    assert httpx.get(f"{url}{API}/embeddings", timeout=60).json()["loaded"]["later"]["vectors"] == 1
    (folder / "later.safetensors").unlink()


def test_embeddings_dir_option_is_checked(tmp_path):
    import argparse

    parser = add_serve_arguments(argparse.ArgumentParser())
    with pytest.raises(InvalidInputError, match=r"embeddings_dir \(--embeddings-dir\) .* is not a folder"):
        config_from_args(parser.parse_args(["--embeddings-dir", str(tmp_path / "missing")]))
    assert config_from_args(parser.parse_args(["--embeddings-dir", str(tmp_path)])).embeddings_dir == str(tmp_path)
