"""Single-file checkpoints in A1111's LDM layout: import, export, conversion, hashes, bad files."""

from __future__ import annotations

import hashlib
import json
import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from altdiffusion import CheckpointError, ModelNotFoundError, load_pipeline
from altdiffusion.hashing import file_sha256, sidecar_path
from altdiffusion.models.ldm_layout import ldm_state_dict
from altdiffusion.pipelines.convert import convert

KW = dict(num_inference_steps=3, seed=7, height=64, width=64, guidance_scale=5.0, progress=False)


@pytest.fixture(scope="module")
def single_files(tiny_layouts, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("single")
    return {v: convert(tiny_layouts[f"altdiffusion-{v}"], root / f"tiny-{v}.safetensors") for v in ("m9", "m18")}


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


@pytest.mark.parametrize("variant", ["m9", "m18"])
def test_a_single_file_gives_the_folders_image_and_hashes_as_a1111(tiny_layouts, single_files, variant):
    folder = tiny_layouts[f"altdiffusion-{variant}"]
    from_folder = load_pipeline(folder, device="cpu", safety_checker=False)("一只可爱的猫坐在窗台上", **KW)
    pipe = load_pipeline(single_files[variant], device="cpu", config=folder)
    from_file = pipe("一只可爱的猫坐在窗台上", **KW)
    assert np.abs(pixels(from_folder) - pixels(from_file)).max() == 0
    assert pipe.text_encoder.head == variant
    sha = hashlib.sha256(single_files[variant].read_bytes()).hexdigest()
    assert f"Model hash: {sha[:10]}, Model: tiny-{variant}," in from_file.infotexts[0]
    assert json.loads(sidecar_path(single_files[variant]).read_text())["sha256"] == sha


@pytest.mark.parametrize("variant", ["m9", "m18"])
def test_folder_file_folder_file_is_bit_identical(tiny_layouts, single_files, tmp_path, variant):
    folder = tiny_layouts[f"altdiffusion-{variant}"]
    back = convert(single_files[variant], tmp_path / "back", config=folder)
    again = convert(back, tmp_path / "again.safetensors")
    first, second = load_file(str(single_files[variant])), load_file(str(again))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) and first[k].dtype == second[k].dtype for k in first)
    # and the folder written from the file holds the original folder's tensors
    original = load_pipeline(folder, device="cpu", safety_checker=False)
    rebuilt = load_pipeline(back, device="cpu")
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(original, name).state_dict(), getattr(rebuilt, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _meta_modules(architecture: str):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from altdiffusion.models.loading import read_json
    from altdiffusion.models.single_file import ARCHITECTURES, CONFIGS
    from altdiffusion.models.text_encoder import AltTextEncoder, text_config_from_dict

    folder = CONFIGS / ARCHITECTURES[architecture]
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(read_json(folder / "unet" / "config.json"))
        vae = AutoencoderKL.from_config(read_json(folder / "vae" / "config.json"))
        text_config = text_config_from_dict(read_json(folder / "text_encoder" / "config.json"))
        text = AltTextEncoder(text_config, head=architecture)
    return unet, vae, text, text_config


# Names and shapes as they stand in SD-1.x / SD-2.x LDM checkpoints (and so in A1111's AltDiffusion files).
LDM_FACTS = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
    "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
    "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
    "model.diffusion_model.time_embed.0.weight": (1280, 320),
    "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
    "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.2.weight": (320, 1280),
    "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
    "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    "first_stage_model.decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
    "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
    "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
    "first_stage_model.encoder.down.0.downsample.conv.weight": (128, 128, 3, 3),
    "first_stage_model.encoder.norm_out.weight": (512,),
    "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
    "cond_stage_model.roberta.embeddings.word_embeddings.weight": (250002, 1024),
    "cond_stage_model.roberta.encoder.layer.23.output.LayerNorm.weight": (1024,),
}
PER_VARIANT = {
    "m9": {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
        "cond_stage_model.transformation.weight": (768, 1024),
    },
    "m18": {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight": (1280, 1024),
        "cond_stage_model.transformation.weight": (1024, 1024),
        "cond_stage_model.transformation_pre.weight": (1024, 1024),
        "cond_stage_model.pre_LN.weight": (1024,),
    },
}


