"""Textual-inversion files (A1111 .pt, kohya .safetensors, diffusers learned_embeds), the folder
registry (loaded / skipped with a reason) and how triggers take token slots (real XLM-R)."""

from __future__ import annotations

import hashlib
import pickle

import pytest
import torch
from safetensors.torch import save_file

from altdiffusion.errors import CheckpointError
from altdiffusion.prompts.chunking import tokenize_prompt
from altdiffusion.prompts.embedding_files import Embedding, read_embedding, write_embedding
from altdiffusion.prompts.embeddings import EmbeddingDatabase
from tests.xlmr_tokenizer import real_xlmr_tokenizer

WIDTH = 16


@pytest.fixture(scope="module")
def tokenizer():
    return real_xlmr_tokenizer()


def _vectors(n: int, width: int = WIDTH, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


class CodeInPickle:
    """Unpickling this needs the class: weights_only must refuse it."""

    def __reduce__(self):
        return (print, ("ran code",))


def test_the_three_layouts_read_to_the_same_vectors(tmp_path):
    v = _vectors(3)
    torch.save({"string_to_param": {"*": v}, "name": "x", "step": 500, "sd_checkpoint": "abc"}, tmp_path / "a.pt")
    save_file({"emb_params": v}, str(tmp_path / "k.safetensors"))
    torch.save({"<concept>": v[0]}, tmp_path / "learned_embeds.bin")  # diffusers: one (D,) vector
    a, k, d = (read_embedding(tmp_path / n) for n in ("a.pt", "k.safetensors", "learned_embeds.bin"))
    assert torch.equal(a.vectors, v) and torch.equal(k.vectors, v) and torch.equal(d.vectors, v[:1])
    assert (a.name, a.step, a.sd_checkpoint, a.count, a.shape) == ("a", 500, "abc", 3, WIDTH)
    assert d.name == "learned_embeds" and d.count == 1
    assert a.sha256 == hashlib.sha256((tmp_path / "a.pt").read_bytes()).hexdigest()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_written_files_read_back_bit_identical_with_their_metadata(tmp_path, suffix):
    original = Embedding("mine", _vectors(2), step=30, sd_checkpoint="0123456789", sd_checkpoint_name="mini")
    path = write_embedding(original, tmp_path / f"mine{suffix}")
    back = read_embedding(path)
    assert torch.equal(back.vectors, original.vectors)
    assert (back.step, back.sd_checkpoint, back.sd_checkpoint_name) == (30, "0123456789", "mini")
    assert not list(tmp_path.glob(".*"))  # no temporary file left
    if suffix == ".pt":  # A1111's own layout
        data = torch.load(path, weights_only=True)
        assert set(data["string_to_param"]) == {"*"} and data["name"] == "mine"


def test_bad_files_are_refused_with_a_reason(tmp_path):
    (tmp_path / "json.safetensors").write_text('{"not": "safetensors"}')
    with open(tmp_path / "code.pt", "wb") as fh:
        pickle.dump({"string_to_param": {"*": CodeInPickle()}}, fh, protocol=2)
    save_file({"a": _vectors(1), "b": _vectors(1)}, str(tmp_path / "two.safetensors"))
    torch.save({"string_to_param": {"*": torch.full((1, 4), float("nan"))}}, tmp_path / "nan.pt")
    reasons = {}
    for name in ("json.safetensors", "code.pt", "two.safetensors", "nan.pt"):
        with pytest.raises(CheckpointError) as err:
            read_embedding(tmp_path / name)
        reasons[name] = str(err.value)
    assert "not a readable safetensors file" in reasons["json.safetensors"]
    assert "cannot be read safely" in reasons["code.pt"] and "safetensors" in reasons["code.pt"]
    assert "found 2 tensors" in reasons["two.safetensors"]
    assert "NaN" in reasons["nan.pt"]


def test_folder_loads_what_fits_and_skips_the_rest_with_reasons(tmp_path):
    write_embedding(Embedding("good", _vectors(2)), tmp_path / "good.safetensors")
    write_embedding(Embedding("wide", _vectors(1, width=768)), tmp_path / "wide.pt")
    write_embedding(Embedding("long", _vectors(76)), tmp_path / "long.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 5)
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    write_embedding(Embedding("deep", _vectors(1)), tmp_path / "sub" / "deep.pt")
    db = EmbeddingDatabase.from_folder(tmp_path, WIDTH)
    assert sorted(db.loaded) == ["deep", "good"]
    reasons = {name: s.reason for name, s in db.skipped.items()}
    assert sorted(reasons) == ["broken", "empty", "long", "wide"]
    assert "768-d" in reasons["wide"] and f"{WIDTH}-d" in reasons["wide"]
    assert "76 vectors" in reasons["long"] and "empty" in reasons["empty"]
    listing = db.listing()
    assert listing["loaded"]["good"] == {
        "step": None,
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
        "shape": WIDTH,
        "vectors": 2,
    }
    assert listing["skipped"]["wide"]["shape"] == 768 and listing["skipped"]["broken"]["shape"] is None


def test_triggers_are_found_in_text_as_whole_words():
    db = EmbeddingDatabase([Embedding("sty", _vectors(1)), Embedding("sty-two", _vectors(2))])
    parts = db.split("一张sty的画, (sty-two:1.2) styles nosty sty")
    names = [p.name if isinstance(p, Embedding) else p for p in parts]
    assert names == ["一张", "sty", "的画, (", "sty-two", ":1.2) styles nosty ", "sty"]
    assert [e.name for e in db.used_in(["sty-two x", "sty"])] == ["sty-two", "sty"]


def test_a_trigger_takes_one_slot_per_vector_with_its_emphasis(tokenizer):
    db = EmbeddingDatabase([Embedding("tri", _vectors(3))])
    plain = tokenize_prompt("a red cat", tokenizer)[0]
    (chunk,) = tokenize_prompt("a (tri:1.5) cat", tokenizer, embeddings=db)
    red = len(tokenizer("a red", add_special_tokens=False).input_ids) - len(
        tokenizer("a", add_special_tokens=False).input_ids
    )
    assert sum(chunk.attention_mask) == sum(plain.attention_mask) - red + 3
    ((position, embedding),) = chunk.fixes
    assert embedding.name == "tri" and chunk.input_ids[position : position + 3] == [tokenizer.unk_token_id] * 3
    assert chunk.weights[position : position + 3] == [1.5] * 3 and chunk.weights[position + 3] == 1.0


def test_an_embedding_is_never_split_between_chunks(tokenizer):
    db = EmbeddingDatabase([Embedding("tri", _vectors(3))])
    ids = tokenizer(" cat" * 200, add_special_tokens=False).input_ids
    assert len(set(ids)) == 1  # each " cat" is one token
    chunks = tokenize_prompt("cat" + " cat" * 72 + " tri cat", tokenizer, embeddings=db)  # 73 tokens, then 3 slots
    assert [sum(c.attention_mask) - 2 for c in chunks] == [73, 4]
    assert [(p, e.name) for p, e in chunks[1].fixes] == [(1, "tri")] and not chunks[0].fixes


def test_comma_backtracking_moves_an_embedding_with_its_phrase(tokenizer):
    db = EmbeddingDatabase([Embedding("tri", _vectors(2))])
    prompt = "cat" + " cat" * 64 + ", tri" + " cat" * 20  # the comma at 65, tri at 66-67, the chunk fills at 75
    chunks = tokenize_prompt(prompt, tokenizer, embeddings=db)
    assert len(chunks) == 2 and not chunks[0].fixes
    ((position, embedding),) = chunks[1].fixes
    assert position == 1 and embedding.name == "tri"
