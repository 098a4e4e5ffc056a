"""The metrics, as functions of embeddings (clip_benchmark's and torchmetrics' definitions).

class embedding   normalise(mean_t normalise(text(template_t(class))))      (CLIP / clip_benchmark)
top-k accuracy    share of images whose class is among the k highest logits
mean recall/class mean over the classes present of (correct in class / images in class)
R@k               share of queries with at least one positive among the k best (CLIP papers)
mean recall (MR)  mean of R@1/5/10 in both directions (AltCLIP's Flickr30K-CN tables)
CLIP score        100 * max(cos(image, text), 0)                             (torchmetrics)
FID, KID          torchmetrics' FrechetInceptionDistance / KernelInceptionDistance on features
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def fill_template(template: str, name: str) -> str:
    """clip_benchmark's ``{c}`` or Python's ``{}`` placeholder; ``str.format`` would trip on other braces."""
    return template.replace("{c}", name) if "{c}" in template else template.replace("{}", name)


def class_embeddings(
    embed_text: Callable[[list[str]], torch.Tensor], classnames: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """(classes, dim): each class's normalised template embeddings averaged, then renormalised."""
    texts = [fill_template(t, name) for name in classnames for t in templates]
    emb = F.normalize(embed_text(texts).float(), dim=-1).view(len(classnames), len(templates), -1)
    return F.normalize(emb.mean(dim=1), dim=-1)


def topk_accuracy(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[float]:
    """Top-k accuracy for each k (a k above the number of classes counts every image right)."""
    order = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = order == target.view(-1, 1)
    return [int(hits[:, :k].any(dim=1).sum()) / len(target) for k in ks]


def mean_per_class_recall(pred: torch.Tensor, target: torch.Tensor) -> float:
    """sklearn's balanced accuracy: the mean over the classes in ``target`` of their recall."""
    classes = target.unique()
    recalls = [int((pred[target == c] == c).sum()) / int((target == c).sum()) for c in classes]
    return sum(recalls) / len(recalls)


def share(hits: torch.Tensor) -> float:
    return int(hits.sum()) / len(hits)


def recall_hits(scores: torch.Tensor, positives: torch.Tensor, k: int) -> torch.Tensor:
    """(queries,) bool: whether any positive is among each query's ``k`` best-scored items."""
    best = scores.topk(min(k, scores.shape[1]), dim=1).indices
    return positives.gather(1, best).any(dim=1)


def retrieval_metrics(
    text_emb: torch.Tensor, image_emb: torch.Tensor, text_image: torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """R@k both ways (clip_benchmark's names: ``image_retrieval`` = text->image) and their mean.
    ``text_image[i]`` is the image that text ``i`` describes; an image may have several texts."""
    scores = text_emb.float() @ image_emb.float().t()
    positives = torch.zeros_like(scores, dtype=torch.bool)
    positives[torch.arange(len(text_image)), text_image] = True
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = share(recall_hits(scores, positives, k))
        metrics[f"text_retrieval_recall@{k}"] = share(recall_hits(scores.t(), positives.t(), k))
    metrics["mean_recall"] = sum(metrics.values()) / len(metrics)
    return metrics


def clip_scores(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """Per pair (row i with row i): 100 * max(cos, 0), torchmetrics' CLIPScore before averaging."""
    cos = (F.normalize(image_emb.float(), dim=-1) * F.normalize(text_emb.float(), dim=-1)).sum(-1)
    return 100 * cos.clamp(min=0)


class _Precomputed(torch.nn.Module):
    """torchmetrics takes a feature network; ours are computed (and cached) beforehand."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid_kid(real: torch.Tensor, fake: torch.Tensor, *, kid_subsets: int = 100) -> dict[str, float]:
    """FID and KID (mean, std) of two feature sets with torchmetrics' implementations."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    features = _Precomputed(real.shape[1])
    subset = min(1000, len(real), len(fake))
    fid = FrechetInceptionDistance(feature=features, reset_real_features=False)
    kid = KernelInceptionDistance(feature=features, subsets=kid_subsets, subset_size=subset)
    for metric in (fid, kid):
        metric.update(real.double(), real=True)
        metric.update(fake.double(), real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid": float(kid_mean), "kid_std": float(kid_std)}
