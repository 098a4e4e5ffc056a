"""``eval t2i`` on AltDiffusion-mini: resumable generation, CLIP score and consistency equal a direct
computation with transformers' AltCLIPModel, FID of a folder against itself is ~0 and grows with noise."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from altdiffusion.eval import metrics, t2i
from altdiffusion.eval.embeddings import EmbeddingCache
from altdiffusion.eval.generation import read_prompts
from altdiffusion.eval.t2i import clip_features
from altdiffusion.mini import world
from tests.eval.reference import image_features, text_features

SETTINGS = {"num_inference_steps": 2}


def _run(mini_data, out, cache_dir, **kw):
    return t2i(
        "mini",
        mini_data / "t2i" / "prompts.jsonl",
        out=out,
        reference=mini_data / "t2i" / "reference",
        languages=["en", "zh"],
        fid_features="clip",
        generation=SETTINGS,
        device="cpu",
        cache_dir=cache_dir,
        **kw,
    )


def test_t2i_scores_equal_transformers_and_resume_regenerates_nothing(
    mini_data, reference_altclip, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    results = _run(mini_data, out, tmp_path / "cache", batch_size=2)
    images = {lang: sorted((out / "images" / lang).glob("*.png")) for lang in ("en", "zh")}
    assert [len(v) for v in images.values()] == [3, 3]
    by_lang = {r.language: r for r in results}
    assert set(by_lang["en"].metrics) == {"clip_score", "fid_clip", "kid_clip", "kid_clip_std"}
    assert set(by_lang["zh"].metrics) == {"clip_score", "fid_clip", "kid_clip", "kid_clip_std", "consistency_with_en"}

    prompts = dict(read_prompts(mini_data / "t2i" / "prompts.jsonl"))
    for lang, paths in images.items():
        feats = image_features(reference_altclip, paths)
        texts = text_features(reference_altclip, [prompts[p.stem.rsplit("-", 1)[0]][lang] for p in paths])
        expected = (100 * (feats * texts).sum(-1).clamp(min=0)).mean().item()
        assert by_lang[lang].metrics["clip_score"] == pytest.approx(expected, abs=1e-4)
    agree = (image_features(reference_altclip, images["en"]) * image_features(reference_altclip, images["zh"])).sum(-1)
    assert by_lang["zh"].metrics["consistency_with_en"] == pytest.approx(agree.mean().item(), abs=1e-6)

    # Resume: one image lost; only it is made again, alone (batch of 1), and it is the same image.
    lost = images["zh"][1]
    before = np.asarray(Image.open(lost)).astype(int)
    stamps = {p: p.stat().st_mtime_ns for ps in images.values() for p in ps if p != lost}
    lost.unlink()
    again = _run(mini_data, out, tmp_path / "cache", batch_size=2)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # Same seed, batched differently: equal up to float rounding (another seed would differ everywhere).
    assert np.abs(np.asarray(Image.open(lost)).astype(int) - before).mean() < 0.5
    # ... so its score moves by rounding too (by 1.3e-4 of 48.7 with the bundled weights of 2026-12-07).
    assert [r.metrics["clip_score"] for r in again] == pytest.approx(
        [r.metrics["clip_score"] for r in results], abs=1e-3
    )

    # Other settings on the same folder would mix seeds: refused, naming what changed.
    from altdiffusion.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"other settings \(seed 0 -> 7\)"):
        _run(mini_data, out, tmp_path / "cache", batch_size=2, seed=7)

    # Nothing missing: the diffusion model is not even loaded.
    import altdiffusion.pipelines.alt_diffusion as pipelines

    monkeypatch.setattr(pipelines, "load_pipeline", lambda *a, **k: pytest.fail("loaded the pipeline"))
    assert [r.language for r in _run(mini_data, out, tmp_path / "cache", batch_size=2)] == ["en", "zh"]


def test_fid_of_a_folder_against_itself_is_zero_and_grows_with_noise(mini_clip, tmp_path):
    scenes = world.scenes_for_eval("seen", 48, 123, 1)
    clean = [np.asarray(world.render(s, random.Random(i))).astype(np.float32) for i, s in enumerate(scenes)]
    cache = EmbeddingCache(None, "")
    fids = []
    for sigma in (0, 20, 60):
        folder = tmp_path / f"noise-{sigma}"
        folder.mkdir()
        rng = np.random.default_rng(sigma)
        for i, pixels in enumerate(clean):
            noisy = np.clip(pixels + sigma * rng.standard_normal(pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / f"{i:03d}.png")
        features = clip_features(mini_clip, sorted(folder.glob("*.png")), 16, cache)
        if sigma == 0:
            real = features
        fids.append(metrics.fid_kid(real, features)["fid"])
    assert abs(fids[0]) < 1e-6
    assert fids[0] < fids[1] < fids[2]
    assert torch.isfinite(torch.tensor(fids)).all()


def test_inception_fid_without_its_network_is_one_clear_error_not_a_fallback():
    from altdiffusion.errors import InvalidInputError
    from altdiffusion.eval.inception import inception_features, weights_path

    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(InvalidInputError, match=r"needs torch-fidelity .* or use --fid-features clip"):
            inception_features(8)
        return
    if not weights_path().is_file():
        with pytest.raises(InvalidInputError, match=r"weights are not at .* or use --fid-features clip"):
            inception_features(8)


def test_two_processes_share_the_images_and_only_the_first_writes_results(mini_data, tmp_path):
    import subprocess

    from tests.training import runs

    prompts = tmp_path / "two.jsonl"
    prompts.write_text("".join((mini_data / "t2i" / "prompts.jsonl").read_text("utf-8").splitlines(True)[:2]), "utf-8")
    args = ["-m", "altdiffusion.cli", "eval", "t2i", "--prompts", str(prompts), "--out", str(tmp_path / "run")]
    args += ["--languages", "en,zh", "--steps", "2", "--device", "cpu", "--no-cache", "--results", str(tmp_path / "r")]
    done = subprocess.run(runs.torchrun(2) + args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "process 1/2: generated 2 image(s)" in done.stdout and "process 2/2: generated 2 image(s)" in done.stdout
    assert len(list((tmp_path / "run" / "images").rglob("*.png"))) == 4
    assert sorted(p.name.split("_")[2] for p in (tmp_path / "r").glob("*.json")) == ["en", "zh"]
