"""Putting a built AltCLIP-mini and AltDiffusion-mini into the package as the bundled model.

The folders keep the published layouts (AltCLIP: transformers ``AltCLIPModel``; AltDiffusion:
diffusers 0.8 ``model_index.json`` with ``RobertaSeriesModelWithTransformation``); weights are
stored in float16, as the published fp16 variants are, which halves the wheel. The loaders
cast them back to the dtype a run asks for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from altdiffusion.hub import bundled_model_dir
from altdiffusion.mini import GUIDANCE, SAMPLER
from altdiffusion.mini.world import LANGUAGES

# What the server, the web UI and the CLI run the bundled model with when a user leaves a setting
# out (pipelines/defaults.py): the report's CFG, steps and sampler (also the folder's own scheduler,
# so diffusers users get it too), and example prompts from its own world.
RECOMMENDED = {"cfg_scale": GUIDANCE, "steps": 20, "sampler_name": SAMPLER, "examples": "mini-world"}


def to_half(folder: Path) -> None:
    for path in sorted(folder.rglob("*.safetensors")):
        state = load_file(str(path))
        state = {k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()}
        save_file(state, str(path), metadata={"format": "pt"})


def install(altclip: Path, altdiffusion: Path, build_log: Path, dest: Path | None = None) -> Path:
    """Copy both models and the build log into the package (atomically: a temp folder, then a rename)."""
    dest = dest or bundled_model_dir("diffusion").parent
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    skip = shutil.ignore_patterns("data_report.json", "validation")
    shutil.copytree(altclip, tmp / "AltCLIP-mini", ignore=skip)
    shutil.copytree(altdiffusion, tmp / "AltDiffusion-mini", ignore=skip)
    to_half(tmp)
    index_path = tmp / "AltDiffusion-mini" / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_altdiffusion"].update(name="AltDiffusion-mini", languages=list(LANGUAGES), recommended=RECOMMENDED)
    index["scheduler"] = ["diffusers", write_scheduler(tmp / "AltDiffusion-mini" / "scheduler", SAMPLER)]
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    strip_build_paths(tmp)
    shutil.copy2(build_log, tmp / "build.json")
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def write_scheduler(folder: Path, sampler: str) -> str:
    """Replace the scheduler in ``folder`` by A1111 ``sampler``'s on the same noise schedule; its class name."""
    from altdiffusion.pipelines.samplers import make_scheduler

    config = json.loads((folder / "scheduler_config.json").read_text())
    scheduler = make_scheduler(sampler, config)
    scheduler.save_pretrained(str(folder))  # overwrites scheduler_config.json
    return type(scheduler).__name__


def strip_build_paths(folder: Path) -> None:
    """Drop ``_name_or_path`` (the builder's absolute path, which diffusers and transformers write)."""
    for path in folder.rglob("config.json"):
        config = json.loads(path.read_text())
        if config.pop("_name_or_path", None) is not None:
            path.write_text(json.dumps(config, indent=2) + "\n")


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
