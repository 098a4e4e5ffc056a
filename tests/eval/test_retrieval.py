"""``eval retrieval`` on the mini report's retrieval scenes, in each layout, equals the report's text->image
R@1 per language and an independent computation with transformers' AltCLIPModel."""

import json

import pytest
import torch

from altdiffusion.eval import retrieval
from altdiffusion.mini import evaluate
from tests.eval.conftest import N
from tests.eval.reference import image_features, text_features

LANGS = ("en", "zh", "ru")


def test_multilingual_jsonl_reports_each_language_as_the_mini_report(mini_data, mini_clip, cache_dir):
    results = retrieval("mini", mini_data / "retrieval" / "captions.jsonl", batch_size=16, cache_dir=cache_dir)
    assert [r.language for r in results] == sorted(["en", "zh", "es", "fr", "ru", "ja", "ko", "ar", "it"])
    for result in results:
        expected = evaluate.retrieval_r1(mini_clip, result.language, n=N)
        assert result.metrics["image_retrieval_recall@1"] == expected, result.language


@pytest.mark.parametrize("layout", ["webdataset", "tsv"])
@pytest.mark.parametrize("lang", LANGS)
def test_single_language_layouts_equal_transformers(mini_data, reference_altclip, cache_dir, layout, lang):
    if layout == "webdataset":
        (result,) = retrieval("mini", mini_data / f"retrieval-wds-{lang}", language=lang, cache_dir=cache_dir)
    else:
        (result,) = retrieval("mini", mini_data / "retrieval" / f"captions-{lang}.tsv", cache_dir=cache_dir)
    assert (result.language, result.task) == (lang, "zeroshot_retrieval")

    rows = [json.loads(line) for line in (mini_data / "retrieval" / "captions.jsonl").read_text("utf-8").splitlines()]
    images = image_features(reference_altclip, [mini_data / "retrieval" / r["image"] for r in rows])
    texts = text_features(reference_altclip, [r["captions"][lang] for r in rows])
    scores = texts @ images.t()  # one caption per image: text i's image is image i
    truth = torch.arange(len(rows))[:, None]
    expected = {}
    for k in (1, 5, 10):
        expected[f"image_retrieval_recall@{k}"] = (scores.topk(k, 1).indices == truth).any(1).float().mean().item()
        expected[f"text_retrieval_recall@{k}"] = (scores.t().topk(k, 1).indices == truth).any(1).float().mean().item()
    expected["mean_recall"] = sum(expected.values()) / 6
    assert result.metrics == pytest.approx(expected, abs=1e-6)


def test_several_captions_per_image_and_a_language_filter(mini_data, mini_clip, cache_dir, tmp_path):
    rows = [json.loads(line) for line in (mini_data / "retrieval" / "captions.jsonl").read_text("utf-8").splitlines()]
    path = tmp_path / "two.jsonl"
    lines = []
    for row in rows:
        image = str(mini_data / "retrieval" / row["image"])
        lines.append(json.dumps({"image": image, "captions": {"en": [row["captions"]["en"], row["captions"]["it"]]}}))
    path.write_text("\n".join(lines) + "\n")
    (result,) = retrieval("mini", path, languages=["en"], cache_dir=cache_dir)
    # Each caption is a query whose positive is its own image; an image is found by either caption.
    from PIL import Image

    from altdiffusion.eval.metrics import retrieval_metrics

    images = mini_clip.embed_image([Image.open(mini_data / "retrieval" / r["image"]) for r in rows])
    texts = mini_clip.embed_text([c for r in rows for c in (r["captions"]["en"], r["captions"]["it"])])
    expected = retrieval_metrics(texts, images, torch.arange(len(rows)).repeat_interleave(2))
    assert result.metrics == pytest.approx(expected, abs=1e-6)
