"""Zero-shot classification with clip_benchmark's protocol.

W[c]   = normalise(mean_t normalise(text(template_t(classname_c))))
logits = 100 * normalise(image) @ W^T
metrics: acc1, acc5 (NaN below 5 classes, as clip_benchmark), mean_per_class_recall
"""

from __future__ import annotations

import torch

from altdiffusion.errors import InvalidInputError
from altdiffusion.eval import metrics
from altdiffusion.eval.datasets import CLASSIFICATION, Dataset, load_dataset
from altdiffusion.eval.embeddings import embed_images, embed_texts
from altdiffusion.eval.results import EvalResult
from altdiffusion.eval.templates import builtin_templates


def choose_templates(dataset: Dataset, language: str) -> list[str]:
    """The dataset's own templates (or --templates), else the built-in ones for ``language``."""
    templates = dataset.templates or builtin_templates(language)
    for template in templates:
        if "{c}" not in template and "{}" not in template:
            raise InvalidInputError(f"template {template!r} has no {{c}} (or {{}}) where the class name goes")
    return templates


def classify(image_emb: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor) -> tuple[dict, torch.Tensor]:
    logits = 100.0 * image_emb.float() @ classifier.t()
    acc1, acc5 = metrics.topk_accuracy(logits, labels, (1, 5))
    pred = logits.argmax(dim=1)
    scores = {
        "acc1": acc1,
        "acc5": acc5 if classifier.shape[0] >= 5 else float("nan"),
        "mean_per_class_recall": metrics.mean_per_class_recall(pred, labels),
    }
    return scores, pred


def evaluate_zeroshot(clip, cache, model_name: str, dataset: Dataset, *, language: str, batch_size: int) -> EvalResult:
    templates = choose_templates(dataset, language)
    classifier = metrics.class_embeddings(
        lambda texts: embed_texts(clip, texts, batch_size, cache), dataset.classnames, templates
    )
    image_emb, valid = embed_images(
        clip, dataset.read_images(), len(dataset.keys), batch_size, cache, dataset.fingerprint
    )
    skipped = dict(dataset.skipped)
    if len(valid) < len(dataset.keys):
        skipped["unreadable image"] = len(dataset.keys) - len(valid)
    if not len(valid):
        raise InvalidInputError(f"dataset {dataset.name!r}: none of its {len(dataset.keys)} images could be read")
    labels = torch.tensor(dataset.labels)[valid]
    scores, pred = classify(image_emb, labels, classifier)
    return EvalResult(dataset.name, model_name, CLASSIFICATION, language, scores, skipped, pred.tolist())


def zeroshot(
    model,
    dataset,
    *,
    language: str = "en",
    classnames=None,
    templates=None,
    split: str = "test",
    batch_size: int = 64,
    device=None,
    dtype=None,
    cache_dir=None,
) -> EvalResult:
    """Zero-shot classification of ``dataset`` (a path in a supported layout) with the CLIP ``model``."""
    from altdiffusion.eval.clips import open_clip

    data = load_dataset(
        dataset, task=CLASSIFICATION, language=language, classnames=classnames, templates=templates, split=split
    )
    clip, cache, name = open_clip(model, device=device, dtype=dtype, cache_dir=cache_dir)
    return evaluate_zeroshot(clip, cache, name, data, language=language, batch_size=batch_size)
