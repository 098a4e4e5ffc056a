"""The `altdiffusion` command: info, clip classify, dev tiny, and one-line errors.

Every invocation is its own process. Most run through tests/models/cli_batch.py (imports
once, forks per run: the same `main()` that `python -m altdiffusion.cli` runs); one runs
through `python -m altdiffusion.cli` in a fresh interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch
from PIL import Image

import altdiffusion
from altdiffusion.models.tiny import write_tiny_altclip, write_tiny_altdiffusion
from tests.models.cli_batch import run_cli_batch

LABELS = ["猫", "狗", "汽车"]


def _rows(stdout: str) -> dict[str, str]:
    """`altdiffusion info` prints "key<padding>  value" per line."""
    rows = {}
    for line in stdout.splitlines():
        key, _, value = line.partition("  ")
        rows[key.strip()] = value.strip()
    return rows


# The tiny folders' parameter counts and how `info` must print them: in full with thousands
# separators below 100,000, in millions with one decimal from there. The AltCLIP-m9 towers' counts
# follow by hand from models/tiny.py (hidden 32, MLP 37, 2 layers of 4 x (32x32 + 32) attention
# + 2 x 64 LayerNorm + 1,221 + 1,216 MLP = 6,789 each; vocab 269 from the trained tokenizer);
# the others are what the loaded modules count.
PARAMS = {
    "m18 text encoder": (41_962, "41,962"),
    "m18 unet": (798_084, "0.8 M"),
    "m18 vae": (658_375, "0.7 M"),
    "m18 safety checker": (6_409, "6,409"),
    # embeddings 269 x 32 + 514 x 32 positions + 32 type + 64 LayerNorm, 2 layers, pre_LN 64, transformation 1,056
    "m9 clip text tower": (39_850, "39,850"),
    # patches 3 x 8 x 8 x 32, class 32, positions 17 x 32, two LayerNorms 128, 2 layers
    "m9 clip vision tower": (20_426, "20,426"),
}


def _params(module, name: str) -> str:
    """How `info` prints ``module``'s parameter count, once the count is the expected one."""
    count, printed = PARAMS[name]
    assert sum(p.numel() for p in module.parameters()) == count, name
    return printed


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    image = root / "cat.png"
    g = torch.Generator().manual_seed(0)
    Image.fromarray((torch.rand(48, 64, 3, generator=g) * 255).to(torch.uint8).numpy()).save(image)
    not_an_image = root / "notes.png"
    not_an_image.write_text("this is not a PNG")
    return {
        "m18": write_tiny_altdiffusion(root / "ad-m18", "m18"),
        "m9": write_tiny_altdiffusion(root / "ad-m9", "m9", safety_checker=False),
        "clip": write_tiny_altclip(root / "ac-m9", "m9"),
        "image": image,
        "not_an_image": not_an_image,
        "tiny_out": root / "dev-tiny-m18",
        "tiny_clip_out": root / "dev-tiny-altclip-m2",
    }


@pytest.fixture(scope="module")
def cli(folders):
    """Every command of this file, run once, in parallel processes: name -> result."""
    f = {k: str(v) for k, v in folders.items()}
    commands = {
        "info-m18": ["info", f["m18"]],
        "info-m9-bf16": ["info", f["m9"], "--dtype", "bf16"],
        "info-clip": ["info", f["clip"]],
        "classify": ["clip", "classify", "--model", f["clip"], "--image", f["image"], "--labels", ",".join(LABELS)],
        "classify-fullwidth": [
            "clip",
            "classify",
            "--model",
            f["clip"],
            "--image",
            f["image"],
            "--labels",
            "猫，狗，汽车",
            "--top",
            "2",
        ],
        "dev-tiny": ["dev", "tiny", f["tiny_out"], "--layout", "altdiffusion-m18"],
        "dev-tiny-clip": ["dev", "tiny", f["tiny_clip_out"], "--layout", "altclip-m2"],
        "missing-image": [
            "clip",
            "classify",
            "--model",
            f["clip"],
            "--image",
            f["image"] + ".missing.jpg",
            "--labels",
            "猫,狗",
        ],
        "not-an-image": ["clip", "classify", "--model", f["clip"], "--image", f["not_an_image"], "--labels", "猫,狗"],
        "one-label": ["clip", "classify", "--model", f["clip"], "--image", f["image"], "--labels", "猫"],
        "info-fp16-cpu": ["info", f["m9"], "--device", "cpu", "--dtype", "fp16"],
        "info-cuda": ["info", f["m9"], "--device", "cuda"],
    }
    results = run_cli_batch(list(commands.values()))
    return dict(zip(commands, results))


def _ok(result):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def _one_line_error(result, *parts):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for part in parts:
        assert part in result.stderr, f"{part!r} not in {result.stderr!r}"


# ---------------------------------------------------------------------------------------- info


def test_info_on_a_diffusion_folder(cli, folders):
    rows = _rows(_ok(cli["info-m18"]))
    pipe = altdiffusion.load_pipeline(folders["m18"])
    te = pipe.text_encoder
    assert rows["family"] == "AltDiffusion (text-to-image)"
    assert rows["model"] == "ad-m18"
    assert rows["folder"] == str(folders["m18"].resolve())
    assert rows["languages"] == "unknown"  # a local folder: no language list is known
    assert rows["conditioning"] == "penultimate layer + pre_LN + transformation_pre (m18)"
    assert (
        rows["text encoder"]
        == f"XLM-R 2 layers x 32, vocab {te.config.vocab_size:,}, -> 48-d; {_params(te, 'm18 text encoder')} params"
    )
    assert rows["unet"] == f"cross-attention 48-d; {_params(pipe.unet, 'm18 unet')} params"
    assert rows["vae"] == f"4 latent channels, /2; {_params(pipe.vae, 'm18 vae')} params"
    assert rows["safety checker"] == f"{_params(pipe.safety_checker, 'm18 safety checker')} params"
    assert rows["scheduler"] == "PNDMScheduler"
    assert rows["default size"] == "64x64"
    assert rows["dtype"] == "float32"
    assert rows["device"] == "cpu"


