"""save_pretrained -> load_pipeline gives the same model, written as safetensors only."""

from __future__ import annotations

import json

import pytest
import torch

import altdiffusion


@pytest.fixture(scope="module", params=["m9", "m18"])
def round_trip(request, tiny_layouts, tmp_path_factory):
    variant = request.param
    original = altdiffusion.load_pipeline(tiny_layouts[f"altdiffusion-{variant}"])
    default_size_before_save = original.default_size
    saved = original.save_pretrained(tmp_path_factory.mktemp(f"saved-{variant}") / "pipe")
    reloaded = altdiffusion.load_pipeline(saved)
    return variant, original, saved, reloaded, default_size_before_save


def test_saved_folder_holds_only_safetensors_weights(round_trip):
    _, _, saved, _, _ = round_trip
    files = [p.relative_to(saved).as_posix() for p in saved.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))], files
    for name in (
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "safety_checker/model.safetensors",
    ):
        assert name in files, files
    assert not [f for f in files if f.endswith(".tmp") or "/." in f or f.startswith(".")], files  # no temp leftovers
    index = json.loads((saved / "model_index.json").read_text())
    assert index["text_encoder"] == ["alt_diffusion", "RobertaSeriesModelWithTransformation"]  # the published naming


def test_round_trip_keeps_the_text_encoder_config(round_trip):
    variant, original, saved, reloaded, _ = round_trip
    config = json.loads((saved / "text_encoder" / "config.json").read_text())
    assert config.get("has_pre_transformation", False) == (variant == "m18")
    assert reloaded.text_encoder.head == original.text_encoder.head == ("m18" if variant == "m18" else "m9")
    assert reloaded.text_encoder.conditioning_dim == original.text_encoder.conditioning_dim
    assert (reloaded.safety_checker is None) == (original.safety_checker is None)
    assert type(reloaded.scheduler) is type(original.scheduler)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(reloaded.scheduler.config) == public(original.scheduler.config)


def test_round_trip_gives_identical_weights(round_trip):
    _, original, _, reloaded, _ = round_trip
    for name, module in original.modules().items():
        ours = module.state_dict()
        theirs = reloaded.modules()[name].state_dict()
        assert ours.keys() == theirs.keys(), name
        for key, tensor in ours.items():
            assert torch.equal(theirs[key], tensor), f"{name}.{key}"


def test_round_trip_gives_identical_conditioning_and_unet_output(round_trip, prompts):
    _, original, _, reloaded, _ = round_trip
    for text in list(prompts.values()) + [""]:
        a, na = original.encode_prompt(text)
        b, nb = reloaded.encode_prompt(text)
        assert torch.equal(a, b), text
        assert torch.equal(na, nb), text
        assert original.prompt_chunks(text)[0].input_ids == reloaded.prompt_chunks(text)[0].input_ids
    cond, _ = original.encode_prompt(prompts["mixed"])
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out_a = original.unet(latents, 321, encoder_hidden_states=cond.expand(2, -1, -1)).sample
        out_b = reloaded.unet(latents, 321, encoder_hidden_states=cond.expand(2, -1, -1)).sample
        dec_a = original.decode_latents(latents)
        dec_b = reloaded.decode_latents(latents)
    assert torch.equal(out_a, out_b)
    assert (dec_a == dec_b).all()


def test_round_trip_of_the_round_trip_is_stable(round_trip, tmp_path, prompts):
    _, _, _, reloaded, _ = round_trip
    again = altdiffusion.load_pipeline(reloaded.save_pretrained(tmp_path / "again"))
    assert torch.equal(again.encode_prompt(prompts["zh"])[0], reloaded.encode_prompt(prompts["zh"])[0])


def test_round_trip_keeps_the_default_size(round_trip):
    variant, original, _, reloaded, before = round_trip
    assert before == original.default_size == reloaded.default_size == (64 if variant == "m18" else 128)


def test_round_trip_keeps_the_legacy_default_size(tiny_layouts, tmp_path):
    pipe = altdiffusion.load_pipeline(tiny_layouts["altdiffusion-m9"], safety_checker=False)
    assert pipe.default_size == 128
    saved = pipe.save_pretrained(tmp_path / "m9")
    reloaded_size = altdiffusion.load_pipeline(saved).default_size
    assert (pipe.default_size, reloaded_size) == (128, 128)


def test_decode_latents_works_outside_no_grad(tiny_layouts):
    """A public method: callable without the caller wrapping it in torch.no_grad()."""
    pipe = altdiffusion.load_pipeline(tiny_layouts["altdiffusion-m9"], safety_checker=False)
    pixels = pipe.decode_latents(torch.zeros(1, 4, 8, 8))
    assert pixels.shape == (1, 16, 16, 3)


def test_round_trip_keeps_name_and_languages(tiny_layouts, tmp_path):
    from altdiffusion.hub import M9_LANGUAGES

    pipe = altdiffusion.load_pipeline(tiny_layouts["altdiffusion-m9"], safety_checker=False)
    assert pipe.languages == ()
    pipe.name, pipe.languages = "AltDiffusion-m9", M9_LANGUAGES
    reloaded = altdiffusion.load_pipeline(pipe.save_pretrained(tmp_path / "named"))
    assert reloaded.name == "AltDiffusion-m9"
    assert reloaded.languages == M9_LANGUAGES
    assert reloaded.safety_checker is None
    assert not (tmp_path / "named" / "safety_checker").exists()
