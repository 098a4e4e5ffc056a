"""Model names -> folders: hub ids through the Hugging Face cache (offline), "mini", local paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import altdiffusion
from altdiffusion import CheckpointError, ModelNotFoundError
from altdiffusion.hub import KNOWN_CHECKPOINTS, M9_LANGUAGES, bundled_model_dir, resolve_model
from altdiffusion.models.tiny import write_tiny_altclip, write_tiny_altdiffusion
from tests.models.cli_batch import run_cli_batch

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _offline_env(hf_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub"))
    return env


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def hand_made_cache(tmp_path_factory) -> Path:
    """An HF_HOME whose hub cache holds BAAI/AltDiffusion-m9 and BAAI/AltCLIP-m18 as
    `hf download` leaves them: models--owner--name/{refs/main, snapshots/<commit>/...}."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    for repo_id, writer, variant in (
        ("BAAI/AltDiffusion-m9", write_tiny_altdiffusion, "m9"),
        ("BAAI/AltCLIP-m18", write_tiny_altclip, "m18"),
    ):
        repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
        writer(repo / "snapshots" / COMMIT, variant)
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(COMMIT)
    return hf_home


@pytest.fixture(scope="module")
def cli_with_cache(hand_made_cache) -> dict:
    """`altdiffusion info REPO_ID` in fresh processes whose environment points at the cache."""
    ids = ["BAAI/AltDiffusion-m9", "BAAI/AltCLIP-m18", "BAAI/AltDiffusion-m18"]
    results = run_cli_batch([["info", i] for i in ids], env=_offline_env(hand_made_cache), clean_env=True)
    return dict(zip(ids, results))


@pytest.fixture
def use_cache(monkeypatch):
    """Point this process's huggingface_hub at a cache folder, offline."""
    from huggingface_hub import constants

    def use(hub_cache: Path) -> None:
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    return use


# ------------------------------------------------------------------------------ hub ids, offline


