"""With identical weights, our modules compute what diffusers' and transformers' reference
implementations compute: RobertaSeriesModelWithTransformation (AltDiffusion text encoder)
and AltCLIPModel (text and image features)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import altdiffusion

TOL = 1e-5


def _diffusers_text_encoder(text_encoder_folder):
    from diffusers.pipelines.deprecated.alt_diffusion.modeling_roberta_series import (
        RobertaSeriesConfig,
        RobertaSeriesModelWithTransformation,
    )

    config = RobertaSeriesConfig.from_dict(json.loads((text_encoder_folder / "config.json").read_text()))
    model = RobertaSeriesModelWithTransformation(config)
    state = torch.load(text_encoder_folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == [], result.missing_keys
    assert set(result.unexpected_keys) <= {"roberta.embeddings.position_ids"}, result.unexpected_keys
    return model.eval()


def _images():
    g = torch.Generator().manual_seed(1)
    a = (torch.rand(40, 56, 3, generator=g) * 255).to(torch.uint8).numpy()
    # A smooth gradient: a second, structurally different image.
    x = torch.linspace(0, 1, 64)
    b = torch.stack([x[None].expand(64, 64), x[:, None].expand(64, 64), 1 - x[None].expand(64, 64)], -1)
    return [Image.fromarray(a), Image.fromarray((b * 255).to(torch.uint8).numpy())]


@pytest.mark.parametrize("variant", ["m2", "m9", "m18"])
def test_conditioning_equals_diffusers_roberta_series_projection_state(tiny_layouts, prompts, tokenize_77, variant):
    folder = tiny_layouts[f"altdiffusion-{variant}"]
    pipe = altdiffusion.load_pipeline(folder)
    reference = _diffusers_text_encoder(folder / "text_encoder")
    assert reference.has_pre_transformation == (variant == "m18")
    texts = list(prompts.values())
    batch = tokenize_77(pipe.tokenizer, texts)
    assert batch.input_ids.shape == (3, 77)
    assert (batch.attention_mask == 0).any(), "prompts should be padded"
    with torch.no_grad():
        expected = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).projection_state
        ours = pipe.text_encoder.conditioning(batch.input_ids, batch.attention_mask)
    assert ours.shape == expected.shape == (3, 77, 48 if variant == "m18" else 32)
    assert (ours - expected).abs().max() <= TOL
    # And through the pipeline's own prompt path (chunking + weighting), one prompt at a time.
    for i, text in enumerate(texts):
        cond, _ = pipe.encode_prompt(text)
        assert (cond[0] - expected[i]).abs().max() <= TOL, text


@pytest.fixture(scope="module")
def transformers_altclip():
    from transformers import AltCLIPModel

    cache = {}

    def load(folder):
        if folder not in cache:
            cache[folder] = AltCLIPModel.from_pretrained(str(folder)).eval()
        return cache[folder]

    return load


@pytest.mark.parametrize("variant", ["m2", "m9", "m18"])
def test_altclip_features_equal_transformers_altclipmodel(tiny_layouts, prompts, transformers_altclip, variant):
    folder = tiny_layouts[f"altclip-{variant}"]
    clip = altdiffusion.load_clip(folder)
    reference = transformers_altclip(folder)
    batch = clip.tokenize(list(prompts.values()))
    pixels = clip.preprocess(_images())
    with torch.no_grad():
        text_ref = reference.get_text_features(**batch).pooler_output
        image_ref = reference.get_image_features(pixel_values=pixels).pooler_output
        text = clip.model.encode_text(**batch)
        image = clip.model.encode_image(pixels)
    assert text.shape == text_ref.shape == (3, reference.config.projection_dim)
    assert image.shape == image_ref.shape == (2, reference.config.projection_dim)
    assert (text - text_ref).abs().max() <= TOL
    assert (image - image_ref).abs().max() <= TOL
    torch.testing.assert_close(clip.model.logit_scale.detach(), reference.logit_scale.detach(), atol=0, rtol=0)

    # The wrapper's similarity is the cosine of transformers' features.
    cosine = F.normalize(image_ref, dim=-1) @ F.normalize(text_ref, dim=-1).t()
    assert (clip.similarity(_images(), list(prompts.values())) - cosine).abs().max() <= TOL
    # And the model's logits are transformers' logits.
    with torch.no_grad():
        out = reference(**batch, pixel_values=pixels)
        per_image, per_text = clip.model(batch["input_ids"], batch["attention_mask"], pixels)
    assert (per_image - out.logits_per_image).abs().max() <= 1e-4
    assert (per_text - out.logits_per_text).abs().max() <= 1e-4


def test_folder_saved_by_transformers_5_loads_with_identical_outputs(
    tiny_layouts, prompts, transformers_altclip, tmp_path
):
    from safetensors import safe_open

    source = tiny_layouts["altclip-m18"]
    saved = tmp_path / "saved-by-transformers"
    transformers_altclip(source).save_pretrained(str(saved))
    with safe_open(str(saved / "model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
    # transformers 5 layout: `vision_model.encoder.layer.N` (4.x published `layers.N`).
    assert any(k.startswith("vision_model.encoder.layer.0.") for k in keys)
    assert not any(k.startswith("vision_model.encoder.layers.") for k in keys)
    assert not (saved / "pytorch_model.bin").exists()
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "sentencepiece.bpe.model",
        "preprocessor_config.json",
    ):
        if (source / name).exists():
            shutil.copy(source / name, saved / name)

    original = altdiffusion.load_clip(source)
    reloaded = altdiffusion.load_clip(saved)
    texts = list(prompts.values())
    images = _images()
    torch.testing.assert_close(
        reloaded.embed_text(texts, normalize=False), original.embed_text(texts, normalize=False), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        reloaded.embed_image(images, normalize=False), original.embed_image(images, normalize=False), atol=1e-6, rtol=0
    )
    for name, tensor in original.model.state_dict().items():
        torch.testing.assert_close(reloaded.model.state_dict()[name], tensor, atol=0, rtol=0, msg=name)
