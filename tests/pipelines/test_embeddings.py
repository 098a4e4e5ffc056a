"""Textual-inversion triggers in the pipeline: an embedding made of a word's own token embeddings
conditions exactly as that word does (prompt, negative prompt, emphasis, long prompts; the m9
path of the bundled mini model and the m18 path of a tiny checkpoint), and the infotext records
A1111's ``TI hashes``."""

from __future__ import annotations

import hashlib

import pytest
import torch

from altdiffusion import load_pipeline
from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.infotext import parse_infotext
from altdiffusion.prompts.embedding_files import Embedding, write_embedding

FILLER = "a small green triangle on the left, a large blue star at the top, " * 6  # > 75 tokens


def word_vectors(pipe, before: str, word: str) -> torch.Tensor:
    """The token embeddings ``word`` has where it follows ``before`` in a prompt."""
    tokenize = lambda text: pipe.tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    whole, head = tokenize(f"{before} {word}"), tokenize(before)
    assert whole[: len(head)] == head
    ids = torch.tensor(whole[len(head) :])
    return pipe.text_encoder.token_embeddings.weight[ids].detach().clone()


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    pipe = load_pipeline("mini", device="cpu", dtype="fp32", safety_checker=False)
    folder = tmp_path_factory.mktemp("embeddings")
    circle = word_vectors(pipe, "a red", "circle")
    assert circle.shape[0] == 2  # XLM-R pieces: ▁circ + le, so a two-vector embedding
    write_embedding(Embedding("roundy", circle), folder / "roundy.safetensors")
    write_embedding(Embedding("blurry", word_vectors(pipe, "a", "gray")), folder / "blurry.pt")
    write_embedding(Embedding("clip768", torch.zeros(1, 768)), folder / "clip768.safetensors")
    pipe.load_embeddings(folder)
    return pipe, folder


@pytest.mark.parametrize(
    ("with_word", "with_trigger"),
    [
        ("a red circle", "a red roundy"),
        ("(a red circle:1.4) on a white background", "(a red roundy:1.4) on a white background"),
        ("[a red circle], ((big))", "[a red roundy], ((big))"),
        (FILLER + "a red circle", FILLER + "a red roundy"),
    ],
    ids=["plain", "emphasis", "down-weighted", "long"],
)
def test_trigger_conditions_exactly_as_the_word(mini, with_word, with_trigger):
    pipe, _ = mini
    expected, _ = pipe.encode_prompt(with_word)
    got, _ = pipe.encode_prompt(with_trigger)
    assert got.shape == expected.shape
    assert got.shape[1] >= 2 * 77 or not with_word.startswith(FILLER)  # the long one spans chunks
    assert (got - expected).abs().max().item() == 0


def test_trigger_in_the_negative_prompt(mini):
    pipe, _ = mini
    _, expected = pipe.encode_prompt("x", negative_prompt="a gray")
    _, got = pipe.encode_prompt("x", negative_prompt="a blurry")
    assert (got - expected).abs().max().item() == 0


def test_without_the_embedding_the_trigger_is_ordinary_text(mini):
    pipe, _ = mini
    fresh = load_pipeline("mini", device="cpu", dtype="fp32", safety_checker=False)
    assert not torch.equal(fresh.encode_prompt("a red roundy")[0], pipe.encode_prompt("a red roundy")[0])


def test_wrong_width_is_skipped_with_its_reason(mini):
    pipe, _ = mini
    assert sorted(pipe.embeddings.loaded) == ["blurry", "roundy"]
    assert "768-d" in pipe.embeddings.skipped["clip768"].reason and "128-d" in pipe.embeddings.skipped["clip768"].reason
    pipe.encode_prompt("clip768")  # the skipped trigger is plain text, no error


def test_ti_hashes_in_the_infotext(mini):
    pipe, folder = mini
    result = pipe("a red roundy", negative_prompt="blurry", num_inference_steps=1, seed=3, progress=False)
    _, negative, params = parse_infotext(result.infotexts[0])
    short = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest()[:12] for n in ("roundy.safetensors", "blurry.pt")}
    assert negative == "blurry"
    assert params["TI hashes"] == f"roundy: {short['roundy.safetensors']}, blurry: {short['blurry.pt']}"
    assert '"roundy: ' in result.infotexts[0]  # quoted, as A1111 writes a value with ':' or ','
    plain = pipe("a red circle", num_inference_steps=1, seed=3, progress=False)
    assert "TI hashes" not in parse_infotext(plain.infotexts[0])[2]


def test_m18_path_conditions_exactly_as_the_word(tmp_path):
    pipe = load_pipeline(write_tiny_altdiffusion(tmp_path / "m18", "m18", safety_checker=False), device="cpu")
    write_embedding(Embedding("thing", word_vectors(pipe, "a", "cat")), tmp_path / "emb" / "thing.pt")
    pipe.load_embeddings(tmp_path / "emb")
    for word, trigger in [("a cat", "a thing"), ("(a cat:0.7), dog", "(a thing:0.7), dog")]:
        assert (pipe.encode_prompt(trigger)[0] - pipe.encode_prompt(word)[0]).abs().max().item() == 0
