"""``altdiffusion generate --prompts FILE``: parsing both line syntaxes, resuming, and splitting the
lines across two processes (torchrun, which accelerate's PartialState reads) with a tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from altdiffusion.cli import main
from altdiffusion.cli.prompt_file import parse_line, read_prompt_file
from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.infotext import parse_infotext
from tests.training import runs

PROMPTS = """一只红色的猫

--prompt "a blue" square, "white background" --negative_prompt blurry --seed 7 --steps 2 --batch_size 2
--prompt 圆形 --seed 9 --n_iter 2 --sampler_name k_euler_a --cfg_scale 4.5 --subseed 3 --subseed_strength 0.5
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_tiny_altdiffusion(tmp_path_factory.mktemp("prompts-model") / "m9", "m9", safety_checker=False)


def _generate(model: Path, prompts: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--prompts", str(prompts), "--model", str(model), "--out", f"{out}/", "--steps", "3",
            "--width", "32", "--height", "32", "--seed", "100", "--no-progress", *extra]  # fmt: skip


def test_plain_and_a1111_lines_parse_as_a1111_does():
    assert parse_line("a cat, (red:1.2)") == {"prompt": "a cat, (red:1.2)"}
    settings = parse_line('--prompt a "blue square" --negative_prompt "bad, ugly" --seed 7 --sampler_name k_euler_a')
    assert settings == {"prompt": "a blue square", "negative_prompt": "bad, ugly", "seed": 7, "sampler": "Euler a"}
    assert parse_line("--steps 20 --cfg_scale 6.5 --width 64 --height 48 --n_iter 2 --batch_size 3") == {
        "num_inference_steps": 20,
        "guidance_scale": 6.5,
        "width": 64,
        "height": 48,
        "n_iter": 2,
        "batch_size": 3,
    }
    assert parse_line("--subseed 4 --subseed_strength 0.25 --seed_resize_from_h 64 --seed_resize_from_w 32") == {
        "subseed": 4,
        "subseed_strength": 0.25,
        "seed_resize_from_h": 64,
        "seed_resize_from_w": 32,
    }


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("--prompt cat --steps many", ("line 3", "--steps", "whole number")),
        ("--prompt cat --restore_faces true", ("line 3", "--restore_faces", "unsupported")),
        ("--prompt cat --seed", ("line 3", "--seed", "needs a value")),
        ('--prompt "cat', ("line 3", "quotation")),
        ("--sampler_name Nonsense", ("line 3", "unknown sampler")),
    ],
)
def test_a_bad_line_is_one_error_naming_its_number(tmp_path, model, capsys, line, words):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"a cat\n\n{line}\n", encoding="utf-8")
    assert main(_generate(model, prompts, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert all(word in err for word in words), err
    assert not any((tmp_path / "out").glob("*.png"))


def test_a_value_the_pipeline_refuses_names_the_line(tmp_path, model, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n--prompt dog --width 33\n", encoding="utf-8")
    assert main(_generate(model, prompts, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: prompt file line 2: width must be a positive multiple of 8"), err


def test_prompt_file_runs_every_line_and_resumes(tmp_path, model, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(PROMPTS, encoding="utf-8")
    lines = read_prompt_file(prompts)
    out = tmp_path / "out"
    assert main(_generate(model, prompts, out)) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    keys = [line.key for line in lines]
    assert names == [
        f"00001-{keys[0]}-000.png",
        f"00003-{keys[1]}-000.png",
        f"00003-{keys[1]}-001.png",
        f"00004-{keys[2]}-000.png",
        f"00004-{keys[2]}-001.png",
    ]
    params = {name: parse_infotext(Image.open(out / name).text["parameters"]) for name in names}
    assert params[names[0]][0] == "一只红色的猫" and params[names[0]][2]["Seed"] == "100"
    prompt, negative, second = params[names[2]]
    assert (prompt, negative, second["Seed"], second["Steps"]) == (
        "a blue square, white background",
        "blurry",
        "8",
        "2",
    )
    third = [params[n][2] for n in names[3:]]  # n_iter 2 with a variation seed: the seed stays, the subseed counts
    assert [(p["Seed"], p["Variation seed"], p["Sampler"], p["CFG scale"]) for p in third] == [
        ("9", "3", "Euler a", "4.5"),
        ("9", "4", "Euler a", "4.5"),
    ]
    capsys.readouterr()

    written = {name: (out / name).stat().st_mtime_ns for name in names}
    (out / names[3]).unlink()
    assert main(_generate(model, prompts, out)) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out / names[3])]  # only the missing image's unit ran again
    assert "skipped 4 images" in captured.err
    assert all((out / n).stat().st_mtime_ns == t for n, t in written.items() if n != names[3])


def test_prompts_are_split_across_two_processes(tmp_path, model):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(4)), encoding="utf-8")
    out = tmp_path / "out"
    cmd = [*runs.torchrun(2), "-m", "altdiffusion.cli", *_generate(model, prompts, out, "--steps", "1")]
    env = {**runs.env(), "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.split()
    assert len(printed) == len(set(printed)) == 4  # each prompt generated once, by one of the processes
    assert sorted(Path(p).name[:5] for p in printed) == ["00001", "00002", "00003", "00004"]
