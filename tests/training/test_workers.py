"""``--workers``: training images decoded in worker processes, the batches exactly those the training
process makes alone, in its order (training/prefetch.py); errors in a worker reach the user as one line."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from altdiffusion.cli import main
from altdiffusion.errors import InvalidInputError
from altdiffusion.hub import bundled_model_dir
from altdiffusion.mini import world
from altdiffusion.mini.build import RECIPE
from altdiffusion.mini.evaluate import load_mini_pipeline
from altdiffusion.training.contrastive import ContrastiveTask
from altdiffusion.training.data import SkipCounter, crop_pixels
from altdiffusion.training.diffusion import DiffusionTask
from altdiffusion.training.grounding import GroundingWeights
from altdiffusion.training.prefetch import auto_workers, prepared_batches
from altdiffusion.training.vae import VAETask
from tests.training import grammar, runs

COMMON = ["--resolution", "64", "--no-tensorboard", "--no-progress", "--log-every", "1", "--save-every", "1000"]


@pytest.fixture(scope="module")
def mini_shards(tmp_path_factory):
    """160 mini-world training samples (captions in 9 languages, grounding regions) in two shards."""
    folder = tmp_path_factory.mktemp("mini-shards")
    world.write_shards(folder, 160, seed=0, split="train", shard_size=80)
    return [str(p) for p in sorted(folder.glob("*.tar"))]


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    if dataclasses.is_dataclass(a):
        return dataclasses.asdict(a) == dataclasses.asdict(b)
    return a == b


def _with_workers(task, workers: int, start: int, micro: int, grad_accum: int, count: int) -> list:
    def plans():
        return task.plans(start, micro, 0, 1, grad_accum)

    return list(itertools.islice(prepared_batches(plans, task.prepare, workers, task.skipped), count))


def _alone(task, start: int, micro: int, grad_accum: int, count: int) -> list:
    return list(itertools.islice(task.batches(start, micro, 0, 1, grad_accum), count))


@pytest.mark.parametrize("kind", ["grounded diffusion", "contrastive"])
def test_three_workers_make_the_batches_the_training_process_makes_in_its_order(kind, mini_shards):
    if kind == "contrastive":
        task = ContrastiveTask("mini", mini_shards, seed=3, train_vision=True, languages=["zh", "en", "fr"])
    else:
        grounding = GroundingWeights(*RECIPE["ground-pixel"]["weights"])
        task = DiffusionTask(load_mini_pipeline(), mini_shards, resolution=64, caption_dropout=0.3, grounding=grounding)
    for start, grad_accum, count in ((0, 1, 7), (3, 2, 4)):  # from the start; resumed at step 3, accumulating
        alone = _alone(task, start, 16, grad_accum, count)
        assert _same(_with_workers(task, 3, start, 16, grad_accum, count), alone)
    assert len({batch[0].numpy().tobytes() for batch in alone}) == count  # distinct batches


def test_corrupt_images_are_replaced_by_the_next_and_counted_once_with_workers(tmp_path):
    train, _ = grammar.split()
    shards = grammar.write_shards(tmp_path / "shards", train[:40], per_shard=40, corrupt=3)
    counts = []
    runs = []
    for workers in (0, 2):
        task = VAETask(bundled_model_dir("diffusion") / "vae", str(shards), resolution=64, seed=0)
        runs.append(_with_workers(task, workers, 0, 4, 1, 5))
        counts.append(task.skipped.counts)
    assert _same(runs[0], runs[1]) and counts[0] == counts[1] == {"corrupt image": 3}
    first_good = torch.stack([crop_pixels(grammar.render(*scene), 64) for scene in train[:4]])
    assert torch.equal(runs[0][0][0], first_good)
    assert all(batch[0].shape[0] == 4 for batch in runs[0])


def test_mostly_corrupt_data_is_one_error(tmp_path):
    shards = grammar.write_shards(tmp_path / "shards", grammar.split()[0][:10], per_shard=40, corrupt=12)
    task = VAETask(bundled_model_dir("diffusion") / "vae", str(shards), resolution=64, seed=0)
    with pytest.raises(InvalidInputError, match=r"mostly corrupt: of 8 samples in a row .* 0 images could be decoded"):
        next(task.batches(0, 4, 0, 1, 1))


def test_a_workers_input_error_reaches_the_training_process_as_itself(tmp_path):
    shards = grammar.write_shards(tmp_path / "shards", grammar.split()[0][:200], per_shard=100)
    task = DiffusionTask(load_mini_pipeline(), str(shards), resolution=64, grounding=GroundingWeights(token=0.01))
    with pytest.raises(InvalidInputError, match="none of the first 64 captions has grounding") as caught:
        _with_workers(task, 2, 0, 16, 1, 10)
    assert "Traceback" not in str(caught.value)


def test_a_workers_bug_reaches_the_training_process_with_its_traceback():
    def prepare(plan):
        return 1 / (plan - 3), {}

    batches = prepared_batches(lambda: iter(range(10)), prepare, 2, SkipCounter())
    assert [next(batches) for _ in range(3)] == [-1 / 3, -1 / 2, -1.0]
    with pytest.raises(RuntimeError, match="a data worker failed") as caught:
        next(batches)
    assert "ZeroDivisionError" in str(caught.value) and "in prepare" in str(caught.value)


def test_auto_is_no_worker_on_the_cpu_and_leaves_a_core_per_process_on_a_gpu():
    assert auto_workers("cpu", 1) == auto_workers("mps", 1) == 0
    assert auto_workers("cuda", 1) == max(0, min(4, (torch.multiprocessing.cpu_count() - 1)))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """6 captioned pictures in a folder, as a user's own data comes."""
    folder = tmp_path_factory.mktemp("pictures")
    for i in range(6):
        pixels = np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("一幅画", encoding="utf-8")
    return folder


