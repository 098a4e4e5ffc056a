"""Image-text retrieval: R@1/5/10 in both directions and their mean, per caption language."""

from __future__ import annotations

import torch

from altdiffusion.errors import InvalidInputError
from altdiffusion.eval import metrics
from altdiffusion.eval.datasets import RETRIEVAL, Dataset, load_dataset
from altdiffusion.eval.embeddings import embed_images, embed_texts
from altdiffusion.eval.results import EvalResult


def captions_in(dataset: Dataset, valid: torch.Tensor, language: str) -> tuple[list[str], torch.Tensor]:
    """The captions in ``language`` of the readable images, and the (row in ``valid``) image of each."""
    texts, owners = [], []
    for row, index in enumerate(valid.tolist()):
        for text in dataset.captions[index].get(language, []):
            texts.append(text)
            owners.append(row)
    return texts, torch.tensor(owners, dtype=torch.long)


def evaluate_retrieval(
    clip, cache, model_name: str, dataset: Dataset, *, languages=None, batch_size: int
) -> list[EvalResult]:
    languages = languages or dataset.languages()
    unknown = [lang for lang in languages if lang not in dataset.languages()]
    if unknown:
        raise InvalidInputError(
            f"dataset {dataset.name!r} has no captions in {', '.join(unknown)}; it has {', '.join(dataset.languages())}"
        )
    image_emb, valid = embed_images(
        clip, dataset.read_images(), len(dataset.keys), batch_size, cache, dataset.fingerprint
    )
    if not len(valid):
        raise InvalidInputError(f"dataset {dataset.name!r}: none of its {len(dataset.keys)} images could be read")
    skipped = dict(dataset.skipped)
    if len(valid) < len(dataset.keys):
        skipped["unreadable image"] = len(dataset.keys) - len(valid)
    results = []
    for language in languages:
        texts, owners = captions_in(dataset, valid, language)
        # Images without a caption in this language are left out of its gallery, as a per-language set would.
        present = owners.unique()
        remap = torch.full((len(valid),), -1, dtype=torch.long)
        remap[present] = torch.arange(len(present))
        text_emb = embed_texts(clip, texts, batch_size, cache)
        scores = metrics.retrieval_metrics(text_emb, image_emb[present], remap[owners])
        results.append(EvalResult(dataset.name, model_name, RETRIEVAL, language, scores, skipped))
    return results


def retrieval(
    model,
    dataset,
    *,
    languages=None,
    language: str = "en",
    split: str = "test",
    batch_size: int = 64,
    device=None,
    dtype=None,
    cache_dir=None,
) -> list[EvalResult]:
    """Retrieval on ``dataset`` (a path in a supported layout), one result per caption language.
    ``language`` names the captions of a layout that does not say (webdataset, two-column TSV)."""
    from altdiffusion.eval.clips import open_clip

    data = load_dataset(dataset, task=RETRIEVAL, language=language, split=split)
    clip, cache, name = open_clip(model, device=device, dtype=dtype, cache_dir=cache_dir)
    return evaluate_retrieval(clip, cache, name, data, languages=languages, batch_size=batch_size)
