"""AltDiffusion training on a tiny model: stage presets, learning, resume, 2 processes, assembling."""

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from altdiffusion import load_pipeline
from altdiffusion.models.assemble import assemble
from altdiffusion.models.tiny import write_tiny_altclip, write_tiny_altdiffusion
from altdiffusion.training.data import crop_pixels
from altdiffusion.training.diffusion import DiffusionTask, trainable_names
from altdiffusion.training.loop import train
from altdiffusion.training.params import TrainSettings
from tests.training import grammar, runs

PX = 32  # tiny VAE downsamples by 2: 16x16 latents keep CPU steps fast


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion-world")
    write_tiny_altdiffusion(root / "base", "m9", safety_checker=False)
    data = root / "data"
    data.mkdir()
    red = [s for s in grammar.scenes() if s[1] == "red" and s[0] == "big"]
    for i, scene in enumerate(red):
        grammar.render(*scene, px=PX).save(data / f"{i:03d}.png")
        (data / f"{i:03d}.txt").write_text(grammar.chinese(*scene), encoding="utf-8")
    return {"root": root, "base": root / "base", "data": data}


def _settings(out, **kw):
    base = dict(
        output_dir=out, steps=4, batch_size=4, lr=1e-3, log_every=1, save_every=10**6, progress=False, tensorboard=False
    )
    base.update(kw)
    return TrainSettings(**base)


@pytest.mark.parametrize("stage,align", [("align", "kv"), ("align", "attn2"), ("quality", "kv")])
def test_stage_changes_exactly_the_intended_parameters(world, tmp_path, stage, align):
    pipe = assemble(world["base"])
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    text_before = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    task = DiffusionTask(pipe, world["data"], stage=stage, align_params=align, resolution=PX)
    train(task, _settings(tmp_path / "out", steps=2, max_grad_norm=0))
    after = pipe.unet.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    intended = trainable_names(pipe.unet, stage, align)
    if stage == "align":
        marker = (".attn2.to_k.", ".attn2.to_v.") if align == "kv" else (".attn2.",)
        assert intended == {k for k in before if any(m in k for m in marker)}
    assert changed == intended
    assert all(torch.equal(v, pipe.text_encoder.state_dict()[k]) for k, v in text_before.items()), (
        "text encoder must stay frozen"
    )


def _generated_latent_mean(pipe, seeds=(1, 2, 3)) -> torch.Tensor:
    captured = []
    pipe(
        "左边有一个大的红色圆形",
        num_inference_steps=10,
        height=PX,
        width=PX,
        seed=seeds[0],
        num_images_per_prompt=len(seeds),
        progress=False,
        callback=lambda i, n, latents: captured.append(latents) if i == n else None,
    )
    return captured[-1].mean(dim=(0, 2, 3))


def test_training_lowers_the_loss_and_moves_samples_toward_the_data(world, tmp_path):
    """The VAE is random, so pixels are not comparable; the statistic is the mean latent per
    channel of generated samples versus that of the training images' latents."""
    pipe = assemble(world["base"])
    task = DiffusionTask(pipe, world["data"], stage="quality", resolution=PX, caption_dropout=0.1)
    images = torch.stack(
        [
            crop_pixels(__import__("PIL.Image", fromlist=["Image"]).open(p).convert("RGB"), PX)
            for p in sorted(world["data"].glob("*.png"))
        ]
    )
    with torch.no_grad():
        target = (pipe.vae.encode(images).latent_dist.mode() * pipe.vae.config.scaling_factor).mean(dim=(0, 2, 3))
    before = (_generated_latent_mean(pipe) - target).norm().item()
    folder = train(task, _settings(tmp_path / "out", steps=150, batch_size=8, lr=2e-3, warmup_steps=10, log_every=10))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:2]) / 2, f"loss did not fall clearly: {losses}"
    trained = load_pipeline(folder, safety_checker=False)
    after = (_generated_latent_mean(trained) - target).norm().item()
    artifacts = Path(__file__).resolve().parents[2] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "diffusion-training.json").write_text(
        json.dumps(
            {"loss_first_last": [losses[0], losses[-1]], "mean_latent_distance_before_after": [before, after]}, indent=2
        )
    )
    assert after < 0.5 * before, f"distance of the mean latent to the data: {before:.3f} -> {after:.3f}"


