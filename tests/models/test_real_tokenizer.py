"""Tiny checkpoints with the real 250,002-token XLM-R tokenizer: real ids in, finite
conditioning out, one vector per language."""

from __future__ import annotations

import json

import pytest
import torch

import altdiffusion
from altdiffusion.mini.tokenizer import required_real_xlmr_tokenizer_file
from altdiffusion.models.tiny import write_tiny_altclip, write_tiny_altdiffusion

PROMPTS = {
    "zh": "一只可爱的猫坐在窗台上",
    "ja": "窓辺に座っているかわいい猫",
    "ar": "قطة لطيفة تجلس على حافة النافذة",
    "en": "a cute cat sitting on the windowsill",
}
UNK = 3


@pytest.fixture(scope="module")
def real_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("real-tokenizer")
    real = required_real_xlmr_tokenizer_file().read_bytes()
    return {
        "altdiffusion-m18": write_tiny_altdiffusion(root / "ad-m18", "m18", tokenizer_json=real, safety_checker=False),
        "altclip-m9": write_tiny_altclip(root / "ac-m9", "m9", tokenizer_json=real),
    }


@pytest.fixture(scope="module")
def pipe(real_folders):
    return altdiffusion.load_pipeline(real_folders["altdiffusion-m18"])


@pytest.fixture(scope="module")
def clip(real_folders):
    return altdiffusion.load_clip(real_folders["altclip-m9"])


def test_vocab_is_the_real_xlmr_vocab(pipe, clip, real_folders):
    assert len(pipe.tokenizer) == 250002 == pipe.text_encoder.config.vocab_size
    assert len(clip.tokenizer) == 250002 == clip.model.text_model.config.vocab_size
    assert pipe.text_encoder.roberta.embeddings.word_embeddings.weight.shape == (250002, 32)
    config = json.loads((real_folders["altdiffusion-m18"] / "text_encoder" / "config.json").read_text())
    assert config["vocab_size"] == 250002
    for tok in (pipe.tokenizer, clip.tokenizer):
        assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (0, 1, 2)
        assert tok.convert_tokens_to_ids("<mask>") == 250001
    assert pipe.tokenizer.model_max_length == 77


def test_hello_world_gives_the_published_ids(pipe, clip):
    assert pipe.tokenizer("Hello world!").input_ids == [0, 35378, 8999, 38, 2]
    assert clip.tokenizer("Hello world!").input_ids == [0, 35378, 8999, 38, 2]
    assert clip.tokenize(["Hello world!"])["input_ids"].tolist() == [[0, 35378, 8999, 38, 2]]
    assert pipe.prompt_chunks("Hello world!")[0].input_ids[:6] == [0, 35378, 8999, 38, 2, 1]


@pytest.mark.parametrize("lang", list(PROMPTS))
def test_prompts_tokenise_to_real_xlmr_ids(pipe, clip, xlmr_tokenizer, lang):
    text = PROMPTS[lang]
    expected = xlmr_tokenizer(text).input_ids
    assert expected[0] == 0 and expected[-1] == 2
    content = expected[1:-1]
    assert UNK not in content, "real tokenizer should know every token"
    assert max(content) > 1000  # beyond any tiny vocab
    assert pipe.tokenizer(text).input_ids == expected
    assert clip.tokenizer(text).input_ids == expected
    padded = xlmr_tokenizer(text, padding="max_length", max_length=77, truncation=True)
    (chunk,) = pipe.prompt_chunks(text)
    assert chunk.input_ids == padded.input_ids
    assert chunk.attention_mask == padded.attention_mask


def test_conditioning_is_finite_and_differs_between_languages(pipe):
    conds = {}
    for lang, text in PROMPTS.items():
        cond, uncond = pipe.encode_prompt(text)
        assert cond.shape == (1, 77, 48)
        assert torch.isfinite(cond).all() and torch.isfinite(uncond).all()
        conds[lang] = cond
    langs = list(conds)
    for i, a in enumerate(langs):
        for b in langs[i + 1 :]:
            assert (conds[a] - conds[b]).abs().max() > 1e-3, (a, b)


def test_real_ids_give_the_same_conditioning_as_diffusers(pipe, real_folders, xlmr_tokenizer):
    from diffusers.pipelines.deprecated.alt_diffusion.modeling_roberta_series import (
        RobertaSeriesConfig,
        RobertaSeriesModelWithTransformation,
    )

    te = real_folders["altdiffusion-m18"] / "text_encoder"
    reference = RobertaSeriesModelWithTransformation(
        RobertaSeriesConfig.from_dict(json.loads((te / "config.json").read_text()))
    )
    reference.load_state_dict(torch.load(te / "pytorch_model.bin", weights_only=True), strict=False)
    reference.eval()
    batch = xlmr_tokenizer(
        list(PROMPTS.values()), padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask).projection_state
    for i, text in enumerate(PROMPTS.values()):
        assert (pipe.encode_prompt(text)[0][0] - expected[i]).abs().max() <= 1e-5, text


def test_clip_embeds_every_language(clip):
    raw = clip.embed_text(list(PROMPTS.values()), normalize=False)
    assert raw.shape == (4, 16) and torch.isfinite(raw).all()
    emb = clip.embed_text(list(PROMPTS.values()))
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4), atol=1e-5, rtol=0)
    for i in range(4):
        for j in range(i + 1, 4):
            assert (raw[i] - raw[j]).abs().max() > 1e-4, (i, j)
