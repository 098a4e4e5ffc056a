"""The mini recipe end to end at smoke scale: every stage is a real training command."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


def env() -> dict:
    """Offline, one thread per process (tiny models; two test workers share two cores)."""
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONHASHSEED="0")


GROUNDING = ("ground-token", "ground-background", "ground-pixel")
STAGES = {
    "data",
    "teacher",
    "vae",
    "vae-decoder",
    "sd",
    "distill",
    "altclip",
    "align",
    "quality",
    *GROUNDING,
    "scratch",
}


def cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "altdiffusion.cli", *args], env=env(), timeout=timeout, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mini") / "build"
    done = cli("mini", "build", "--out", str(out), "--smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_every_stage_ran_and_was_timed(smoke):
    log = json.loads((smoke / "build.json").read_text())
    assert set(log["stages"]) == STAGES
    for name, stage in log["stages"].items():
        if name != "data":
            assert stage["cpu_s"] > 0 and stage["wall_s"] > 0, name
            assert stage["ran_on"].endswith(" CPU, 1 threads"), name  # env(): OMP_NUM_THREADS=1, no GPU in CI
    curve = log["scratch"]["curve"]
    assert curve and all(0 <= point["zh_r1"] <= 1 for point in curve)
    assert [p["steps"] for p in curve] == sorted(p["steps"] for p in curve)
    assert set(log["hashes"]) == {"altclip", "altdiffusion"}


def test_image_stages_read_the_first_samples_and_clip_stages_all(smoke):
    """The VAE and UNet stages' shards hold exactly the first ``images`` samples of the CLIP stages' data."""
    import tarfile

    from altdiffusion.mini.build import RECIPE, Build
    from altdiffusion.training.data import expand_shards

    def keys(shards):
        names = []
        for url in shards:
            with tarfile.open(url) as tar:
                names += [Path(m).stem for m in tar.getnames() if m.endswith(".png")]
        return names

    every = keys(expand_shards(str(smoke / "data/train")))
    first = keys(expand_shards(Build(out=smoke, smoke=True).image_shards(smoke / "data/train")))
    assert len(every) == RECIPE["data"]["train"] // 20 > len(first)
    assert first == every[: RECIPE["data"]["images"] // 20]


def test_rerun_keeps_finished_stages(smoke):
    before = json.loads((smoke / "build.json").read_text())
    done = cli("mini", "build", "--out", str(smoke), "--smoke")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("kept") == 11  # every training stage; the baseline is marked done
    after = json.loads((smoke / "build.json").read_text())
    assert after["hashes"] == before["hashes"]
    assert after["recipe_wall_s"] == before["recipe_wall_s"]  # the baseline is not part of the recipe's time


def test_stage_folders_have_the_published_layouts(smoke):
    assert json.loads((smoke / "teacher/model/config.json").read_text())["model_type"] == "clip"
    sd = json.loads((smoke / "sd/model/model_index.json").read_text())
    assert sd["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert json.loads((smoke / "sd/model/text_encoder/config.json").read_text())["model_type"] == "clip_text_model"
    alt = json.loads((smoke / "quality/model/model_index.json").read_text())
    assert alt["text_encoder"] == ["alt_diffusion", "RobertaSeriesModelWithTransformation"]
    text = json.loads((smoke / "quality/model/text_encoder/config.json").read_text())
    assert text["architectures"] == ["RobertaSeriesModelWithTransformation"] and text["model_type"] == "xlm-roberta"
    assert json.loads((smoke / "altclip/model/config.json").read_text())["model_type"] == "altclip"


def test_each_stage_changed_what_the_recipe_says(smoke):
    """Distillation keeps the teacher's image tower; contrastive learning keeps it frozen; the
    AltDiffusion text encoder is AltCLIP's text tower; align touches only cross-attention K/V."""
    teacher = load_file(str(smoke / "teacher/model/model.safetensors"))
    altclip = load_file(str(smoke / "altclip/model/model.safetensors"))
    for key, value in teacher.items():
        if key.startswith("vision_model."):
            assert torch.equal(altclip[key], value), key
    text = load_file(str(smoke / "quality/model/text_encoder/model.safetensors"))
    for key, value in text.items():
        assert torch.equal(altclip["text_model." + key], value), key
    sd = load_file(str(smoke / "sd/model/unet/diffusion_pytorch_model.safetensors"))
    aligned = load_file(str(smoke / "align/model/unet/diffusion_pytorch_model.safetensors"))
    changed = {k for k in sd if not torch.equal(sd[k], aligned[k])}
    assert changed and all(".attn2.to_k." in k or ".attn2.to_v." in k for k in changed)


