"""Broken checkpoints: one clear error naming the problem, from the Python API and from the
CLI (exit status 2, one ``error:`` line on stderr, no traceback)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import altdiffusion
from altdiffusion import CheckpointError, ModelNotFoundError
from altdiffusion.mini.tokenizer import real_xlmr_tokenizer_file
from altdiffusion.models.tiny import write_tiny_altdiffusion


class Payload:
    """A pickled object that, if ever unpickled, creates a marker file (it must never be)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is _DELETE:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data, indent=2))


_DELETE = object()


def _edit_bin(path: Path, edit: Callable[[dict], dict]) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    torch.save(edit(state), path)


# Each case: the layout it starts from, how to break it, what the one message must contain.


def _missing_text_weights(f: Path):
    (f / "text_encoder" / "pytorch_model.bin").unlink()


def _missing_unet(f: Path):
    shutil.rmtree(f / "unet")


def _config_hidden_size(f: Path):
    _edit_json(f / "text_encoder" / "config.json", hidden_size=64)


def _tensor_wrong_shape(f: Path):
    def edit(state):
        state["roberta.encoder.layer.1.attention.self.query.weight"] = torch.zeros(32, 31)
        return state

    _edit_bin(f / "text_encoder" / "pytorch_model.bin", edit)


def _m18_without_pre_weights(f: Path):
    _edit_bin(
        f / "text_encoder" / "pytorch_model.bin",
        lambda s: {k: v for k, v in s.items() if not k.startswith(("pre_LN.", "transformation_pre."))},
    )


def _m18_weights_m9_config(f: Path):
    _edit_json(f / "text_encoder" / "config.json", has_pre_transformation=_DELETE)


def _truncated_safetensors(f: Path):
    path = f / "text_encoder" / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _pickled_object(f: Path):
    marker = f.parent / f"{f.name}.pwned"
    torch.save({"x": torch.zeros(1), "evil": Payload(marker)}, f / "text_encoder" / "pytorch_model.bin")


def _invalid_model_index(f: Path):
    (f / "model_index.json").write_text('{"_class_name": "AltDiffusionPipeline", "unet": ["diffusers", ')


def _altclip_wrong_model_type(f: Path):
    _edit_json(f / "config.json", model_type="clip")


def _unet_config_cross_attention(f: Path):
    _edit_json(f / "unet" / "config.json", cross_attention_dim=48)


def _unet_from_other_model(f: Path):
    # A complete, self-consistent m18 UNet (48-d cross-attention) next to an m9 text encoder (32-d).
    shutil.rmtree(f / "unet")
    shutil.copytree(f.parent.parent / "_sources" / "altdiffusion-m18" / "unet", f / "unet")


def _tokenizer_bigger_than_embedding(f: Path):
    (f / "tokenizer" / "sentencepiece.bpe.model").unlink()
    shutil.copy(real_xlmr_tokenizer_file(), f / "tokenizer" / "tokenizer.json")


def _missing_text_encoder_config(f: Path):
    (f / "text_encoder" / "config.json").unlink()


@dataclass(frozen=True)
class Case:
    name: str
    source: str
    breaker: Callable[[Path], None]
    expected: tuple[str, ...]
    error: type = CheckpointError


CASES = [
    Case(
        "missing-text-weights",
        "altdiffusion-m9",
        _missing_text_weights,
        ("no weights in", "text_encoder", "pytorch_model.bin"),
    ),
    Case("missing-unet", "altdiffusion-m9", _missing_unet, ("unet/ folder is missing",)),
    Case(
        "config-hidden-size",
        "altdiffusion-m9",
        _config_hidden_size,
        ("wrong shape", "roberta.embeddings.LayerNorm.weight", "(32,) != (64,)"),
    ),
    Case(
        "tensor-wrong-shape",
        "altdiffusion-m9",
        _tensor_wrong_shape,
        ("wrong shape", "roberta.encoder.layer.1.attention.self.query.weight", "(32, 31) != (32, 32)"),
    ),
    Case(
        "m18-without-pre-weights",
        "altdiffusion-m18",
        _m18_without_pre_weights,
        ("missing", "pre_LN.weight", "transformation_pre.weight", "has_pre_transformation"),
    ),
    Case(
        "m18-weights-m9-config",
        "altdiffusion-m18",
        _m18_weights_m9_config,
        ("unexpected", "transformation_pre.weight", "has_pre_transformation"),
    ),
    Case(
        "truncated-safetensors",
        "altdiffusion-m9-safetensors",
        _truncated_safetensors,
        ("model.safetensors", "truncated", "corrupt"),
    ),
    Case("pickled-object", "altdiffusion-m9", _pickled_object, ("pytorch_model.bin", "weights_only=True", "refused")),
    Case("invalid-model-index", "altdiffusion-m9", _invalid_model_index, ("model_index.json", "not valid JSON")),
    Case(
        "altclip-wrong-model-type",
        "altclip-m9",
        _altclip_wrong_model_type,
        ("config.json", "model_type", "'clip'", "'altclip'"),
    ),
    Case("unet-config-cross-attention", "altdiffusion-m9", _unet_config_cross_attention, ("UNet", "unet")),
    Case(
        "unet-from-other-model", "altdiffusion-m9", _unet_from_other_model, ("48-d", "32-d", "do not belong together")
    ),
    Case(
        "tokenizer-bigger-than-embedding",
        "altdiffusion-m9",
        _tokenizer_bigger_than_embedding,
        ("250002", "tokenizer", "text encoder"),
    ),
    Case(
        "missing-text-encoder-config",
        "altdiffusion-m9",
        _missing_text_encoder_config,
        ("text_encoder/config.json", "missing"),
    ),
]