def test_train_vae_exports_the_same_weights_with_two_workers_as_with_none(pictures, tmp_path):
    source = bundled_model_dir("diffusion") / "vae"
    for workers in ("0", "2"):
        out = tmp_path / workers
        cmd = ["train", "vae", "--vae", str(source), "--data", str(pictures), "--output-dir", str(out)]
        assert main([*cmd, "--steps", "4", "--batch-size", "4", "--lr", "1e-3", "--workers", workers, *COMMON]) == 0
    alone, workers = (load_file(tmp_path / w / "model" / "diffusion_pytorch_model.safetensors") for w in ("0", "2"))
    original = load_file(source / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(alone[k], original[k]) for k in alone)  # it trained
    assert all(torch.equal(alone[k], workers[k]) for k in alone)


@pytest.mark.parametrize(
    ("command", "workers", "message"),
    [
        ("vae", "-1", "--workers must be auto or a number of processes (0 or more), got -1"),
        ("vae", "many", "--workers must be auto or a number of processes (0 or more), got 'many'"),
        ("dreambooth", "2", "--workers 2: dreambooth makes its batches in the training process"),
    ],
)
def test_a_wrong_workers_option_is_one_error_line(command, workers, message, pictures, tmp_path, capsys):
    if command == "vae":
        cmd = ["train", "vae", "--vae", str(bundled_model_dir("diffusion") / "vae"), "--data", str(pictures)]
    else:
        cmd = ["train", "dreambooth", "--model", str(bundled_model_dir("diffusion")), "--instance-images"]
        cmd += [str(pictures), "--instance-prompt", "一幅<sks>画"]
    assert main([*cmd, "--output-dir", str(tmp_path), "--steps", "2", "--workers", workers, *COMMON]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "model").exists()


def test_two_ranks_with_a_worker_each_train_the_vae_one_process_trains(pictures, tmp_path):
    """DDP (torchrun, gloo), each rank forking its worker after the process group is up. With 6
    pictures, rank r reading pictures r, r + 2, ..., each global batch of 4 holds the pictures one
    process's batch holds, and the mean loss does not depend on their order: the gradients DDP
    averages are one process's (the VAE's training pass goes through DDP's forward), so the
    weights agree to float rounding (--posterior mode: no noise, which is drawn per rank; float32
    export: float16 would round the two apart)."""
    source = bundled_model_dir("diffusion") / "vae"
    common = ["train", "vae", "--vae", str(source), "--data", str(pictures), "--steps", "3", "--batch-size", "4"]
    common += ["--lr", "1e-3", "--posterior", "mode", "--save-dtype", "float32", *COMMON]
    assert main([*common, "--output-dir", str(tmp_path / "one"), "--workers", "0"]) == 0
    two = [*runs.torchrun(2), "-m", "altdiffusion.cli", *common, "--output-dir", str(tmp_path / "two")]
    runs.run([*two, "--workers", "1"], timeout=300)
    one, two = (load_file(tmp_path / w / "model" / "diffusion_pytorch_model.safetensors") for w in ("one", "two"))
    original = load_file(source / "diffusion_pytorch_model.safetensors")

    def mean_change(a, b) -> float:
        return torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a]).mean().item()

    # Adam moves every weight by about the lr per step, so a handful of near-zero gradients whose
    # sign the order of summation flips differ by 2 lr; the mean sees the rest. Rank 0 training
    # alone on its pictures lands 0.48x the change away (measured), so this ratio cannot pass unsynced.
    assert mean_change(one, two) < 1e-3 * mean_change(one, original)
