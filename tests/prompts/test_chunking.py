"""Long-prompt chunking, comma backtracking, padding and "Original" weighting (real XLM-R)."""

from __future__ import annotations

import pytest
import torch

from altdiffusion.prompts.chunking import (
    PromptChunk,
    apply_original_weighting,
    comma_token_ids,
    empty_chunk,
    pad_to_same_length,
    tokenize_prompt,
)

# A real, detailed Chinese description (no spaces); 145 XLM-R tokens on its own.
ZH_SCENE = (
    "一座古老的中式庭院坐落在江南水乡，青砖黛瓦的建筑掩映在翠绿的竹林之中，"
    "清晨的薄雾笼罩着蜿蜒的石板小路，远处的拱桥倒映在平静的湖面上，"
    "几只白鹭在荷花池边悠闲地觅食，屋檐下挂着红色的灯笼和精致的木雕窗花，"
    "一位身穿淡蓝色汉服的少女手持油纸伞站在桥头，神情温柔而宁静，"
    "阳光透过云层洒下金色的光芒，画面细节丰富，色彩柔和，电影级光影，超高清，杰作"
)

PARITY_PROMPTS = {
    "en": "a photograph of an astronaut riding a horse on mars, highly detailed, 8k",
    "zh": "一只可爱的橘猫坐在窗台上，窗外下着小雨，温暖的灯光，油画风格",
    "ja": "桜の木の下で着物を着た少女が微笑んでいる、夕焼け、アニメ風、高品質",
    "ar": "قطة صغيرة تجلس على حافة النافذة، مطر خفيف، إضاءة دافئة، لوحة زيتية",
    "mixed": "赛博朋克风格的上海街头 at night，neon lights，雨后的倒影, 8k ultra detailed",
    "colon_and_stray_closer": "time: 12:30) on a clock]",
    "empty": "",
}


def _content(chunk: PromptChunk) -> list[int]:
    return chunk.input_ids[1 : sum(chunk.attention_mask) - 1]


def _single_token_words(tok, n: int) -> list[str]:
    """n English words that XLM-R keeps as one '▁word' token each (checked, not assumed)."""
    pool = [
        "cat",
        "dog",
        "house",
        "tree",
        "river",
        "city",
        "night",
        "light",
        "red",
        "blue",
        "green",
        "black",
        "white",
        "small",
        "big",
        "old",
        "new",
        "sun",
        "moon",
        "star",
        "sky",
        "sea",
        "road",
        "car",
        "book",
        "door",
        "window",
        "table",
        "chair",
        "girl",
        "boy",
        "man",
        "woman",
        "king",
        "water",
        "fire",
        "stone",
        "wood",
        "gold",
        "snow",
        "rain",
        "wind",
        "cloud",
        "flower",
        "bird",
        "fish",
        "horse",
        "lion",
    ]
    words = [w for w in pool if len(tok(w, add_special_tokens=False).input_ids) == 1]
    assert len(words) >= 20
    return [words[i % len(words)] for i in range(n)]


def _check_frame(chunk: PromptChunk, tok) -> None:
    n = sum(chunk.attention_mask)
    assert len(chunk.input_ids) == len(chunk.attention_mask) == len(chunk.weights) == 77
    assert chunk.attention_mask == [1] * n + [0] * (77 - n)
    assert chunk.input_ids[0] == tok.bos_token_id and chunk.input_ids[n - 1] == tok.eos_token_id
    assert chunk.input_ids[n:] == [tok.pad_token_id] * (77 - n)
    assert chunk.weights[0] == chunk.weights[n - 1] == 1.0 and all(w == 1.0 for w in chunk.weights[n:])


# --- parity with the plain tokenizer --------------------------------------------------------


@pytest.mark.parametrize("name", list(PARITY_PROMPTS))
def test_short_plain_prompt_matches_tokenizer(xlmr_tokenizer, name):
    prompt = PARITY_PROMPTS[name]
    ref = xlmr_tokenizer(prompt, padding="max_length", max_length=77, truncation=True)
    assert len(ref.input_ids) == 77 and sum(ref.attention_mask) <= 77
    (chunk,) = tokenize_prompt(prompt, xlmr_tokenizer)
    assert chunk.input_ids == ref.input_ids
    assert chunk.attention_mask == ref.attention_mask
    assert chunk.weights == [1.0] * 77


def test_exactly_75_tokens_is_one_chunk_and_matches(xlmr_tokenizer):
    prompt = " ".join(_single_token_words(xlmr_tokenizer, 75))
    (chunk,) = tokenize_prompt(prompt, xlmr_tokenizer)
    ref = xlmr_tokenizer(prompt, padding="max_length", max_length=77, truncation=True)
    assert chunk.input_ids == ref.input_ids and sum(chunk.attention_mask) == 77
    chunks = tokenize_prompt(prompt + " cat", xlmr_tokenizer)
    assert [len(_content(c)) for c in chunks] == [75, 1]