def test_missing_hub_id_offline_in_a_fresh_process(tmp_path):
    """A clean interpreter with an empty HF_HOME: the error says where it looked and what to run."""
    env = _offline_env(tmp_path / "empty_hf_home")
    code = (
        "from altdiffusion import ModelNotFoundError\n"
        "from altdiffusion.hub import resolve_model\n"
        "try:\n"
        "    resolve_model('BAAI/AltCLIP')\n"
        "except ModelNotFoundError as err:\n"
        "    print('ModelNotFoundError:', err)\n"
        "else:\n"
        "    print('RESOLVED')\n"
    )
    result = _python(code, env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("ModelNotFoundError:"), out
    assert "not in the Hugging Face cache" in out
    assert "hf download BAAI/AltCLIP" in out
    assert str(tmp_path / "empty_hf_home" / "hub") in out
    assert "HF_HUB_OFFLINE=1" in out


def test_missing_hub_id_from_the_cli(cli_with_cache):
    result = cli_with_cache["BAAI/AltDiffusion-m18"]  # not in the hand-made cache
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "not in the Hugging Face cache" in result.stderr
    assert "hf download BAAI/AltDiffusion-m18" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("repo_id", ["BAAI/AltCLIP", "BAAI/AltDiffusion-m9", "someone/not-a-model"])
def test_missing_hub_id_in_process(tmp_path, use_cache, repo_id):
    use_cache(tmp_path / "hub")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(repo_id)
    message = str(info.value)
    assert "not in the Hugging Face cache" in message
    assert f"hf download {repo_id}" in message
    assert str(tmp_path / "hub") in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_public_loaders_raise_model_not_found_for_missing_hub_ids(tmp_path, use_cache):
    use_cache(tmp_path / "hub")
    with pytest.raises(ModelNotFoundError, match="hf download BAAI/AltCLIP-m9"):
        altdiffusion.load_clip("BAAI/AltCLIP-m9")
    with pytest.raises(ModelNotFoundError, match="hf download BAAI/AltDiffusion"):
        altdiffusion.load_pipeline("BAAI/AltDiffusion")


def test_hub_id_in_a_hand_made_cache_resolves_offline(hand_made_cache, use_cache):
    use_cache(hand_made_cache / "hub")
    folder = resolve_model("BAAI/AltDiffusion-m9")
    assert folder == hand_made_cache / "hub" / "models--BAAI--AltDiffusion-m9" / "snapshots" / COMMIT
    assert (folder / "model_index.json").is_file()


def test_load_pipeline_by_hub_id_from_the_cache(hand_made_cache, use_cache):
    use_cache(hand_made_cache / "hub")
    pipe = altdiffusion.load_pipeline("BAAI/AltDiffusion-m9")
    assert pipe.languages == M9_LANGUAGES == ("en", "zh", "es", "fr", "ru", "ja", "ko", "ar", "it")
    assert pipe.name == "AltDiffusion-m9"
    assert pipe.folder == hand_made_cache / "hub" / "models--BAAI--AltDiffusion-m9" / "snapshots" / COMMIT
    assert pipe.encode_prompt("一只猫")[0].shape == (1, 77, 32)


def test_load_clip_by_hub_id_from_the_cache(hand_made_cache, use_cache):
    use_cache(hand_made_cache / "hub")
    clip = altdiffusion.load_clip("BAAI/AltCLIP-m18")
    assert clip.name == "AltCLIP-m18"
    assert clip.languages == KNOWN_CHECKPOINTS["BAAI/AltCLIP-m18"].languages
    assert len(clip.languages) == 18
    assert clip.embed_text(["猫", "a cat"]).shape == (2, 24)


def _rows(stdout: str) -> dict[str, str]:
    """`altdiffusion info` output: "key<spaces>  value" per line."""
    rows = {}
    for line in stdout.splitlines():
        key, _, value = line.partition("  ")
        rows[key.strip()] = value.strip()
    return rows


def test_hub_id_from_the_cache_in_a_fresh_process(cli_with_cache, hand_made_cache):
    """Through the environment variables alone (HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE), as a user sets them."""
    result = cli_with_cache["BAAI/AltDiffusion-m9"]
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert rows["family"] == "AltDiffusion (text-to-image)"
    assert rows["model"] == "AltDiffusion-m9"
    assert rows["languages"] == "en, zh, es, fr, ru, ja, ko, ar, it"
    assert rows["folder"] == str(hand_made_cache / "hub" / "models--BAAI--AltDiffusion-m9" / "snapshots" / COMMIT)

    result = cli_with_cache["BAAI/AltCLIP-m18"]
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert rows["family"] == "AltCLIP (image-text embeddings)"
    assert rows["model"] == "AltCLIP-m18"
    assert rows["languages"].split(", ") == list(KNOWN_CHECKPOINTS["BAAI/AltCLIP-m18"].languages)
    assert rows["embedding"] == "24-d"


# ---------------------------------------------------------------------------------- "mini"


@pytest.mark.parametrize("kind", ["diffusion", "clip"])
def test_mini_is_clear_when_absent_and_loads_when_present(kind):
    folder = bundled_model_dir(kind)
    marker = folder / ("model_index.json" if kind == "diffusion" else "config.json")
    if marker.is_file():
        if kind == "diffusion":
            pipe = altdiffusion.load_pipeline("mini")
            assert pipe.encode_prompt("一只猫")[0].ndim == 3
        else:
            clip = altdiffusion.load_clip("mini")
            assert clip.embed_text(["猫", "a cat"]).shape[0] == 2
        assert resolve_model("mini", kind=kind) == folder
    else:
        loader = altdiffusion.load_pipeline if kind == "diffusion" else altdiffusion.load_clip
        with pytest.raises(ModelNotFoundError) as info:
            loader("mini")
        message = str(info.value)
        assert "bundled mini model" in message
        assert "not in this installation" in message
        assert str(folder) in message


# ------------------------------------------------------------------------------ local paths


def test_a_file_is_a_single_file_checkpoint_or_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\0" * 16)
    assert resolve_model(path) == path.resolve()  # A1111's single-file layout: models/single_file.py
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        altdiffusion.load_pipeline(str(path))
    with pytest.raises(ModelNotFoundError, match="is a file; an AltCLIP model is a folder"):
        altdiffusion.load_clip(path)
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(ModelNotFoundError, match=r"neither a model folder .* nor a single-file checkpoint"):
        resolve_model(other)


@pytest.mark.parametrize(
    "name",
    ["{tmp}/no-such-model", "./no-such-model", "models/deep/no-such-model", "~/no-such-model-here", "no such model"],
)
def test_missing_local_path_that_is_not_a_hub_id(tmp_path, name):
    name = name.format(tmp=tmp_path)
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model(name)
    message = str(info.value)
    assert "no folder" in message and "not a hub id" in message
    assert "BAAI/AltDiffusion-m9" in message and "'mini'" in message  # says what would work


def test_existing_local_folder_resolves_to_itself(tmp_path, monkeypatch):
    folder = write_tiny_altclip(tmp_path / "BAAI" / "AltCLIP", "m2")
    monkeypatch.chdir(tmp_path)
    # A relative path that looks like a hub id but exists locally wins over the hub.
    assert resolve_model("BAAI/AltCLIP") == folder.resolve()
    assert resolve_model(Path("BAAI/AltCLIP")) == folder.resolve()
