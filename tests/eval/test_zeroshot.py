"""``eval zeroshot`` on the mini report's zero-shot images, written in each layout, equals the report's
figures and an independent computation with transformers' AltCLIPModel."""

import json

import pytest
import torch

from altdiffusion.cli import main
from altdiffusion.eval import zeroshot
from altdiffusion.mini import evaluate
from tests.eval.conftest import N
from tests.eval.reference import image_features, text_features


def _layout(data, layout, lang):
    if layout == "webdataset":
        return {"dataset": data / f"zeroshot-wds-{lang}"}
    folder = data / "zeroshot-folder"
    return {"dataset": folder, "classnames": folder / f"classnames-{lang}.txt", "templates": folder / "templates.txt"}


def _folder_images(data):
    """In the dataset's order (class folder, then file); a file's name is its scene's index."""
    return sorted((data / "zeroshot-folder").glob("*/*.png"))


@pytest.mark.parametrize("layout", ["webdataset", "folder"])
@pytest.mark.parametrize("lang", ["en", "zh", "ar"])
def test_zeroshot_equals_the_mini_report_and_transformers(
    mini_data, mini_clip, reference_altclip, cache_dir, layout, lang
):
    result = zeroshot("mini", language=lang, batch_size=16, cache_dir=cache_dir, **_layout(mini_data, layout, lang))
    # The mini report's colour and shape accuracies, from the same predictions.
    predicted = [evaluate.ZERO_SHOT_LABELS[i] for i in result.predictions]
    order = [int(p.stem) for p in _folder_images(mini_data)] if layout == "folder" else list(range(N))
    scenes = evaluate.zero_shot_scenes(0, N)
    assert evaluate.marginal_accuracy(predicted, [scenes[i] for i in order]) == evaluate.zero_shot(mini_clip, lang, n=N)

    # transformers: class weight = normalised text feature (one template, "{c}"), logits = image @ W.
    names = (mini_data / f"zeroshot-wds-{lang}" / "classnames.txt").read_text(encoding="utf-8").splitlines()
    weights = text_features(reference_altclip, names)
    by_scene = {int(p.stem): p for p in _folder_images(mini_data)}
    images = image_features(reference_altclip, [by_scene[i] for i in order])
    labels = torch.tensor([int(by_scene[i].parent.name[:2]) for i in order])
    logits = images @ weights.t()
    top5 = logits.topk(5, dim=1).indices
    expected = {
        "acc1": (top5[:, 0] == labels).float().mean().item(),
        "acc5": (top5 == labels[:, None]).any(1).float().mean().item(),
    }
    recalls = [(top5[labels == c, 0] == c).float().mean().item() for c in labels.unique()]
    expected["mean_per_class_recall"] = sum(recalls) / len(recalls)
    assert result.metrics == pytest.approx(expected, abs=1e-6)
    assert 0.5 < result.metrics["acc1"] <= result.metrics["acc5"]


def test_cli_writes_clip_benchmark_json_and_reuses_cached_embeddings(
    mini_data, cache_dir, tmp_path, monkeypatch, capsys
):
    args = ["eval", "zeroshot", "--model", "mini", "--dataset", str(mini_data / "zeroshot-wds-zh"), "--language", "zh"]
    args += ["--results", str(tmp_path / "results"), "--cache-dir", str(cache_dir), "--device", "cpu"]
    assert main(args) == 0
    (path,) = (tmp_path / "results").glob("*.json")
    record = json.loads(path.read_text(encoding="utf-8"))
    assert set(record) >= {"dataset", "model", "pretrained", "task", "metrics", "language"}
    assert (record["dataset"], record["task"], record["language"]) == (
        "zeroshot-wds-zh",
        "zeroshot_classification",
        "zh",
    )
    assert set(record["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert "| zh |" in (tmp_path / "results" / "results.md").read_text(encoding="utf-8")

    # A re-run embeds nothing: both image and text embeddings come from the cache.
    from altdiffusion.clip import CLIP

    def refuse(*_, **__):
        raise AssertionError("embedded again despite the cache")

    monkeypatch.setattr(CLIP, "embed_image", refuse)
    monkeypatch.setattr(CLIP, "embed_text", refuse)
    capsys.readouterr()
    assert main(args) == 0
    assert f"| zh | {100 * record['metrics']['acc1']:.2f} |" in capsys.readouterr().out


def test_builtin_templates_cover_the_m9_languages_and_chinese_is_as_rich_as_the_papers():
    from altdiffusion.eval.templates import builtin_templates

    zh = builtin_templates("zh")
    assert len(zh) >= 80 and builtin_templates("cn") == zh  # clip_benchmark's code for Chinese
    for lang in ("en", "zh", "es", "fr", "ru", "ja", "ko", "ar", "it"):
        templates = builtin_templates(lang)
        assert len(templates) >= 20 and all("{c}" in t for t in templates), lang