@pytest.mark.parametrize("variant", ["m9", "m18"])
def test_a_full_size_export_has_a1111s_key_set_and_shapes(variant):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from transformers import XLMRobertaModel

    unet, vae, text, text_config = _meta_modules(variant)
    exported = ldm_state_dict(unet, vae, text)
    shapes = {k: tuple(v.shape) for k, v in exported.items()}
    # SD's LDM UNet has 686 tensors and its autoencoder 248 (every SD-1/SD-2 checkpoint)
    assert sum(k.startswith("model.diffusion_model.") for k in shapes) == 686
    assert sum(k.startswith("first_stage_model.") for k in shapes) == 248
    for key, shape in {**LDM_FACTS, **PER_VARIANT[variant]}.items():
        assert shapes[key] == shape, key
    # diffusers' own LDM -> diffusers converters read the file back to exactly the modules' names and shapes
    for convert_part, module in ((convert_ldm_unet_checkpoint, unet), (convert_ldm_vae_checkpoint, vae)):
        back = convert_part(exported, dict(module.config))
        assert {k: tuple(v.shape) for k, v in back.items()} == {
            k: tuple(v.shape) for k, v in module.state_dict().items()
        }
    # A1111's BertSeriesModelWithTransformation: XLMRobertaModel (with pooler) + transformation (+ pre_LN,
    # + transformation_pre for m18); A1111 loads non-strictly, so the unused pooler (and m9's pre_LN) may be absent.
    with torch.device("meta"):
        roberta = XLMRobertaModel(text_config)
    a1111 = {f"cond_stage_model.roberta.{k}" for k in roberta.state_dict()}
    a1111 |= {f"cond_stage_model.{m}.{p}" for m in ("transformation", "pre_LN") for p in ("weight", "bias")}
    if variant == "m18":
        a1111 |= {"cond_stage_model.transformation_pre.weight", "cond_stage_model.transformation_pre.bias"}
    unused = {k for k in a1111 if ".pooler." in k or (variant == "m9" and ".pre_LN." in k)}
    assert {k for k in shapes if k.startswith("cond_stage_model.")} == a1111 - unused


def test_ckpt_with_state_dict_wrapper_ema_and_fp16_loads(tiny_layouts, single_files, tmp_path):
    folder = tiny_layouts["altdiffusion-m9"]
    state = load_file(str(single_files["m9"]))
    unet_keys = [k for k in state if k.startswith("model.diffusion_model.")]
    # LDM's EMA copies use the name without dots; A1111 (use_ema: False) ignores them: so do we
    ema = {"model_ema." + k.split(".", 1)[1].replace(".", ""): torch.randn_like(state[k]) for k in unet_keys}
    ckpt = tmp_path / "wrapped.ckpt"
    torch.save({"state_dict": {**state, **ema, "betas": torch.ones(1000)}, "global_step": 3}, ckpt)
    reference = load_pipeline(single_files["m9"], device="cpu", config=folder)("一只猫", **KW)
    assert (
        np.abs(pixels(load_pipeline(ckpt, device="cpu", config=folder)("一只猫", **KW)) - pixels(reference)).max() == 0
    )
    for dtype in (torch.float16, torch.bfloat16):
        half = tmp_path / f"{dtype}.safetensors"
        save_file({k: v.to(dtype) for k, v in state.items()}, str(half))
        pipe = load_pipeline(half, device="cpu", dtype="fp32", config=folder)
        assert pipe.dtype == torch.float32
        assert torch.equal(
            pipe.unet.conv_in.weight, state["model.diffusion_model.input_blocks.0.0.weight"].to(dtype).float()
        )


def test_a_single_file_without_config_needs_the_published_tokenizer_and_says_so_offline(single_files):
    with pytest.raises(ModelNotFoundError, match=r"BAAI/AltDiffusion-m9.*offline"):
        load_pipeline(single_files["m9"], device="cpu")


def test_the_sidecar_hash_is_trusted_until_the_file_changes(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"abc")
    assert file_sha256(path) == hashlib.sha256(b"abc").hexdigest()
    cached = json.loads(sidecar_path(path).read_text())
    sidecar_path(path).write_text(json.dumps({**cached, "sha256": "f" * 64}))
    assert file_sha256(path) == "f" * 64  # read from the sidecar, not recomputed
    path.write_bytes(b"abcd")
    assert file_sha256(path) == hashlib.sha256(b"abcd").hexdigest()


