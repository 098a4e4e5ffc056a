"""DreamBooth (LoRA and full UNet) on the tiny model, and LoRA files in both formats through
the pipeline and the CLI."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from altdiffusion.cli import main
from altdiffusion.errors import CheckpointError, InvalidInputError
from altdiffusion.pipelines.alt_diffusion import load_pipeline
from altdiffusion.pipelines.infotext import read_infotext
from altdiffusion.pipelines.lora import kohya_to_peft, parse_lora_arg, peft_to_kohya
from tests.training import grammar

pytest.importorskip("peft")

INSTANCE_PROMPT = "一张<sks>风格的画"
Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
KOHYA_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
COMMON = ["--resolution", "64", "--batch-size", "2", "--no-tensorboard", "--no-progress", "--log-every", "1"]


def _sample(pipe, seed=7):
    return pipe(
        INSTANCE_PROMPT,
        num_inference_steps=3,
        guidance_scale=7.5,
        seed=seed,
        height=64,
        width=64,
        output_type="np",
        progress=False,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from altdiffusion.models.tiny import write_tiny_altdiffusion
    from altdiffusion.training import loop

    root = tmp_path_factory.mktemp("dreambooth")
    model = write_tiny_altdiffusion(root / "base", "m9", safety_checker=False)
    instances = root / "instances"
    instances.mkdir()
    for i, place in enumerate(["left", "right", "top", "bottom"]):
        grammar.render("big", "red", "circle", place, px=64).save(instances / f"{i}.png")

    captured = {}
    original = loop.train

    def spy(task, settings):
        captured["task"] = task
        return original(task, settings)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "train", spy)
        rc = main(
            [
                "train",
                "dreambooth",
                "--model",
                str(model),
                "--instance-images",
                str(instances),
                "--instance-prompt",
                INSTANCE_PROMPT,
                "--class-prompt",
                "一张画",
                "--class-images",
                str(root / "class"),
                "--num-class-images",
                "2",
                "--class-steps",
                "2",
                "--lora-rank",
                "4",
                "--lora-alpha",
                "4",
                "--steps",
                "20",
                "--lr",
                "1e-3",
                "--lr-schedule",
                "constant",
                "--output-dir",
                str(root / "out"),
                *COMMON,
            ]
        )
    assert rc == 0
    return {
        "root": root,
        "model": model,
        "instances": instances,
        "out": root / "out" / "model",
        "task": captured["task"],
    }


@pytest.fixture(scope="module")
def pipe(world):
    return load_pipeline(world["model"], device="cpu", dtype="fp32", safety_checker=False)


def test_dreambooth_lora_leaves_base_weights_untouched_and_writes_both_formats(world):
    from altdiffusion.training.lora import base_state_dict

    base = load_pipeline(world["model"], device="cpu", dtype="fp32", safety_checker=False).unet.state_dict()
    trained = base_state_dict(world["task"].model.unet)
    assert set(trained) == set(base)
    assert all(torch.equal(trained[k], base[k]) for k in base)

    classes = sorted((world["root"] / "class").glob("*.png"))
    assert [p.name for p in classes] == ["class-00000.png", "class-00001.png"]
    assert "一张画" in read_infotext(classes[0])
    log = (world["root"] / "out" / "log.jsonl").read_text().splitlines()
    assert len(log) == 20 and '"prior_loss"' in log[-1]

    peft_file = world["out"] / "pytorch_lora_weights.safetensors"
    kohya_file = world["out"] / "out.safetensors"
    assert peft_file.is_file() and kohya_file.is_file()
    peft_state, kohya_state = load_file(peft_file), load_file(kohya_file)
    assert f"unet.{Q}.lora_A.weight" in peft_state and f"unet.{Q}.lora_B.weight" in peft_state
    assert {f"{KOHYA_Q}.lora_down.weight", f"{KOHYA_Q}.lora_up.weight", f"{KOHYA_Q}.alpha"} <= set(kohya_state)
    assert kohya_state[f"{KOHYA_Q}.alpha"].shape == () and kohya_state[f"{KOHYA_Q}.alpha"].item() == 4.0
    assert torch.equal(kohya_state[f"{KOHYA_Q}.lora_down.weight"], peft_state[f"unet.{Q}.lora_A.weight"])
    assert torch.equal(kohya_state[f"{KOHYA_Q}.lora_up.weight"], peft_state[f"unet.{Q}.lora_B.weight"])
    assert peft_state[f"unet.{Q}.lora_A.weight"].shape == (4, 32)
    assert peft_state[f"unet.{Q}.lora_B.weight"].abs().max() > 0  # trained (B starts at zero)
    assert len(kohya_state) == 3 * len(peft_state) // 2
    with safe_open(str(kohya_file), "pt") as fh:
        meta = fh.metadata()
    assert (meta["ss_network_dim"], meta["ss_network_alpha"], meta["ss_network_module"]) == ("4", "4", "networks.lora")
    with safe_open(str(peft_file), "pt") as fh:
        assert '"unet.lora_alpha": 4' in fh.metadata()["lora_adapter_metadata"]


def test_conversion_both_ways(world, pipe):
    with safe_open(str(world["out"] / "pytorch_lora_weights.safetensors"), "pt") as fh:
        meta = fh.metadata()
    peft_state = load_file(world["out"] / "pytorch_lora_weights.safetensors")
    kohya, kmeta = peft_to_kohya(peft_state, meta)
    assert set(kohya) == set(load_file(world["out"] / "out.safetensors")) and kmeta["ss_network_alpha"] == "4"
    back, _ = kohya_to_peft(kohya, {"unet": [n for n, _ in pipe.unet.named_modules()]})
    assert set(back) == set(peft_state) and all(torch.equal(back[k], peft_state[k]) for k in back)


def test_lora_loads_from_both_formats_changes_output_and_unloads_exactly(world, pipe):
    base = _sample(pipe)
    pipe.load_lora(world["out"] / "pytorch_lora_weights.safetensors")
    from_peft = _sample(pipe)
    pipe.unload_lora()
    assert np.array_equal(_sample(pipe), base)
    info = pipe.load_lora(world["out"] / "out.safetensors", scale=1.0)
    assert info["format"] == "kohya" and info["layers"] == 32 and len(info["hash"]) == 12
    from_kohya = _sample(pipe)
    pipe.unload_lora()
    assert np.abs(from_peft - from_kohya).max() <= 1e-5
    change = np.abs(from_peft - base)
    assert change.max() > 1e-3 and change.mean() > 1e-4, (
        f"the trained LoRA should change the image (mean {change.mean():.2g})"
    )
    assert np.array_equal(_sample(pipe), base)
    assert pipe.loras == []


def test_diffusers_reads_both_files_as_we_merge_them(world):
    """diffusers' own loaders (peft keys, and its kohya converter) give our merged UNet's output."""
    from diffusers import StableDiffusionPipeline

    unet = load_pipeline(world["model"], device="cpu", dtype="fp32", safety_checker=False).unet
    holder = load_pipeline(world["model"], device="cpu", dtype="fp32", safety_checker=False)
    x = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    c = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    holder.load_lora(world["out"] / "out.safetensors")
    with torch.no_grad():
        ours = holder.unet(x, 10, encoder_hidden_states=c).sample
        unet.load_lora_adapter(str(world["out"] / "pytorch_lora_weights.safetensors"), prefix="unet", adapter_name="p")
        from_peft = unet(x, 10, encoder_hidden_states=c).sample
        unet.delete_adapters("p")
        state, alphas = StableDiffusionPipeline.lora_state_dict(str(world["out"] / "out.safetensors"))
        unet.load_lora_adapter(state, prefix="unet", network_alphas=alphas, adapter_name="k")
        from_kohya = unet(x, 10, encoder_hidden_states=c).sample
    assert (from_peft - ours).abs().max() <= 1e-5 and (from_kohya - ours).abs().max() <= 1e-5


def test_bad_lora_files_are_refused_with_names(world, pipe, tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        pipe.load_lora(tmp_path / "missing.safetensors")
    save_file({"lora_unet_no_such_layer.lora_down.weight": torch.zeros(4, 32)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(CheckpointError, match="lora_unet_no_such_layer"):
        pipe.load_lora(tmp_path / "bad.safetensors")
    wrong = {f"unet.{Q}.lora_A.weight": torch.zeros(4, 99), f"unet.{Q}.lora_B.weight": torch.zeros(32, 4)}
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(CheckpointError, match="to_q"):
        pipe.load_lora(tmp_path / "wrong.safetensors")
    assert pipe.loras == []


def test_parse_lora_arg():
    assert parse_lora_arg("a.safetensors") == ("a.safetensors", 1.0)
    assert parse_lora_arg("a.safetensors:0.5") == ("a.safetensors", 0.5)
    assert parse_lora_arg(r"C:\loras\a.safetensors") == (r"C:\loras\a.safetensors", 1.0)
    assert parse_lora_arg("dir:x/a.safetensors:-1") == ("dir:x/a.safetensors", -1.0)


def test_generate_cli_with_lora(world, tmp_path, capsys):
    out = tmp_path / "img.png"
    cmd = [
        sys.executable,
        "-m",
        "altdiffusion.cli",
        "generate",
        INSTANCE_PROMPT,
        "--model",
        str(world["model"]),
        "--steps",
        "2",
        "--seed",
        "3",
        "--width",
        "64",
        "--height",
        "64",
        "--no-safety-checker",
        "--no-progress",
        "--device",
        "cpu",
        "--lora",
        f"{world['out'] / 'out.safetensors'}:0.5",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = read_infotext(out)
    assert "Lora hashes: " in text and '"out: ' in text

    bad = tmp_path / "random.safetensors"
    save_file({"foo.bar": torch.randn(3, 3), "baz": torch.randn(2)}, str(bad))
    capsys.readouterr()
    args = [
        "generate",
        "x",
        "--model",
        str(world["model"]),
        "--steps",
        "1",
        "--no-safety-checker",
        "--no-progress",
        "--device",
        "cpu",
        "--lora",
        str(bad),
        "--out",
        str(tmp_path / "never.png"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "foo.bar" in err[0]
    assert not (tmp_path / "never.png").exists()


def test_full_unet_dreambooth_smoke(world, tmp_path):
    rc = main(
        [
            "train",
            "dreambooth",
            "--model",
            str(world["model"]),
            "--instance-images",
            str(world["instances"]),
            "--instance-prompt",
            INSTANCE_PROMPT,
            "--full",
            "--steps",
            "2",
            "--output-dir",
            str(tmp_path / "full"),
            *COMMON,
        ]
    )
    assert rc == 0
    trained = load_pipeline(tmp_path / "full" / "model", device="cpu", dtype="fp32", safety_checker=False)
    image = _sample(trained)
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all()