def test_info_on_a_legacy_m9_folder_in_bf16(cli):
    rows = _rows(_ok(cli["info-m9-bf16"]))
    assert rows["conditioning"] == "last layer + transformation (m2/m9)"
    assert rows["text encoder"].startswith("XLM-R 2 layers x 32") and "-> 32-d" in rows["text encoder"]
    assert rows["safety checker"] == "none"
    assert rows["default size"] == "128x128"  # diffusers-0.8 sample_size 32 -> 64 latent, x2
    assert rows["dtype"] == "bfloat16"
    assert rows["device"] == "cpu"


def test_info_on_a_clip_folder(cli, folders):
    rows = _rows(_ok(cli["info-clip"]))
    clip = altdiffusion.load_clip(folders["clip"])
    m = clip.model
    assert rows["family"] == "AltCLIP (image-text embeddings)"
    assert rows["model"] == "ac-m9"
    assert rows["languages"] == "unknown"
    assert (
        rows["text tower"]
        == f"XLM-R 2 layers x 32, vocab {m.text_model.config.vocab_size:,}; {_params(m.text_model, 'm9 clip text tower')} params"
    )
    assert (
        rows["vision tower"]
        == f"ViT 2 layers x 32, 32 px / patch 8; {_params(m.vision_model, 'm9 clip vision tower')} params"
    )
    assert rows["embedding"] == "16-d"
    assert rows["dtype"] == "float32"
    assert rows["device"] == "cpu"


# ------------------------------------------------------------------------------- clip classify

_LINE = re.compile(r"^(?P<label>\S+)\s+(?P<pct>\d+\.\d\d)%$")


def _classify_lines(stdout: str) -> list[tuple[str, float]]:
    out = []
    for line in stdout.splitlines():
        m = _LINE.match(line.strip())
        assert m, f"unexpected line {line!r}"
        out.append((m["label"], float(m["pct"])))
    return out


def test_clip_classify_prints_each_label_with_a_percentage(cli, folders):
    lines = _classify_lines(_ok(cli["classify"]))
    assert len(lines) == 3
    assert sorted(label for label, _ in lines) == sorted(LABELS)
    assert abs(sum(p for _, p in lines) - 100.0) <= 0.02
    assert [p for _, p in lines] == sorted((p for _, p in lines), reverse=True)
    # The same numbers as the Python API.
    clip = altdiffusion.load_clip(folders["clip"])
    ranked = dict(clip.classify(Image.open(folders["image"]), LABELS))
    for label, pct in lines:
        assert abs(pct - 100 * ranked[label]) <= 0.006, label


def test_clip_classify_accepts_fullwidth_commas_and_top(cli):
    lines = _classify_lines(_ok(cli["classify-fullwidth"]))
    full = _classify_lines(cli["classify"].stdout)
    assert lines == full[:2]


def test_clip_classify_with_a_missing_image(cli, folders):
    _one_line_error(cli["missing-image"], "does not exist", str(folders["image"]) + ".missing.jpg")


def test_clip_classify_with_a_file_that_is_not_an_image(cli):
    _one_line_error(cli["not-an-image"], "not a readable image", "notes.png")


def test_clip_classify_with_one_label(cli):
    _one_line_error(cli["one-label"], "at least two labels")


def test_info_with_fp16_on_cpu(cli):
    _one_line_error(cli["info-fp16-cpu"], "not supported on cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available")
def test_info_with_cuda_unavailable(cli):
    _one_line_error(cli["info-cuda"], "CUDA is not available")


# ------------------------------------------------------------------------------------ dev tiny


def test_dev_tiny_writes_a_loadable_m18_folder(cli, folders, tmp_path):
    assert _ok(cli["dev-tiny"]).strip() == str(folders["tiny_out"])
    out = folders["tiny_out"]
    for name in (
        "model_index.json",
        "text_encoder/config.json",
        "text_encoder/pytorch_model.bin",
        "unet/config.json",
        "vae/config.json",
        "scheduler/scheduler_config.json",
        "tokenizer/sentencepiece.bpe.model",
    ):
        assert (out / name).is_file(), name
    pipe = altdiffusion.load_pipeline(out)
    assert pipe.text_encoder.head == "m18"
    cond, _ = pipe.encode_prompt("一只 cat")
    assert cond.shape == (1, 77, 48)
    # Seed 0 by default: the same weights as the Python writer's.
    reference = altdiffusion.load_pipeline(write_tiny_altdiffusion(tmp_path / "ref", "m18", seed=0))
    torch.testing.assert_close(cond, reference.encode_prompt("一只 cat")[0], atol=0, rtol=0)


def test_dev_tiny_writes_a_loadable_altclip_folder(cli, folders):
    _ok(cli["dev-tiny-clip"])
    clip = altdiffusion.load_clip(folders["tiny_clip_out"])
    assert clip.embed_text(["猫", "a cat"]).shape == (2, 16)


# --------------------------------------------------------------------------- the real entries


def test_python_m_altdiffusion_cli_classify(cli, folders):
    """`python -m altdiffusion.cli` in a fresh interpreter prints what the batch runner printed."""
    cmd = [
        sys.executable,
        "-m",
        "altdiffusion.cli",
        "clip",
        "classify",
        "--model",
        str(folders["clip"]),
        "--image",
        str(folders["image"]),
        "--labels",
        ",".join(LABELS),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == cli["classify"].stdout
