"""`altdiffusion generate` end to end, as a user runs it: a subprocess per command.

* the PNG's A1111 ``parameters`` chunk round-trips the settings, and rerunning the same
  command gives the same pixels; ``--batch 2 --out folder/`` numbers the files by seed;
* a user's mistake exits with status 2 and one ``error: ...`` line, no traceback, no file.

Every command starts a Python process (~4 s of imports), so all of them are launched together
once per module and the tests read their results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.infotext import parse_infotext

PROMPT = "一只可爱的猫，(唐装:1.2)"
NEGATIVE = "模糊"


def _command() -> list[str]:
    """The installed console script when there is one, else the module."""
    script = Path(sys.executable).with_name("altdiffusion")
    if script.is_file():
        return [str(script)]
    found = shutil.which("altdiffusion")
    return [found] if found else [sys.executable, "-m", "altdiffusion.cli"]


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    out: Path  # the folder the command may write into

    def pngs(self) -> list[Path]:
        return sorted(p for p in self.out.rglob("*") if p.is_file() and p.suffix.lower() == ".png")

    def files(self) -> list[Path]:
        return sorted(p for p in self.out.rglob("*") if p.is_file())

    def describe(self) -> str:
        return f"altdiffusion {' '.join(self.args)}\n--- rc {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    # With the (permissive) tiny safety checker: the CLI's default path runs it.
    return write_tiny_altdiffusion(tmp_path_factory.mktemp("cli-model") / "tiny-m9", "m9")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli-inputs")
    rng = np.random.default_rng(0)
    paths = {
        "init": folder / "init.png",
        "small_mask": folder / "mask32.png",
        "text_as_png": folder / "not-an-image.png",
        "missing": folder / "does-not-exist.png",
    }
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(paths["init"])
    Image.fromarray(np.full((32, 32), 255, np.uint8), "L").save(paths["small_mask"])
    paths["text_as_png"].write_text("this is not a PNG file\n")
    return paths


def _common(model: Path, out: Path, **overrides) -> list[str]:
    options = {
        "--model": str(model),
        "--steps": "2",
        "--seed": "1",
        "--width": "32",
        "--height": "32",
        "--out": str(out / "out.png"),
    }
    options.update(overrides)
    args = []
    for key, value in options.items():
        args += [key, value]
    return args + ["--no-progress"]


# name -> (command line after "generate", words the error line must mention)
def _bad_cases(model: Path, inputs: dict[str, Path], out_of) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    def case(name, *extra, **overrides):
        return ["一只猫", *_common(model, out_of(name), **overrides), *extra]

    return {
        "width-not-multiple-of-8": (case("width-not-multiple-of-8", **{"--width": "60"}), ("width", "8")),
        "steps-0": (case("steps-0", **{"--steps": "0"}), ("steps",)),
        "steps-negative": (case("steps-negative", **{"--steps": "-1"}), ("steps",)),
        "guidance-nan": (case("guidance-nan", **{"--guidance": "nan"}), ("guidance",)),
        "init-not-an-image": (
            case("init-not-an-image", "--init-image", str(inputs["text_as_png"])),
            ("init image", "not-an-image.png"),
        ),
        "init-missing": (
            case("init-missing", "--init-image", str(inputs["missing"])),
            ("init image", "does-not-exist.png"),
        ),
        "mask-size-mismatch": (
            case(
                "mask-size-mismatch",
                "--init-image",
                str(inputs["init"]),
                "--mask",
                str(inputs["small_mask"]),
                **{"--width": "64", "--height": "64"},
            ),
            ("mask",),
        ),
        "unknown-sampler": (case("unknown-sampler", **{"--sampler": "Euler z"}), ("sampler", "Euler z")),
        "jpg-output": (case("jpg-output", **{"--out": str(out_of("jpg-output") / "x.jpg")}), ("PNG",)),
        "compile-with-offload": (case("compile-with-offload", "--compile", **{"--memory": "low"}), ("--memory low",)),
        "int8-without-compile": (case("int8-without-compile", "--int8"), ("--int8", "add --compile")),
    }


@pytest.fixture(scope="module")
def runs(model, inputs, tmp_path_factory) -> dict[str, Run]:
    root = tmp_path_factory.mktemp("cli-runs")

    def out_of(name: str) -> Path:
        return root / name

    good_args = [
        "--model",
        str(model),
        "--negative",
        NEGATIVE,
        "--steps",
        "3",
        "--seed",
        "123",
        "--width",
        "64",
        "--height",
        "64",
        "--sampler",
        "Euler a",
    ]
    commands: dict[str, list[str]] = {
        "first": [PROMPT, *good_args, "--out", str(out_of("first") / "x.png"), "--no-progress"],
        "again": [PROMPT, *good_args, "--out", str(out_of("again") / "x.png"), "--no-progress"],
        "batch": [PROMPT, *good_args, "--batch", "2", "--out", str(out_of("batch") / "folder") + "/", "--no-progress"],
        "empty-prompt": ["", *_common(model, out_of("empty-prompt"))],
        "balanced": [
            PROMPT,
            *good_args,
            "--memory",
            "balanced",
            "--out",
            str(out_of("balanced") / "x.png"),
            "--no-progress",
        ],
    }
    commands.update({name: args for name, (args, _) in _bad_cases(model, inputs, out_of).items()})

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)

    def launch(item: tuple[str, list[str]]) -> tuple[str, Run]:
        name, args = item
        out_of(name).mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [*_command(), "generate", *args], capture_output=True, text=True, env=env, cwd=out_of(name), timeout=300
        )
        return name, Run(args, proc.returncode, proc.stdout, proc.stderr, out_of(name))

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        return dict(pool.map(launch, commands.items()))


def _parameters(path: Path) -> str:
    with Image.open(path) as image:
        return image.text["parameters"]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ------------------------------------------------------------------------------ round trip


def test_generate_writes_a_png_whose_infotext_round_trips(runs):
    run = runs["first"]
    assert run.returncode == 0, run.describe()
    assert "Traceback" not in run.stdout + run.stderr
    (path,) = run.pngs()
    assert path.name == "x.png"
    assert run.stdout.strip().splitlines()[-1] == str(path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (64, 64)
    prompt, negative, params = parse_infotext(_parameters(path))
    assert prompt == PROMPT
    assert negative == NEGATIVE
    assert params["Steps"] == "3"
    assert params["Sampler"] == "Euler a"
    assert params["Seed"] == "123"
    assert params["Size"] == "64x64"
    assert params["CFG scale"] == "7"  # none given: the model's default, A1111's 7 for a checkpoint without its own
    assert "seed 123" in run.stderr


def test_rerunning_the_same_command_gives_identical_pixels(runs):
    first, again = runs["first"], runs["again"]
    assert again.returncode == 0, again.describe()
    (a,), (b,) = first.pngs(), again.pngs()
    assert np.array_equal(_pixels(a), _pixels(b))
    assert _parameters(a) == _parameters(b)
    assert _pixels(a).std() > 1, "a blank (or blacked-out) image proves nothing"


def test_balanced_memory_mode_gives_the_same_pixels(runs):
    first, balanced = runs["first"], runs["balanced"]
    assert balanced.returncode == 0, balanced.describe()
    (a,), (b,) = first.pngs(), balanced.pngs()
    assert np.array_equal(_pixels(a), _pixels(b)) and _parameters(a) == _parameters(b)


def test_batch_into_a_folder_writes_numbered_pngs_with_consecutive_seeds(runs):
    run = runs["batch"]
    assert run.returncode == 0, run.describe()
    paths = run.pngs()
    assert [p.name for p in paths] == ["00000-123.png", "00001-124.png"]
    assert all(p.parent.name == "folder" for p in paths)
    seeds = [parse_infotext(_parameters(p))[2]["Seed"] for p in paths]
    assert seeds == ["123", "124"]
    for p in paths:
        prompt, negative, params = parse_infotext(_parameters(p))
        assert (prompt, negative, params["Steps"], params["Sampler"]) == (PROMPT, NEGATIVE, "3", "Euler a")
    assert not np.array_equal(_pixels(paths[0]), _pixels(paths[1]))


def test_empty_prompt_is_allowed(runs):
    run = runs["empty-prompt"]
    assert run.returncode == 0, run.describe()
    (path,) = run.pngs()
    prompt, negative, params = parse_infotext(_parameters(path))
    assert (prompt, negative) == ("", "")
    assert params["Seed"] == "1" and params["Size"] == "32x32"


# ------------------------------------------------------------------------------ user mistakes

BAD = [
    "width-not-multiple-of-8",
    "steps-0",
    "steps-negative",
    "guidance-nan",
    "init-not-an-image",
    "init-missing",
    "mask-size-mismatch",
    "unknown-sampler",
    "jpg-output",
    "compile-with-offload",
    "int8-without-compile",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_one_error_line_and_writes_nothing(runs, model, inputs, case):
    run = runs[case]
    assert run.returncode == 2, run.describe()
    output = run.stdout + run.stderr
    assert "Traceback" not in output, run.describe()
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), run.describe()
    words = _bad_cases(model, inputs, lambda name: Path(name))[case][1]
    for word in words:
        assert word.lower() in lines[-1].lower(), f"the error should mention {word!r}: {lines[-1]}"
    assert run.files() == [], f"files written: {run.files()}"


def test_every_bad_case_is_checked():
    assert set(BAD) == set(
        _bad_cases(Path("m"), dict.fromkeys(["init", "small_mask", "text_as_png", "missing"], Path("x")), Path)
    )
