"""Mini-world evaluation data in every layout ``altdiffusion eval`` reads, and the models that score it."""

import pytest

N = 40  # images in the zero-shot and retrieval sets: small, yet both rates move per image


@pytest.fixture(scope="session")
def mini_data(tmp_path_factory):
    from altdiffusion.mini.eval_data import write_eval_data

    return write_eval_data(tmp_path_factory.mktemp("mini-eval"), n=N, t2i_scenes=3)


@pytest.fixture(scope="session")
def mini_clip():
    from altdiffusion.clip import load_clip

    return load_clip("mini", device="cpu", dtype="fp32")


@pytest.fixture(scope="session")
def reference_altclip():
    """transformers' own AltCLIPModel, tokenizer and image processor on the bundled AltCLIP-mini files."""
    import torch
    from transformers import AltCLIPModel, AutoTokenizer, CLIPImageProcessor

    from altdiffusion.hub import bundled_model_dir

    folder = bundled_model_dir("clip")
    model = AltCLIPModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(str(folder)), CLIPImageProcessor.from_pretrained(str(folder))


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"
