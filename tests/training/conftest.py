import pytest

from tests.training import grammar


@pytest.fixture(scope="session")
def distill_world(tmp_path_factory):
    """A tiny English CLIP teacher, a tiny XLM-R student and en-zh parallel text (train / held out)."""
    from altdiffusion.models.tiny_distillation import write_tiny_clip, write_tiny_xlmr

    root = tmp_path_factory.mktemp("distill-world")
    corpus = grammar.corpus()
    write_tiny_clip(root / "teacher", corpus, seed=0, width=64, layers=1)
    write_tiny_xlmr(root / "student", corpus, seed=0, width=64, layers=2)
    train, held = grammar.split()
    grammar.write_tsv(root / "train.tsv", train)
    return {
        "root": root,
        "teacher": root / "teacher",
        "student": root / "student",
        "train": root / "train.tsv",
        "held": held,
    }