class Payload:
    """Pickled code: unpickling it would create a marker file (it must never run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _bad_files(root: Path, good: Path) -> dict[str, tuple[Path, str]]:
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    json_file = root / "config.safetensors"
    json_file.write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    code = root / "code.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "evil": Payload(root / "pwned")}, code)
    vae_only = root / "vae-only.safetensors"
    save_file({k: v for k, v in load_file(str(good)).items() if k.startswith("first_stage_model.")}, str(vae_only))
    return {
        "truncated": (truncated, "not a readable safetensors file"),
        "json": (json_file, "not a readable safetensors file"),
        "code": (code, "refused for safety"),
        "unknown": (vae_only, "unknown architecture"),
    }


def test_bad_files_give_one_clear_error_each(single_files, tmp_path, run_cli_batch):
    cases = _bad_files(tmp_path, single_files["m9"])
    for path, message in cases.values():
        with pytest.raises(CheckpointError, match=message):
            load_pipeline(path, device="cpu")
    results = run_cli_batch([["info", path] for path, _ in cases.values()])
    for (name, (_, message)), result in zip(cases.items(), results):
        assert result.returncode == 2, (name, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (name, lines)
    assert not (tmp_path / "pwned").exists()


def _sd1_folder(tiny_layouts, root: Path) -> Path:
    """A tiny Stable Diffusion 1.x folder: the tiny UNet/VAE with a CLIP text tower (32-d)."""
    import shutil

    from transformers import CLIPTextConfig, CLIPTextModel

    from altdiffusion.models.tiny_tokenizers import write_word_level_tokenizer

    folder = root / "sd1"
    shutil.copytree(tiny_layouts["altdiffusion-m9"], folder, ignore=shutil.ignore_patterns("text_encoder", "tokenizer"))
    vocab = write_word_level_tokenizer(folder / "tokenizer", ["a photo of a red cat", "a dog"])
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    CLIPTextModel(config).save_pretrained(str(folder / "text_encoder"), safe_serialization=True)
    index = json.loads((folder / "model_index.json").read_text())
    index.update(text_encoder=["transformers", "CLIPTextModel"], safety_checker=[None, None])
    (folder / "model_index.json").write_text(json.dumps(index))
    return folder


def test_a_plain_sd1_single_file_loads_through_the_sd_path(tiny_layouts, tmp_path):
    folder = _sd1_folder(tiny_layouts, tmp_path)
    file = convert(folder, tmp_path / "sd1.safetensors")
    assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in load_file(str(file)))
    pipe = load_pipeline(file, device="cpu", config=folder)
    assert pipe.text_encoder.head == "sd"
    reference = load_pipeline(folder, device="cpu", safety_checker=False)
    assert np.array_equal(pixels(pipe("a red cat", **KW)), pixels(reference("a red cat", **KW)))


def test_dtype_is_kept_as_stored_or_cast_on_request(tiny_layouts, tmp_path):
    folder = tiny_layouts["altdiffusion-m9"]
    half = convert(folder, tmp_path / "half.safetensors", dtype="fp16")
    assert {v.dtype for v in load_file(str(half)).values() if v.is_floating_point()} == {torch.float16}
    from altdiffusion.training.diffusion import unet_stored_dtype

    assert unet_stored_dtype(half) == torch.float16  # training from a file exports in the file's dtype
    back = convert(half, tmp_path / "half-folder", config=folder)  # a float16 folder, which diffusers reads as fp32
    again = convert(back, tmp_path / "again.safetensors")  # no --dtype: the dtype on disk, float16
    first, second = load_file(str(half)), load_file(str(again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    assert all(second[k].dtype == first[k].dtype for k in first)


def test_cli_convert_and_info_on_a_single_file(tiny_layouts, tmp_path, run_cli_batch):
    folder = tiny_layouts["altdiffusion-m18"]
    file = tmp_path / "cli.safetensors"
    made, wrong_target = run_cli_batch(
        [["convert", folder, file, "--dtype", "bf16"], ["convert", folder, tmp_path / "not-a-file-name"]]
    )
    (info,) = run_cli_batch([["info", file, "--config", folder]])  # the batch's runs are concurrent
    assert made.returncode == 0 and made.stdout.strip() == str(file), made.stderr
    assert {v.dtype for v in load_file(str(file)).values()} == {torch.bfloat16}
    assert info.returncode == 0, info.stderr
    rows = dict(line.split(None, 1) for line in info.stdout.splitlines() if " " in line)
    assert rows["file"].strip() == str(file) and "m18" in info.stdout
    assert wrong_target.returncode == 2 and "must end in .safetensors" in wrong_target.stderr
    assert not (tmp_path / "not-a-file-name").exists()
