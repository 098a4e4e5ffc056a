"""Exact resume after SIGKILL, and 2 processes (gloo) equal 1 process with the same global batch."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training import runs

STEPS = 40


def _distill_cmd(world, out: Path, *extra: str, launcher=None) -> list[str]:
    args = [
        "train",
        "clip-distill",
        "--teacher",
        str(world["teacher"]),
        "--student",
        str(world["student"]),
        "--data",
        str(world["train"]),
        "--output-dir",
        str(out),
        "--steps",
        str(STEPS),
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "--log-every",
        "2",
        "--no-progress",
        "--no-tensorboard",
        *extra,
    ]
    if launcher is None:
        return [sys.executable, "-m", "altdiffusion.cli", *args]
    return [*launcher, "-m", "altdiffusion.cli", *args]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def reference_run(distill_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    runs.run(_distill_cmd(distill_world, out, "--save-every", "4"))
    return out


def test_sigkill_then_resume_equals_uninterrupted(distill_world, reference_run, tmp_path):
    out = tmp_path / "killed"
    runs.kill_after_first_checkpoint(_distill_cmd(distill_world, out, "--save-every", "4"), out, 4)
    checkpoints = sorted((out / "checkpoints").glob("step-*"))
    assert checkpoints and all((c / "trainer_state.json").exists() for c in checkpoints)
    runs.run(_distill_cmd(distill_world, out, "--save-every", "4", "--resume"))
    diff = _max_diff(_weights(out / "model"), _weights(reference_run / "model"))
    assert diff == 0.0, f"resumed weights differ from the uninterrupted run by {diff}"
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == STEPS


def test_a_finished_run_extends_with_more_steps(distill_world, tmp_path):
    """Train 20 steps, then --resume with --steps 40: equal to 40 steps in one go (constant lr).
    The final step is checkpointed, so the second run continues instead of starting over."""
    constant = ("--lr-schedule", "constant", "--save-every", "20")
    whole, extended = tmp_path / "whole", tmp_path / "extended"
    runs.run(_distill_cmd(distill_world, whole, *constant))
    runs.run(_distill_cmd(distill_world, extended, *constant, "--steps", "20"))
    runs.run(_distill_cmd(distill_world, extended, *constant, "--resume"))
    steps = [json.loads(line)["step"] for line in (extended / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(2, STEPS + 1, 2)), steps  # 2..20 from the first run, 22..40 from the second
    assert _max_diff(_weights(extended / "model"), _weights(whole / "model")) == 0.0


def test_two_processes_match_one(distill_world, reference_run, tmp_path):
    out = tmp_path / "ddp"
    launcher = runs.torchrun(2)
    runs.run(_distill_cmd(distill_world, out, "--save-every", "100", launcher=launcher))
    diff = _max_diff(_weights(out / "model"), _weights(reference_run / "model"))
    assert diff < 1e-4, f"2-process weights differ from 1-process by {diff}"
    # and they did change during training (the comparison is not between two untouched models)
    start = load_file(str(distill_world["student"] / "model.safetensors"))
    trained = _weights(out / "model")
    key = "embeddings.word_embeddings.weight"
    assert (trained[f"text_model.roberta.{key}"] - start[key]).abs().max() > 1e-3


def test_torchrun_processes_form_one_group(tmp_path):
    """Each process must see the other: world size 2, ranks 0 and 1 (not two lone runs)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from altdiffusion.training.distributed import make_accelerator\n"
        "a = make_accelerator('no', 1, tensorboard=False)\n"
        f"open(r'{tmp_path}/rank-%d' % a.process_index, 'w').write(str(a.num_processes))\n"
    )
    runs.run([*runs.torchrun(2), str(probe)], timeout=300)
    assert sorted(p.name for p in tmp_path.glob("rank-*")) == ["rank-0", "rank-1"]
    assert {p.read_text() for p in tmp_path.glob("rank-*")} == {"2"}