def test_grounding_stages_follow_quality_and_make_the_output(smoke):
    """By default each ground-* stage fine-tunes the one before with its own loss weights, read
    from shards that carry each thing's region, and the last one is the build's AltDiffusion."""
    log = json.loads((smoke / "build.json").read_text())
    assert log["grounding"] is True and log["outputs"]["altdiffusion"] == str(smoke / "ground-pixel/model")
    unet = "model/unet/diffusion_pytorch_model.safetensors"
    previous = load_file(str(smoke / "quality" / unet))
    for stage in GROUNDING:
        trained = load_file(str(smoke / stage / unet))
        assert any(not torch.equal(previous[k], trained[k]) for k in previous), stage
        rows = [json.loads(line) for line in (smoke / stage / "log.jsonl").read_text().splitlines()]
        assert rows and all(row["grounded"] > 0.5 and row["token_loss"] > 0 for row in rows), stage
        assert all(("background_token_loss" in row) == (stage != "ground-token") for row in rows), stage
        previous = trained


def test_decoder_stage_keeps_the_latent_space_and_is_the_models_vae(smoke):
    """vae-decoder trains the decoder alone: the encoder and scaling factor are the vae stage's, and
    its VAE is the one SD-mini and the final AltDiffusion decode with."""
    vae = "diffusion_pytorch_model.safetensors"
    whole, decoder = (load_file(str(smoke / stage / "model" / vae)) for stage in ("vae", "vae-decoder"))
    assert all(torch.equal(whole[k], decoder[k]) for k in whole if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(whole[k], decoder[k]) for k in whole if k.startswith("decoder."))
    scaling = [
        json.loads((smoke / s / "model/config.json").read_text())["scaling_factor"] for s in ("vae", "vae-decoder")
    ]
    assert scaling[0] == scaling[1]
    for model in ("sd", "ground-pixel"):
        shipped = load_file(str(smoke / model / "model/vae" / vae))
        assert all(torch.equal(shipped[k], decoder[k].to(shipped[k].dtype)) for k in decoder), model


def test_vae_scaling_factor_gives_unit_variance_latents(smoke):
    config = json.loads((smoke / "vae/model/config.json").read_text())
    report = json.loads((smoke / "vae/model/data_report.json").read_text())
    assert config["scaling_factor"] == pytest.approx(1 / report["latent_std"], rel=1e-3)
    assert config["scaling_factor"] != 1.0


def test_sd_mini_runs_through_our_pipeline(smoke, tmp_path):
    """A Stable Diffusion 1.x folder (CLIP text tower) generates and round-trips through save_pretrained."""
    from altdiffusion.pipelines.alt_diffusion import load_pipeline

    pipe = load_pipeline(smoke / "sd/model", device="cpu", dtype="fp32", safety_checker=False)
    assert pipe.text_encoder.head == "sd"
    first = pipe(
        "a large red circle", num_inference_steps=3, height=64, width=64, seed=3, progress=False, output_type="np"
    )
    pipe.save_pretrained(tmp_path / "copy")
    again = load_pipeline(tmp_path / "copy", device="cpu", dtype="fp32", safety_checker=False)
    second = again(
        "a large red circle", num_inference_steps=3, height=64, width=64, seed=3, progress=False, output_type="np"
    )
    assert first.shape == (1, 64, 64, 3)
    assert abs(first - second).max() == 0


