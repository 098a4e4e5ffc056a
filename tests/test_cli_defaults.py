"""``altdiffusion generate`` runs a model at its own defaults and says when a size is far from native;
the CLI keeps huggingface_hub's download bars on while it quiets the libraries' log chatter."""

from __future__ import annotations

import os
import subprocess
import sys

from PIL import Image

from altdiffusion.mini.checker import passes
from altdiffusion.mini.examples import example_prompts, example_scene


def _generate(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "altdiffusion.cli", "generate", *args, "--no-progress"]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_mini_runs_at_its_own_size_cfg_sampler_and_steps(tmp_path):
    lang, prompt = example_prompts()[0]
    done = _generate(prompt, "--model", "mini", "--seed", "100", "--batch", "2", "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning" not in done.stderr
    images = [Image.open(p) for p in sorted(tmp_path.glob("*.png"))]
    assert [im.size for im in images] == [(64, 64)] * 2
    assert "Steps: 20, Sampler: Euler a, CFG scale: 3, Seed: 100, Size: 64x64" in images[0].text["parameters"]
    assert all(passes(im.convert("RGB"), example_scene(lang)) for im in images)


def test_a_size_far_from_native_is_warned_about_naming_the_native_size(tmp_path):
    args = ("a red circle", "--model", "mini", "--steps", "1", "--width", "256", "--height", "64")
    done = _generate(*args, "--out", str(tmp_path / "x.png"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "256x64" in warnings[0] and "native size 64x64" in warnings[0], done.stderr


def test_library_chatter_is_off_and_hub_download_bars_are_on():
    import transformers
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    from altdiffusion.console import quiet_libraries

    disable_progress_bars()  # as transformers' disable_progress_bar() leaves them
    try:
        quiet_libraries()
        assert not are_progress_bars_disabled()  # "Fetching ... files" and per-file download bars show
        assert not transformers.utils.logging.is_progress_bar_enabled()
        assert transformers.utils.logging.get_verbosity() == transformers.logging.ERROR
    finally:
        enable_progress_bars()
        transformers.utils.logging.enable_progress_bar()
        transformers.utils.logging.set_verbosity_warning()