def _finetune_cmd(world, out, *extra, launcher=None):
    args = [
        "train",
        "finetune",
        "--model",
        str(world["base"]),
        "--data",
        str(world["data"]),
        "--output-dir",
        str(out),
        "--resolution",
        str(PX),
        "--steps",
        "16",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--log-every",
        "2",
        "--no-progress",
        "--no-tensorboard",
        *extra,
    ]
    return [*(launcher or [sys.executable]), "-m", "altdiffusion.cli", *args]


def _unet(folder: Path):
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_sigkill_and_resume_equals_uninterrupted_run(world, tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    runs.run(_finetune_cmd(world, reference, "--save-every", "4"))
    runs.kill_after_first_checkpoint(_finetune_cmd(world, killed, "--save-every", "4"), killed, 4)
    runs.run(_finetune_cmd(world, killed, "--save-every", "4", "--resume"))
    a, b = _unet(killed / "model"), _unet(reference / "model")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff == 0.0, f"resumed UNet differs by {diff}"


def test_two_process_run_works(world, tmp_path):
    out = tmp_path / "ddp"
    launcher = runs.torchrun(2)
    runs.run(_finetune_cmd(world, out, launcher=launcher))
    pipe = load_pipeline(out / "model", safety_checker=False)
    result = pipe("一个红色的圆形", num_inference_steps=2, height=PX, width=PX, seed=0, progress=False)
    assert result.images[0].size == (PX, PX)


def test_assemble_from_stable_diffusion_and_altclip(tmp_path):
    """SD-style UNet/VAE/scheduler + an AltCLIP text tower -> an AltDiffusion that trains and saves."""
    sd = write_tiny_altdiffusion(tmp_path / "sd", "m9", safety_checker=False)  # stands in for an SD-1 folder
    clip = write_tiny_altclip(tmp_path / "clip", "m9")
    pipe = assemble(sd, clip, "m9")
    assert pipe.text_encoder.head == "m9" and pipe.text_encoder.conditioning_dim == pipe.unet.config.cross_attention_dim
    from altdiffusion.models.loading import load_altclip

    source = load_altclip(clip).text_model
    assert torch.equal(pipe.text_encoder.transformation.weight, source.transformation.weight)
    saved = pipe.save_pretrained(tmp_path / "assembled")
    again = load_pipeline(saved, safety_checker=False)
    assert torch.equal(again.encode_prompt("一只猫")[0], pipe.encode_prompt("一只猫")[0])
    m18_unet = write_tiny_altdiffusion(tmp_path / "sd2", "m18", safety_checker=False)  # attends to 48-d text
    from altdiffusion.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="48-d text but the AltCLIP text tower projects to 32-d"):
        assemble(m18_unet, clip, "m9")


def test_cached_latents_train_like_encoding_every_step(world, tmp_path):
    states = []
    for cache in (False, True):
        pipe = assemble(world["base"])
        task = DiffusionTask(pipe, world["data"], stage="align", resolution=PX, cache_latents=cache)
        train(task, _settings(tmp_path / f"cache-{cache}", steps=3))
        states.append(pipe.unet.state_dict())
        if cache:
            assert task.latent_cache, "the cache was used"
    # batched vs single-image VAE kernels differ in the last float bits only
    diff = max((states[0][k] - states[1][k]).abs().max().item() for k in states[0])
    assert diff < 1e-5, diff


def test_ema_is_what_gets_exported_and_follows_the_unet_to_its_device(world, tmp_path):
    pipe = assemble(world["base"])
    start = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    task = DiffusionTask(pipe, world["data"], stage="quality", resolution=PX, ema_decay=0.5)
    out = train(task, _settings(tmp_path / "out", steps=3))
    exported = load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))
    last = task.model.unet.state_dict()
    # decay min(0.5, (1 + n) / (10 + n)): the average sits between the start and the last step
    moved = [k for k in start if not torch.equal(start[k], last[k])]
    assert moved and all(
        not torch.equal(exported[k], last[k]) and not torch.equal(exported[k], start[k]) for k in moved
    )
    # accelerate puts the UNet on the GPU after the EMA copy exists; the step must follow it there
    # ("meta" stands in for "cuda" on a machine without one: mixing devices fails the same way).
    task.model.unet.to("meta")
    task.on_step_end(task.model, 4, is_main=False)
    assert task.ema.shadow_params[0].device.type == "meta"