def test_training_is_deterministic(smoke, tmp_path):
    """The same stage twice from the same seed gives bit-identical weights."""
    args = [
        "train",
        "clip-contrastive",
        "--model",
        str(smoke / "init/teacher"),
        "--shards",
        str(smoke / "data/train"),
        "--train-vision",
        "--languages",
        "en",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--seed",
        "5",
        "--no-progress",
        "--no-tensorboard",
    ]
    for run in ("a", "b"):
        done = cli(*args, "--output-dir", str(tmp_path / run))
        assert done.returncode == 0, done.stderr[-2000:]
    a = load_file(str(tmp_path / "a/model/model.safetensors"))
    b = load_file(str(tmp_path / "b/model/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    init = load_file(str(smoke / "init/teacher/model.safetensors"))
    assert any(not torch.equal(a[k], init[k]) for k in a)  # and it did train


def test_report_writes_json_markdown_and_grid(smoke, tmp_path):
    from PIL import Image

    out = tmp_path / "report"
    done = cli(
        "mini",
        "report",
        "--clip",
        str(smoke / "altclip/model"),
        "--model",
        str(smoke / "quality/model"),
        "--build-log",
        str(smoke / "build.json"),
        "--scenes",
        "2",
        "--seeds",
        "1",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert list(report["languages"]) == ["en", "zh", "es", "fr", "ru", "ja", "ko", "ar", "it"]
    for row in report["languages"].values():
        assert set(row) == {
            "zero_shot_colour",
            "zero_shot_shape",
            "retrieval_r1",
            "generation_seen",
            "generation_held_out",
            "generation_two_things",
            "consistency_with_en",
        }
        assert all(0 <= v <= 1 for v in row.values())
    assert report["languages"]["en"]["consistency_with_en"] == 1.0
    assert report["compute"]["altclip_cpu_s"] > 0 and "target_zh_r1" in report["compute"]
    for lang, row in report["two_things"].items():  # two-thing accuracy per relation, wrong attributes
        assert row["n"] == 1 and set(row["by_relation"]) == {"left_of", "above"}
        assert (
            sum(v for v in row["by_relation"].values() if v is not None)
            == report["languages"][lang]["generation_two_things"]
        )
        assert set(row["wrong"]) >= {"colour", "shape", "size", "relation", "count", "background"}
        assert row["template_1"] in (0.0, 1.0)  # the same scene, captioned the other way
    table = (out / "report.md").read_text()
    assert table.count("\n| ") == 9 + 10 and table.strip() in done.stdout  # both tables' nine rows, printed too
    assert "| language | left of % | above % | template 1 % | wrong background |" in table
    assert Image.open(out / "samples.png").size == (28 + 2 * 64, 9 * 64)
    assert Image.open(out / "samples-two.png").size == (28 + 1 * 64, 9 * 64)
    assert Image.open(out / "scratch-curve.png").size == (640, 400)


def test_a_short_baseline_continues_with_more_segments(smoke):
    """The from-scratch baseline resumes from its last checkpoint when asked for more segments,
    and its CPU seconds keep adding up (runs last: it extends the module's build). The smoke
    baseline often reaches its weak target, so the log is set to a target it cannot reach."""
    log = json.loads((smoke / "build.json").read_text())
    log["scratch"]["target_zh_r1"] = 1.01
    log["scratch"].pop("reached", None)
    (smoke / "build.json").write_text(json.dumps(log))
    steps = [p["steps"] for p in log["scratch"]["curve"]]
    more = len(steps) + 1
    done = cli("mini", "build", "--out", str(smoke), "--smoke", "--scratch-segments", str(more))
    assert done.returncode == 0, done.stderr[-2000:]
    after = json.loads((smoke / "build.json").read_text())
    assert [p["steps"] for p in after["scratch"]["curve"]] == steps + [steps[0] * more]
    assert f"at step {steps[-1]}" in done.stdout + done.stderr
    assert after["stages"]["scratch"]["cpu_s"] > log["stages"]["scratch"]["cpu_s"]
    assert after["total_wall_s"] > log["total_wall_s"]
    assert len(after["invocation_wall_s"]) == len(log["invocation_wall_s"]) + 1
    assert after["hashes"] == log["hashes"] and after["scratch"]["done"] and not after["scratch"].get("reached")
    again = cli("mini", "build", "--out", str(smoke), "--smoke", "--scratch-segments", str(more))
    assert "scratch:" not in again.stdout  # asked for no more than it has: nothing runs
    # Without its checkpoint the baseline cannot continue honestly: one clear message, log intact.
    # The weights' hashes are written before the baseline starts, so a baseline that stops
    # part-way (here: fails) still leaves them recorded; they were dropped to see them rewritten.
    shutil.rmtree(smoke / "scratch" / "checkpoints")
    (smoke / "build.json").write_text(json.dumps({k: v for k, v in after.items() if k not in ("hashes", "outputs")}))
    failed = cli("mini", "build", "--out", str(smoke), "--smoke", "--scratch-segments", str(more + 1))
    assert failed.returncode != 0 and "no checkpoint" in failed.stderr and "Traceback" not in failed.stderr
    final = json.loads((smoke / "build.json").read_text())
    assert final["scratch"] == after["scratch"] and final["hashes"] == after["hashes"]
    # The failed invocation's wall time is counted up to its last save, not lost with it.
    assert final["invocation_wall_s"][:-1] == after["invocation_wall_s"]
    assert final["total_wall_s"] == pytest.approx(sum(final["invocation_wall_s"]), abs=0.2)
    assert not list(smoke.glob(".build.json.*"))  # no temporary file of the log left behind


def test_a_plateaued_baseline_stops_unless_more_segments_are_asked_for(tmp_path):
    """By default the baseline ends at a plateau; an explicit --scratch-segments carries it on
    (here it then needs the checkpoint this folder lacks, and says so before training)."""
    from altdiffusion.errors import AltDiffusionError
    from altdiffusion.mini.build import Build

    curve = [{"steps": 500 * (k + 1), "cpu_s": 400.0 * (k + 1), "zh_r1": 0.8} for k in range(8)]
    record = {"target_zh_r1": 0.975, "curve": curve, "plateaued": True, "done": True}
    Build(out=tmp_path, log={"scratch": dict(record)}).scratch_baseline(tmp_path, tmp_path, tmp_path, tmp_path)
    assert not (tmp_path / "build.json").exists()  # nothing ran, nothing rewritten
    with pytest.raises(AltDiffusionError, match="no checkpoint"):
        Build(out=tmp_path, scratch_segments=9, log={"scratch": dict(record)}).scratch_baseline(
            tmp_path, tmp_path, tmp_path, tmp_path
        )