def test_empty_prompt_is_one_empty_chunk(xlmr_tokenizer):
    (chunk,) = tokenize_prompt("", xlmr_tokenizer)
    tok = xlmr_tokenizer
    assert chunk.input_ids == [tok.bos_token_id, tok.eos_token_id] + [tok.pad_token_id] * 75
    assert chunk == empty_chunk(tok)


# --- long prompts ----------------------------------------------------------------------------


def test_long_chinese_prompt_gives_four_full_size_chunks(xlmr_tokenizer):
    prompt = ZH_SCENE + "。" + ZH_SCENE
    flat = xlmr_tokenizer(prompt, add_special_tokens=False).input_ids
    assert 225 < len(flat) <= 300  # needs 4 windows of 75
    chunks = tokenize_prompt(prompt, xlmr_tokenizer)
    assert len(chunks) == 4
    for c in chunks:
        _check_frame(c, xlmr_tokenizer)
    # Nothing lost, duplicated or reordered; backtracking only shortens chunks.
    assert [t for c in chunks for t in _content(c)] == flat
    assert all(len(_content(c)) <= 75 for c in chunks)
    # Chinese '，' normalises to ',' in XLM-R, so backtracking applies: chunks end on commas.
    commas = comma_token_ids(xlmr_tokenizer)
    assert any(len(_content(c)) < 75 and _content(c)[-1] in commas for c in chunks[:-1])


def test_comma_backtracking_moves_the_tail(xlmr_tokenizer):
    words = _single_token_words(xlmr_tokenizer, 80)
    # 70 one-token words, a comma right after the 70th (token index 70, 5 before the boundary)
    prompt = " ".join(words[:70]) + ", " + " ".join(words[70:])
    flat = xlmr_tokenizer(prompt, add_special_tokens=False).input_ids
    assert len(flat) == 81 and flat[70] in comma_token_ids(xlmr_tokenizer)

    first, second = tokenize_prompt(prompt, xlmr_tokenizer)
    assert _content(first) == flat[:71]  # cut right after the comma
    assert len(_content(first)) == 71 < 75
    assert _content(second) == flat[71:]

    no_bt = tokenize_prompt(prompt, xlmr_tokenizer, comma_backtrack=0)
    assert [_content(c) for c in no_bt] == [flat[:75], flat[75:]]


def test_comma_too_far_back_is_ignored(xlmr_tokenizer):
    words = _single_token_words(xlmr_tokenizer, 90)
    prompt = " ".join(words[:40]) + ", " + " ".join(words[40:])  # comma 34 tokens before the end
    flat = xlmr_tokenizer(prompt, add_special_tokens=False).input_ids
    chunks = tokenize_prompt(prompt, xlmr_tokenizer, comma_backtrack=20)
    assert [_content(c) for c in chunks] == [flat[:75], flat[75:]]
    wide = tokenize_prompt(prompt, xlmr_tokenizer, comma_backtrack=40)
    assert [_content(c) for c in wide] == [flat[:41], flat[41:]]


def test_comma_tokens_from_vocab(xlmr_tokenizer):
    ids = comma_token_ids(xlmr_tokenizer)
    for text in (",", "，", "、", "،", "؛"):
        enc = xlmr_tokenizer(text, add_special_tokens=False).input_ids
        assert any(t in ids for t in enc), text
    assert xlmr_tokenizer.convert_tokens_to_ids("▁") not in ids
    assert comma_token_ids(xlmr_tokenizer) is ids  # cached per tokenizer


# --- BREAK -----------------------------------------------------------------------------------


def test_break_starts_a_new_chunk(xlmr_tokenizer):
    tok = xlmr_tokenizer
    a, b = tokenize_prompt("a red house BREAK a blue sky", tok)
    assert _content(a) == tok("a red house", add_special_tokens=False).input_ids
    assert _content(b) == tok("a blue sky", add_special_tokens=False).input_ids


@pytest.mark.parametrize("prompt", ["BREAK cat", "cat BREAK", "BREAK BREAK cat BREAK BREAK"])
def test_break_never_makes_empty_chunks(xlmr_tokenizer, prompt):
    assert len(tokenize_prompt(prompt, xlmr_tokenizer)) == 1


def test_break_after_full_chunk_does_not_add_an_empty_one(xlmr_tokenizer):
    prompt = " ".join(_single_token_words(xlmr_tokenizer, 75)) + " BREAK cat"
    assert [len(_content(c)) for c in tokenize_prompt(prompt, xlmr_tokenizer)] == [75, 1]


