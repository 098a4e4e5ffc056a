"""The mini models' starting checkpoints: the student's tokenizer."""

from altdiffusion.mini import architecture, world
from altdiffusion.testing.tiny import write_tiny_xlmr


def _corpus() -> list[str]:
    scenes = world.scenes_for_eval("seen", 150, 7, 1) + world.scenes_for_eval("seen", 50, 8, 2)
    return [world.caption(s, lang, k % 2) for k, s in enumerate(scenes) for lang in world.LANGUAGES]


def _pieces(folder, text: str) -> list[str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    return [p.removeprefix("▁") for p in tokenizer.tokenize(text)]


def test_student_tokenizer_keeps_chinese_and_japanese_to_single_characters(tmp_path):
    corpus = _corpus()
    options = {k: v for k, v in architecture.STUDENT.items() if k in ("vocab_size", "max_piece_length")}
    split = write_tiny_xlmr(tmp_path / "split", corpus, width=16, layers=1, cjk_single_chars=True, **options)
    free = write_tiny_xlmr(tmp_path / "free", corpus, width=16, layers=1, cjk_single_chars=False, **options)
    zh, ja, en = (world.caption(world.scenes_for_eval("seen", 1, 9, 1)[0], lang, 0) for lang in ("zh", "ja", "en"))
    assert all(len(p) <= 1 for p in _pieces(split, zh) + _pieces(split, ja))
    # Without the split the repetitive corpus merges Chinese phrases into multi-character tokens...
    assert max(len(p) for p in _pieces(free, zh)) >= 3
    # ...and other scripts keep pieces longer than a character either way.
    assert max(len(p) for p in _pieces(split, en)) >= 3
    assert (split / "tokenizer.json").read_bytes() == write_tiny_xlmr(
        tmp_path / "again", corpus, width=16, layers=1, cjk_single_chars=True, **options
    ).joinpath("tokenizer.json").read_bytes()
    assert architecture.STUDENT["cjk_single_chars"] is True
