"""The loop's guards on a two-parameter task: a NaN gradient under a finite loss stops the run,
and an export that would overflow its --save-dtype is refused."""

import itertools
from pathlib import Path

import pytest
import torch

from altdiffusion.errors import TrainingDivergedError
from altdiffusion.models.weights import save_safetensors
from altdiffusion.training.loop import train
from altdiffusion.training.params import TrainSettings


class DistanceTask:
    """Learn ``w`` toward ``target`` with loss sum(sqrt|w - target|): finite everywhere, but its
    gradient at ``w == target`` is 0 * inf = NaN."""

    name = "distance"

    def __init__(self, start: list[float], target: list[float], dtype=torch.float16):
        self.model = torch.nn.Module()
        self.model.w = torch.nn.Parameter(torch.tensor(start, dtype=dtype))
        self.target = torch.tensor(target)

    def batches(self, start_step, micro, rank, world, grad_accum):
        return itertools.repeat(None)

    def loss(self, model, batch):
        return torch.sqrt((model.w - self.target).abs()).sum(), {}

    def export(self, model, folder: Path) -> None:
        save_safetensors({"w": model.w.detach()}, folder / "model.safetensors")


def settings(out, **kw):
    base = dict(output_dir=out, steps=3, batch_size=1, lr=0.1, save_every=1, progress=False, tensorboard=False)
    return TrainSettings(**{**base, **kw})


def test_nan_gradient_under_a_finite_loss_stops_at_that_step(tmp_path):
    task = DistanceTask([1.0, 2.0], [1.0, 3.0])  # w[0] already equals its target
    with pytest.raises(TrainingDivergedError, match=r"at step 1: the gradient norm is nan\. .*no checkpoint"):
        train(task, settings(tmp_path))
    assert not (tmp_path / "model").exists()


def test_trains_float32_master_weights_and_exports_in_the_source_dtype(tmp_path):
    task = DistanceTask([1.0, 2.0], [1.5, 3.0])
    train(task, settings(tmp_path))
    assert task.model.w.dtype == torch.float32
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / "model" / "model.safetensors"))["w"].dtype == torch.float16


def test_export_that_overflows_save_dtype_is_refused(tmp_path):
    task = DistanceTask([1e6, 2.0], [2e6, 3.0], dtype=torch.float32)  # 1e6 is beyond float16's range
    train(task, settings(tmp_path / "f32"))
    assert (tmp_path / "f32" / "model").is_dir()
    task = DistanceTask([1e6, 2.0], [2e6, 3.0], dtype=torch.float32)
    with pytest.raises(TrainingDivergedError, match="overflows float16"):
        train(task, settings(tmp_path / "f16", save_dtype="float16"))
    assert not (tmp_path / "f16" / "model").exists() and not (tmp_path / "f16" / ".model.tmp").exists()
    assert sorted(p.name for p in (tmp_path / "f16" / "checkpoints").iterdir()) == ["step-2", "step-3"]