# --- weights ---------------------------------------------------------------------------------


def test_weights_follow_segments(xlmr_tokenizer):
    tok = xlmr_tokenizer
    (chunk,) = tokenize_prompt("a (red:1.5) house, [blue] sky", tok)
    _check_frame(chunk, tok)
    # Same tokens as the prompt without syntax: segment boundaries add no '▁' tokens.
    assert _content(chunk) == tok("a red house, blue sky", add_special_tokens=False).input_ids
    by_token = dict(zip(tok.convert_ids_to_tokens(chunk.input_ids), chunk.weights))
    assert by_token["▁red"] == 1.5
    assert by_token["▁blue"] == pytest.approx(1 / 1.1)
    assert by_token["▁a"] == by_token["▁house"] == by_token["▁sky"] == 1.0


def test_weights_in_chinese_without_spurious_boundaries(xlmr_tokenizer):
    tok = xlmr_tokenizer
    (chunk,) = tokenize_prompt("(红色:1.3)，蓝色的天空", tok)
    assert _content(chunk) == tok("红色，蓝色的天空", add_special_tokens=False).input_ids
    n = len(_content(chunk))
    assert chunk.weights[1 : n + 1][:2] == [1.3, 1.3]  # '▁' + '红色'
    assert chunk.weights[3 : n + 1] == [1.0] * (n - 2)


def test_weights_travel_with_backtracked_tokens(xlmr_tokenizer):
    words = _single_token_words(xlmr_tokenizer, 80)
    prompt = " ".join(words[:70]) + ", (" + " ".join(words[70:73]) + ":1.4) " + " ".join(words[73:])
    first, second = tokenize_prompt(prompt, xlmr_tokenizer)
    assert len(_content(first)) == 71
    assert second.weights[1:4] == [1.4, 1.4, 1.4] and second.weights[4] == 1.0


# --- padding positive / negative ---------------------------------------------------------------


def test_pad_to_same_length(xlmr_tokenizer):
    tok = xlmr_tokenizer
    pos = tokenize_prompt(ZH_SCENE + "。" + ZH_SCENE, tok)
    neg = tokenize_prompt("低质量，模糊", tok)
    p2, n2 = pad_to_same_length(pos, neg, tok)
    assert len(p2) == len(n2) == 4
    assert p2 == pos and n2[0] == neg[0]
    assert all(c == empty_chunk(tok) for c in n2[1:])
    assert len(neg) == 1  # input not modified
    n3, p3 = pad_to_same_length(neg, pos, tok)  # symmetric
    assert n3 == n2 and p3 == pos


# --- "Original" weighting ----------------------------------------------------------------------


def test_original_weighting_identity_for_unit_weights():
    h = torch.randn(2, 77, 16)
    out = apply_original_weighting(h, torch.ones(2, 77))
    assert out is h


def test_original_weighting_keeps_per_item_mean_and_scales_relative():
    torch.manual_seed(0)
    h = torch.randn(2, 77, 16, dtype=torch.float64) + 0.5
    w = torch.ones(2, 77, dtype=torch.float64)
    w[0, 3] = 1.5
    w[1, 10:20] = 0.5
    out = apply_original_weighting(h, w)
    assert out.dtype == h.dtype and out.shape == h.shape
    torch.testing.assert_close(out.mean(dim=(1, 2)), h.mean(dim=(1, 2)), rtol=0, atol=1e-6)
    # Every position is rescaled by one common factor per item, times its own weight.
    ratio = out / h
    c0 = ratio[0, 0, 0]
    torch.testing.assert_close(ratio[0], (c0 * w[0])[:, None].expand(77, 16))
    assert not torch.allclose(out[0], h[0])
    torch.testing.assert_close(ratio[0, 3] / ratio[0, 0], torch.full((16,), 1.5, dtype=torch.float64))
    torch.testing.assert_close(ratio[1, 15] / ratio[1, 0], torch.full((16,), 0.5, dtype=torch.float64))


def test_original_weighting_is_per_item():
    torch.manual_seed(1)
    h = torch.randn(2, 77, 8) + 1.0
    w = torch.ones(2, 77)
    w[0, 5] = 2.0
    both = apply_original_weighting(h, w)
    alone = apply_original_weighting(h[:1], w[:1])
    torch.testing.assert_close(both[:1], alone)
    torch.testing.assert_close(both[1], h[1])  # all-ones item unchanged by its neighbour


def test_original_weighting_half_precision():
    h = (torch.randn(1, 77, 8) + 1.0).half()
    w = torch.ones(1, 77)
    w[0, 1] = 1.2
    out = apply_original_weighting(h, w)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float().mean(), h.float().mean(), rtol=1e-3, atol=1e-3)
