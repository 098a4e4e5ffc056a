"""The six published layouts load through the public API and encode text along the right path."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import altdiffusion
from altdiffusion.models.tiny import write_tiny_altdiffusion

VARIANTS = ("m2", "m9", "m18")
CONDITIONING_DIM = {"m2": 32, "m9": 32, "m18": 48}
PROJECTION_DIM = {"m2": 16, "m9": 16, "m18": 24}  # tiny AltCLIP projection_dim per variant


def _image(seed: int = 0, size=(48, 40)) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


# ------------------------------------------------------------------------------------ AltCLIP


@pytest.mark.parametrize("variant", VARIANTS)
def test_altclip_layout_embeds_chinese_english_and_mixed_text(tiny_layouts, prompts, variant):
    clip = altdiffusion.load_clip(tiny_layouts[f"altclip-{variant}"])
    texts = [prompts["zh"], prompts["en"], prompts["mixed"]]
    emb = clip.embed_text(texts)
    assert emb.shape == (3, PROJECTION_DIM[variant]) == (3, clip.model.config.projection_dim)
    assert torch.isfinite(emb).all()
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3), atol=1e-5, rtol=0)
    # Unnormalised embeddings point the same way.
    raw = clip.embed_text(texts, normalize=False)
    torch.testing.assert_close(F.normalize(raw, dim=-1), emb, atol=1e-6, rtol=0)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3))
    # Three different texts, three different embeddings. (The tiny random text tower's CLS
    # output depends only weakly on the other tokens: compare raw embeddings, not cosines.)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert (raw[i] - raw[j]).abs().max() > 1e-3, (i, j)
    # A text embeds the same alone and padded in a batch (the attention mask is applied).
    torch.testing.assert_close(clip.embed_text([texts[1]], normalize=False)[0], raw[1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_altclip_layout_embeds_images(tiny_layouts, variant):
    clip = altdiffusion.load_clip(tiny_layouts[f"altclip-{variant}"])
    emb = clip.embed_image([_image(0), _image(1)])
    assert emb.shape == (2, PROJECTION_DIM[variant])
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2), atol=1e-5, rtol=0)
    sim = clip.similarity([_image(0)], ["猫", "a dog"])
    assert sim.shape == (1, 2)
    assert (sim.abs() <= 1 + 1e-5).all()


def test_altclip_text_tower_uses_pre_ln_and_cls_token(tiny_layouts, prompts):
    """Retrieval embedding = text_projection(transformation(pre_LN(h[-1]))[:, 0])."""
    clip = altdiffusion.load_clip(tiny_layouts["altclip-m9"])
    batch = clip.tokenize([prompts["zh"], prompts["en"]])
    tm = clip.model.text_model
    with torch.no_grad():
        h = tm.roberta(**batch).last_hidden_state
        expected = clip.model.text_projection(tm.transformation(tm.pre_LN(h))[:, 0])
        without_ln = clip.model.text_projection(tm.transformation(h)[:, 0])
        got = clip.model.encode_text(**batch)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert (got - without_ln).abs().max() > 1e-3


# ------------------------------------------------------------------------------- AltDiffusion


@pytest.mark.parametrize("variant", VARIANTS)
def test_pipeline_layout_encodes_chinese_english_and_mixed_prompts(tiny_layouts, prompts, variant):
    pipe = altdiffusion.load_pipeline(tiny_layouts[f"altdiffusion-{variant}"])
    assert pipe.text_encoder.head == ("m18" if variant == "m18" else "m9")
    assert pipe.safety_checker is not None and pipe.feature_extractor is not None
    d = CONDITIONING_DIM[variant]
    outputs = {}
    for lang, text in prompts.items():
        cond, uncond = pipe.encode_prompt(text)
        assert cond.shape == (1, 77, d), lang
        assert uncond.shape == (1, 77, d), lang
        assert cond.dtype == torch.float32
        assert torch.isfinite(cond).all() and torch.isfinite(uncond).all()
        outputs[lang] = (cond, uncond)
    # The unconditional branch is the empty prompt whatever the prompt is.
    empty, _ = pipe.encode_prompt("")
    for _cond, uncond in outputs.values():
        torch.testing.assert_close(uncond, empty, atol=0, rtol=0)
    # Different prompts condition differently, and differently from the empty prompt.
    conds = [c for c, _ in outputs.values()] + [empty]
    for i in range(len(conds)):
        for j in range(i + 1, len(conds)):
            assert (conds[i] - conds[j]).abs().max() > 1e-4, (i, j)
    # A batch of prompts equals the prompts one at a time.
    batch, _ = pipe.encode_prompt(list(prompts.values()))
    assert batch.shape == (3, 77, d)
    for row, (cond, _) in zip(batch, outputs.values()):
        torch.testing.assert_close(row[None], cond, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pipeline_unet_accepts_the_conditioning(tiny_layouts, prompts, variant):
    pipe = altdiffusion.load_pipeline(tiny_layouts[f"altdiffusion-{variant}"])
    cond, _ = pipe.encode_prompt(prompts["mixed"])
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = pipe.unet(latents, 500, encoder_hidden_states=cond).sample
    assert out.shape == latents.shape and torch.isfinite(out).all()


def test_m18_conditioning_is_pre_ln_of_penultimate_layer_then_transformation_pre(
    tiny_layouts, prompts, xlmr_reference, tokenize_77
):
    folder = tiny_layouts["altdiffusion-m18"]
    pipe = altdiffusion.load_pipeline(folder)
    config = json.loads((folder / "text_encoder" / "config.json").read_text())
    assert config["has_pre_transformation"] is True
    model, heads = xlmr_reference(folder / "text_encoder")
    eps = config["layer_norm_eps"]
    for lang, text in prompts.items():
        batch = tokenize_77(pipe.tokenizer, [text])
        # The pipeline's chunking gives exactly the standard tokenisation for a short prompt.
        chunk = pipe.prompt_chunks(text)
        assert len(chunk) == 1
        assert chunk[0].input_ids == batch.input_ids[0].tolist()
        assert chunk[0].attention_mask == batch.attention_mask[0].tolist()
        with torch.no_grad():
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
            penultimate = out.hidden_states[-2]
            assert len(out.hidden_states) == config["num_hidden_layers"] + 1
            normed = F.layer_norm(
                penultimate, (config["hidden_size"],), heads["pre_LN.weight"], heads["pre_LN.bias"], eps
            )
            expected = F.linear(normed, heads["transformation_pre.weight"], heads["transformation_pre.bias"])
            last_layer = F.linear(out.last_hidden_state, heads["transformation.weight"], heads["transformation.bias"])
            no_ln = F.linear(penultimate, heads["transformation_pre.weight"], heads["transformation_pre.bias"])
        cond, _ = pipe.encode_prompt(text)
        torch.testing.assert_close(cond, expected, atol=1e-6, rtol=0, msg=lambda m, lang=lang: f"{lang}: {m}")
        assert expected.shape == (1, 77, 48)
        assert (cond - last_layer).abs().max() > 1e-3, f"{lang}: m18 conditioning equals the last-layer path"
        assert (cond - no_ln).abs().max() > 1e-3, f"{lang}: m18 conditioning skips pre_LN"


@pytest.mark.parametrize("variant", ["m2", "m9"])
def test_m2_m9_conditioning_is_transformation_of_last_layer_without_ln(
    tiny_layouts, prompts, xlmr_reference, tokenize_77, variant
):
    folder = tiny_layouts[f"altdiffusion-{variant}"]
    pipe = altdiffusion.load_pipeline(folder)
    model, heads = xlmr_reference(folder / "text_encoder")
    assert not any(k.startswith(("pre_LN.", "transformation_pre.")) for k in heads)
    for lang, text in prompts.items():
        batch = tokenize_77(pipe.tokenizer, [text])
        with torch.no_grad():
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
            expected = F.linear(out.last_hidden_state, heads["transformation.weight"], heads["transformation.bias"])
            penultimate = F.linear(out.hidden_states[-2], heads["transformation.weight"], heads["transformation.bias"])
            unmasked = model(input_ids=batch.input_ids).last_hidden_state
            unmasked = F.linear(unmasked, heads["transformation.weight"], heads["transformation.bias"])
        cond, _ = pipe.encode_prompt(text)
        torch.testing.assert_close(cond, expected, atol=1e-6, rtol=0, msg=lambda m, lang=lang: f"{lang}: {m}")
        assert (cond - penultimate).abs().max() > 1e-3
        # use_attention_mask: true -> padding is masked out (it changes the padded positions).
        assert (cond - unmasked).abs().max() > 1e-4


def test_m9_text_encoder_carrying_altclip_pre_ln_ignores_it(copy_layout, tiny_layouts, prompts):
    """m2/m9 text encoders were cut from an AltCLIP and may keep its pre_LN: loaded, never applied."""
    original = altdiffusion.load_pipeline(tiny_layouts["altdiffusion-m9"])
    folder = copy_layout("altdiffusion-m9")
    path = folder / "text_encoder" / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    state["pre_LN.weight"] = torch.full((32,), 3.0)
    state["pre_LN.bias"] = torch.full((32,), 0.5)
    torch.save(state, path)
    pipe = altdiffusion.load_pipeline(folder)
    assert pipe.text_encoder.head == "m9"
    for text in prompts.values():
        torch.testing.assert_close(pipe.encode_prompt(text)[0], original.encode_prompt(text)[0], atol=0, rtol=0)


# ---------------------------------------------------------------------- variants of the layout


@pytest.fixture(scope="module")
def safetensors_m9(tmp_path_factory):
    return write_tiny_altdiffusion(tmp_path_factory.mktemp("st") / "m9", "m9", text_weights="safetensors")


@pytest.fixture(scope="module")
def no_checker_m18(tmp_path_factory):
    return write_tiny_altdiffusion(tmp_path_factory.mktemp("nc") / "m18", "m18", safety_checker=False)


def test_text_encoder_with_safetensors_weights_loads_the_same_tensors(safetensors_m9, tiny_layouts, prompts):
    te = safetensors_m9 / "text_encoder"
    assert (te / "model.safetensors").is_file() and not (te / "pytorch_model.bin").exists()
    pipe = altdiffusion.load_pipeline(safetensors_m9)
    reference = altdiffusion.load_pipeline(tiny_layouts["altdiffusion-m9"])  # same seed, .bin weights
    for name, tensor in reference.text_encoder.state_dict().items():
        torch.testing.assert_close(pipe.text_encoder.state_dict()[name], tensor, atol=0, rtol=0, msg=name)
    for text in prompts.values():
        torch.testing.assert_close(pipe.encode_prompt(text)[0], reference.encode_prompt(text)[0], atol=0, rtol=0)


def test_layout_without_safety_checker(no_checker_m18, prompts):
    assert not (no_checker_m18 / "safety_checker").exists()
    index = json.loads((no_checker_m18 / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None]
    pipe = altdiffusion.load_pipeline(no_checker_m18)
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert "safety_checker" not in pipe.modules()
    assert pipe.encode_prompt(prompts["zh"])[0].shape == (1, 77, 48)


def test_safety_checker_can_be_skipped_when_present(tiny_layouts):
    folder = tiny_layouts["altdiffusion-m9"]
    assert (folder / "safety_checker").is_dir()
    assert altdiffusion.load_pipeline(folder).safety_checker is not None
    pipe = altdiffusion.load_pipeline(folder, safety_checker=False)
    assert pipe.safety_checker is None and pipe.feature_extractor is None


@pytest.mark.parametrize("variant, size", [("m2", 128), ("m9", 128), ("m18", 64)])
def test_legacy_unet_sample_size_is_doubled_for_diffusers_0_8(tiny_layouts, variant, size):
    """diffusers 0.8 wrote sample_size 32 for 512-px models; diffusers reads it as 64.
    Tiny VAE factor 2: 64 latent -> 128 px. m18 was written by diffusers 0.10: no bump."""
    folder = tiny_layouts[f"altdiffusion-{variant}"]
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    assert unet_config["sample_size"] == 32
    pipe = altdiffusion.load_pipeline(folder)
    assert pipe.vae_scale_factor == 2
    assert pipe.default_size == size


def test_sample_size_32_from_a_recent_diffusers_is_kept(copy_layout):
    folder = copy_layout("altdiffusion-m9")
    path = folder / "unet" / "config.json"
    config = json.loads(path.read_text())
    config["_diffusers_version"] = "0.12.0"
    path.write_text(json.dumps(config))
    assert altdiffusion.load_pipeline(folder).default_size == 64
