"""``eval t2i``: generate a prompt set, then per language

clip_score            mean over images of 100 * max(cos(image, its prompt), 0)   (torchmetrics' CLIPScore)
fid, kid              against a reference image folder, Inception-v3 pool features (torch-fidelity's network,
                      through torchmetrics), or fid_clip, kid_clip with the CLIP's image embeddings
consistency_with_en   mean cos(image in X, English image of the same scene and seed), CLIP image embeddings
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from altdiffusion.devices import select_device, select_dtype
from altdiffusion.errors import InvalidInputError
from altdiffusion.eval import metrics
from altdiffusion.eval.embeddings import EmbeddingCache, embed_images, embed_texts
from altdiffusion.eval.generation import Job, generate, missing, plan, process_state, read_prompts, record_settings
from altdiffusion.eval.results import EvalResult

TASK = "text_to_image"
# The CLIP that judges each published AltDiffusion: the AltCLIP its text encoder came from.
JUDGES = {
    "mini": "mini",
    "BAAI/AltDiffusion": "BAAI/AltCLIP",
    "BAAI/AltDiffusion-m9": "BAAI/AltCLIP-m9",
    "BAAI/AltDiffusion-m18": "BAAI/AltCLIP-m18",
}
FID_FEATURES = ("inception", "clip")


def judge_for(model: str) -> str:
    if str(model) not in JUDGES:
        raise InvalidInputError(
            f"name the CLIP that scores {model}'s images with --clip (e.g. --clip BAAI/AltCLIP-m18)"
        )
    return JUDGES[str(model)]


def image_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
    if not files:
        raise InvalidInputError(f"reference folder {str(folder)!r} has no PNG/JPEG/WebP images")
    return files


def clip_features(clip, paths: list[Path], batch_size: int, cache: EmbeddingCache) -> torch.Tensor:
    from altdiffusion.eval.datasets import fingerprint

    images = (p.read_bytes() for p in paths)
    emb, valid = embed_images(clip, images, len(paths), batch_size, cache, fingerprint(paths, "t2i"))
    if len(valid) < len(paths):
        bad = sorted(set(range(len(paths))) - set(valid.tolist()))
        raise InvalidInputError(f"{len(bad)} image(s) cannot be read, e.g. {str(paths[bad[0]])!r}")
    return emb


@dataclass(frozen=True)
class FidReference:
    """The reference images' features, and how to compute the same features of generated images."""

    kind: str  # "inception" or "clip"
    real: torch.Tensor
    extract: Callable[[list[Path]], torch.Tensor] | None  # None: the CLIP's image embeddings

    def scores(self, paths: list[Path], clip_emb: torch.Tensor) -> dict[str, float]:
        fake = clip_emb if self.extract is None else self.extract(paths)
        suffix = "_clip" if self.kind == "clip" else ""
        values = metrics.fid_kid(self.real, fake)
        return {k.replace("fid", f"fid{suffix}").replace("kid", f"kid{suffix}"): v for k, v in values.items()}


def language_metrics(clip, jobs: list[Job], fid: FidReference | None, batch_size: int, cache) -> dict[str, float]:
    """CLIP score and (with a reference) FID/KID for one language's images."""
    image_emb = clip_features(clip, [j.path for j in jobs], batch_size, cache)
    text_emb = embed_texts(clip, [j.prompt for j in jobs], batch_size, cache)
    scores = {"clip_score": float(metrics.clip_scores(image_emb, text_emb).mean())}
    if fid is not None:
        scores.update(fid.scores([j.path for j in jobs], image_emb))
    return scores


def consistency(clip, jobs: list[Job], batch_size: int, cache) -> dict[str, float]:
    """Per language: mean cosine between its images and the English image of the same scene and seed."""
    english = {(j.scene, j.seed): j.path for j in jobs if j.language == "en"}
    out = {}
    for language in dict.fromkeys(j.language for j in jobs if j.language != "en"):
        pairs = [
            (english[(j.scene, j.seed)], j.path)
            for j in jobs
            if j.language == language and (j.scene, j.seed) in english
        ]
        if pairs:
            a = clip_features(clip, [p for p, _ in pairs], batch_size, cache)
            b = clip_features(clip, [q for _, q in pairs], batch_size, cache)
            out[language] = float((a * b).sum(-1).mean())
    return out


def reference_features(clip, reference, kind: str, batch_size: int, cache) -> FidReference | None:
    from altdiffusion.eval.inception import inception_features

    if kind not in FID_FEATURES:
        raise InvalidInputError(f"--fid-features must be one of {', '.join(FID_FEATURES)}, not {kind!r}")
    if reference is None:
        return None
    paths = image_files(reference)
    if kind == "clip":
        return FidReference(kind, clip_features(clip, paths, batch_size, cache), None)
    extract = inception_features(batch_size)
    return FidReference(kind, extract(paths), extract)


def t2i(
    model,
    prompts,
    *,
    out,
    clip=None,
    reference=None,
    languages=None,
    language: str = "en",
    samples: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    fid_features: str = "inception",
    generation: dict | None = None,
    device=None,
    dtype=None,
    cache_dir=None,
) -> list[EvalResult]:
    """Generate ``prompts`` with AltDiffusion ``model`` into ``out`` (resumable) and score them per language.
    ``generation``: pipeline settings (num_inference_steps, guidance_scale, width, height, sampler)."""
    from altdiffusion.eval.clips import open_clip
    from altdiffusion.pipelines.alt_diffusion import load_pipeline

    out = Path(out)
    jobs = plan(read_prompts(prompts, language), out, languages=languages, samples=samples, seed=seed)
    state = process_state(device)
    if state.is_main_process:
        record_settings(out, {"model": str(model), "seed": seed, "samples": samples, **(generation or {})})
    todo = missing(jobs)
    state.wait_for_everyone()
    if todo:
        place = select_device(device or state.device)
        # select_dtype, not the generation default: a benchmark's figures must not depend on the CPU's bf16
        pipe = load_pipeline(model, device=place, dtype=select_dtype(place, dtype), safety_checker=False)
        generate(pipe, todo, state=state, batch_size=batch_size, settings=generation or {}, total=len(jobs))
        del pipe
    if not state.is_main_process:
        return []
    judge, cache, _ = open_clip(clip or judge_for(model), device=device, dtype=dtype, cache_dir=cache_dir)
    fid = reference_features(judge, reference, fid_features, batch_size, cache)
    agree = consistency(judge, jobs, batch_size, cache)
    results = []
    for lang in dict.fromkeys(j.language for j in jobs):
        mine = [j for j in jobs if j.language == lang]
        scores = language_metrics(judge, mine, fid, batch_size, cache)
        if lang in agree:
            scores["consistency_with_en"] = agree[lang]
        results.append(EvalResult(Path(prompts).stem, str(model), TASK, lang, scores))
    return results
