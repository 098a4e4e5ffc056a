"""``generate``'s variation-seed, RNG and hires-fix flags, run in-process on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from altdiffusion.cli import main
from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.infotext import parse_infotext


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_tiny_altdiffusion(tmp_path_factory.mktemp("options-model") / "m9", "m9", safety_checker=False)


def _generate(model: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "一只猫", "--model", str(model), "--out", str(out), "--steps", "2", "--seed", "5",
            "--width", "32", "--height", "32", "--no-progress", *extra]  # fmt: skip


def test_hires_and_variation_flags_reach_the_image_and_its_infotext(tmp_path, model):
    out = tmp_path / "cat.png"
    extra = ["--hires", "--hr-resize", "48x40", "--hr-upscaler", "Lanczos", "--hr-steps", "1",
             "--hr-denoising-strength", "0.5", "--subseed", "9", "--subseed-strength", "0.4",
             "--seed-resize-from", "24x16", "--rng", "CPU"]  # fmt: skip
    assert main(_generate(model, out, *extra)) == 0
    image = Image.open(out)
    assert image.size == (48, 40)
    params = parse_infotext(image.text["parameters"])[2]
    assert {key: params[key] for key in ("Size", "Hires resize", "Hires upscaler", "Hires steps")} == {
        "Size": "32x32",
        "Hires resize": "48x40",
        "Hires upscaler": "Lanczos",
        "Hires steps": "1",
    }
    assert (params["Denoising strength"], params["Variation seed"], params["Variation seed strength"]) == (
        "0.5",
        "9",
        "0.4",
    )
    assert params["Seed resize from"] == "24x16" and params["RNG"] == "CPU"


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--hr-scale", "2"], "--hires"),
        (["--hires", "--hr-upscaler", "SwinIR"], "unknown hires upscaler"),
        (["--subseed-strength", "3"], "subseed_strength"),
        (["--hires", "--init-image", "{init}"], "text-to-image"),
    ],
)
def test_bad_flags_are_one_error_line(tmp_path, model, capsys, extra, words):
    Image.new("RGB", (32, 32)).save(tmp_path / "init.png")
    extra = [word.format(init=tmp_path / "init.png") for word in extra]
    assert main(_generate(model, tmp_path / "x.png", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "x.png").exists()