@pytest.fixture(scope="module")
def broken(tiny_layouts, tmp_path_factory) -> dict[str, Path]:
    """Every case's broken folder, built once."""
    root = tmp_path_factory.mktemp("broken")
    sources = root / "_sources"
    sources.mkdir()
    for name, folder in tiny_layouts.items():
        shutil.copytree(folder, sources / name)
    write_tiny_altdiffusion(sources / "altdiffusion-m9-safetensors", "m9", text_weights="safetensors")
    out = {}
    for case in CASES:
        case_root = root / case.name
        case_root.mkdir()
        folder = case_root / "model"
        shutil.copytree(sources / case.source, folder)
        # _unet_from_other_model finds the sources two levels up.
        (case_root / "_sources").symlink_to(sources)
        case.breaker(folder)
        out[case.name] = folder
    return out


def _load(folder: Path):
    if (folder / "config.json").is_file() and not (folder / "model_index.json").exists():
        return altdiffusion.load_clip(folder)
    return altdiffusion.load_pipeline(folder)


@pytest.fixture(scope="module")
def cli_results(broken, run_cli_batch) -> dict:
    """``altdiffusion info FOLDER`` for every case, each its own process (see cli_batch.py)."""
    results = run_cli_batch([["info", str(broken[c.name])] for c in CASES])
    return {c.name: r for c, r in zip(CASES, results)}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_api_raises_one_clear_error(broken, case):
    with pytest.raises((CheckpointError, ModelNotFoundError)) as info:
        _load(broken[case.name])
    err = info.value
    assert type(err) is case.error
    message = str(err)
    for part in case.expected:
        assert part in message, f"{part!r} not in {message!r}"
    # One error, not a chain: no library exception shown as its cause or context.
    assert err.__cause__ is None
    assert err.__context__ is None or err.__suppress_context__


def test_pickled_code_never_runs(broken, cli_results):
    folder = broken["pickled-object"]
    with pytest.raises(CheckpointError):
        _load(folder)
    assert cli_results["pickled-object"].returncode == 2
    assert not (folder.parent / f"{folder.name}.pwned").exists()
    # Sanity: the payload does run when unpickled without weights_only.
    probe = folder.parent / "probe"
    probe.mkdir()
    torch.save({"evil": Payload(probe / "ran")}, probe / "evil.bin")
    torch.load(probe / "evil.bin", weights_only=False)
    assert (probe / "ran").exists()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_cli_prints_one_error_line_and_exits_2(cli_results, case):
    result = cli_results[case.name]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for part in case.expected:
        assert part in result.stderr, f"{part!r} not in {result.stderr!r}"


def test_refused_pickle_message_is_plain_text(broken):
    with pytest.raises(CheckpointError) as info:
        _load(broken["pickled-object"])
    message = str(info.value)
    assert "\x1b" not in message
    assert "Unsupported global" in message or "getattr" in message


@pytest.mark.parametrize("name", ["m18-without-pre-weights"])
def test_python_m_altdiffusion_cli_gives_the_same_error(broken, cli_results, name):
    """The real entry (`python -m altdiffusion.cli`, fresh interpreter) prints the same line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "altdiffusion.cli", "info", str(broken[name])]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == cli_results[name].stderr
    assert "Traceback" not in result.stderr


def test_intact_sources_load(broken):
    """The cases fail because of the breakage, not because the starting folders are bad."""
    sources = broken["missing-unet"].parent.parent / "_sources"
    for name in ("altdiffusion-m9", "altdiffusion-m18", "altdiffusion-m9-safetensors"):
        assert altdiffusion.load_pipeline(sources / name).encode_prompt("猫")[0].ndim == 3
    assert altdiffusion.load_clip(sources / "altclip-m9").embed_text("猫").shape == (1, 16)
