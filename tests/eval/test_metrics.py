"""The metric functions against clip_benchmark's own (installed with --no-deps), sklearn's balanced
accuracy, and scipy's matrix square root for FID."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from altdiffusion.eval import metrics

zsc = pytest.importorskip("clip_benchmark.metrics.zeroshot_classification")
zsr = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")


def _clip_benchmark_accuracy(logits, target, topk=(1, 5)):
    """clip_benchmark's ``accuracy``, whose last line calls float() on a 1-element array, which NumPy 2.x
    refuses; the same computation with ``.item()`` (the function itself is tried first)."""
    try:
        return zsc.accuracy(logits, target, topk)
    except TypeError:
        pred = logits.topk(max(topk), 1, True, True)[1].t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        return [correct[:k].reshape(-1).float().sum().item() / len(target) for k in topk]


def test_topk_accuracy_and_mean_per_class_recall_equal_clip_benchmark_and_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 12, generator=g)
    target = torch.randint(0, 10, (300,), generator=g)  # classes 10 and 11 never occur
    assert metrics.topk_accuracy(logits, target, (1, 5)) == pytest.approx(
        _clip_benchmark_accuracy(logits, target), abs=1e-12
    )
    pred = logits.argmax(1)
    expected = balanced_accuracy_score(target.numpy(), pred.numpy())
    assert metrics.mean_per_class_recall(pred, target) == pytest.approx(expected, abs=1e-7)


def test_class_embeddings_equal_clip_benchmark_zero_shot_classifier():
    g = torch.Generator().manual_seed(1)
    table = torch.randn(1000, 16, generator=g)

    def tokenize(texts):  # character codes, padded: a stand-in tokenizer that returns a tensor
        return torch.tensor([[ord(ch) % 1000 for ch in t.ljust(24)[:24]] for t in texts])

    class Model:  # any deterministic text -> vector map stands in for a text tower
        def encode_text(self, tokens):
            return table[tokens].sum(1)

    def embed(texts):
        return Model().encode_text(tokenize(texts))

    names, templates = ["猫", "狗", "汽车"], ["一张{c}的照片。", "{c}的画。", "a {c}."]
    expected = zsc.zero_shot_classifier(Model(), tokenize, names, templates, "cpu", amp=False)
    ours = metrics.class_embeddings(embed, names, templates)
    torch.testing.assert_close(ours, expected.t(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("captions_per_image", [1, 5])
def test_recall_at_k_equals_clip_benchmark(captions_per_image):
    g = torch.Generator().manual_seed(captions_per_image)
    images = F.normalize(torch.randn(50, 8, generator=g), dim=-1)
    owners = torch.arange(50).repeat_interleave(captions_per_image)
    texts = F.normalize(images[owners] + 0.8 * torch.randn(len(owners), 8, generator=g), dim=-1)
    ours = metrics.retrieval_metrics(texts, images, owners)
    scores = texts @ images.t()
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(owners)), owners] = True
    for k in (1, 5, 10):
        t2i = (zsr.batchify(zsr.recall_at_k, scores, positive, 16, "cpu", k=k) > 0).float().mean().item()
        i2t = (zsr.batchify(zsr.recall_at_k, scores.T, positive.T, 16, "cpu", k=k) > 0).float().mean().item()
        assert ours[f"image_retrieval_recall@{k}"] == pytest.approx(t2i, abs=1e-7)  # theirs: a float32 mean
        assert ours[f"text_retrieval_recall@{k}"] == pytest.approx(i2t, abs=1e-7)
    assert ours["mean_recall"] == pytest.approx(np.mean([v for k, v in ours.items() if "@" in k]))
    assert 0 < ours["image_retrieval_recall@1"] < ours["image_retrieval_recall@10"] < 1


def test_clip_score_is_100_times_clamped_cosine():
    a, b = torch.randn(20, 6), torch.randn(20, 6)
    expected = 100 * torch.clamp(F.cosine_similarity(a, b, dim=-1), min=0)
    torch.testing.assert_close(metrics.clip_scores(a, b), expected, atol=1e-5, rtol=0)


def _frechet(x, y):
    from scipy import linalg

    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_equals_the_frechet_distance_and_kid_is_about_zero_within_one_distribution():
    g = torch.Generator().manual_seed(3)
    real = torch.randn(400, 6, generator=g, dtype=torch.float64)
    fake = 0.9 * torch.randn(400, 6, generator=g, dtype=torch.float64) + 0.3
    scores = metrics.fid_kid(real, fake)
    assert scores["fid"] == pytest.approx(_frechet(real.numpy(), fake.numpy()), rel=1e-6)
    assert abs(metrics.fid_kid(real, real)["fid"]) < 1e-6
    # KID is unbiased: about 0 for another sample of the same distribution (it can be below 0).
    other = metrics.fid_kid(real, torch.randn(400, 6, generator=g, dtype=torch.float64))
    assert abs(other["kid"]) < 0.05 < scores["kid"]
