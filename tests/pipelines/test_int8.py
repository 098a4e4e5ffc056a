"""The int8 UNet of the CPU speed mode (pipelines/int8.py) on the bundled AltDiffusion-mini, whose
trained weights have the activation ranges a random model lacks: close to fp32, reproducible
whatever ran before, LoRAs reach it, shape buckets bounded; and a refusal. (``--int8`` without
``--compile`` is among tests/test_cli_generate.py's bad inputs.)"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from altdiffusion import load_pipeline
from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.int8 import has_vnni
from altdiffusion.pipelines.lora import LoraLayer, layers_to_kohya

CALL = dict(prompt="一个红色的大圆形，位于画面中央，白色背景。", seed=42, output_type="np", progress=False)
needs_vnni = pytest.mark.skipif(not has_vnni(), reason="this CPU has no VNNI: int8 refuses to run here")


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((image - reference) ** 2)))


def write_lora(pipe, path) -> None:
    """A rank-2 kohya LoRA on the UNet's first self-attention query, strong enough to show."""
    name = next(n for n, _ in pipe.unet.named_modules() if n.endswith("attn1.to_q"))
    width = pipe.unet.get_submodule(name).in_features
    down = torch.randn(2, width, generator=torch.Generator().manual_seed(0))
    up = torch.randn(width, 2, generator=torch.Generator().manual_seed(1))
    tensors, metadata = layers_to_kohya([LoraLayer("unet", name, down, up, 2.0)])
    save_file(tensors, str(path), metadata=metadata)


@needs_vnni
@pytest.mark.slow  # 3-4 min here: four quantizations of the mini UNet, each compiled by g++
def test_int8_mini_is_close_to_fp32_reproducible_and_follows_loras(tmp_path, caplog):
    fp32 = load_pipeline("mini", "cpu", torch.float32)
    bf16 = load_pipeline("mini", "cpu", torch.bfloat16)
    pipe = load_pipeline("mini", "cpu", torch.bfloat16)
    pipe.enable_speed_mode(int8=True, max_shapes=1, cache_dir=tmp_path / "inductor")
    pipe(**{**CALL, "prompt": "a small blue square on the left", "seed": 7})  # calibration ignores this
    image = pipe(**CALL)
    assert len(pipe.speed.int8.graphs) == 1 and not pipe.speed.int8.cached_buckets  # calibrated here
    assert not np.array_equal(image, bf16(**CALL))
    assert psnr(image, fp32(**CALL)) > 35  # measured 44.3 dB (bf16 alone: 52.7 dB)
    ranges = tmp_path / "inductor" / "int8-calibration"
    (calibration,) = ranges.iterdir()  # the bucket's ranges, for later processes

    write_lora(pipe, tmp_path / "ink.safetensors")
    for p in (pipe, bf16):
        p.load_lora(tmp_path / "ink.safetensors")
    assert not pipe.speed.int8.graphs  # quantized again from the merged weights on the next call
    with_lora = pipe(**CALL)
    assert psnr(with_lora, image) < 30 and psnr(with_lora, bf16(**CALL)) > 30
    assert len(list(ranges.iterdir())) == 2 and not pipe.speed.int8.cached_buckets  # new weights, new ranges
    for p in (pipe, bf16):
        p.unload_lora()
    calibration.write_bytes(calibration.read_bytes()[:100])  # torn: refused, calibrated again, rewritten
    with caplog.at_level(logging.WARNING, logger="altdiffusion.pipelines.int8_ranges"):
        assert np.array_equal(pipe(**CALL), image)  # the same weights calibrate to the same graph
    assert "ignoring the cached calibration" in caplog.text and not pipe.speed.int8.cached_buckets

    again = load_pipeline("mini", "cpu", torch.bfloat16)  # as a new process would: its ranges from the file
    # max_shapes=2: dynamo counts its VAE decoder's graph as pipe's decoder's second (one code object)
    again.enable_speed_mode(int8=True, max_shapes=2, cache_dir=tmp_path / "inductor")
    assert np.array_equal(again(**CALL), image)
    assert again.speed.int8.cached_buckets == set(again.speed.int8.graphs)

    with caplog.at_level(logging.WARNING, logger="altdiffusion.pipelines.int8"):
        batch_of_two = pipe(**CALL, num_images_per_prompt=2)  # a second bucket, past max_shapes=1
    assert "runs in float" in caplog.text
    # bf16's UNet; only the decode differs, compiled there and eager in bf16 (int8 gave 44 dB against fp32)
    assert psnr(batch_of_two, bf16(**CALL, num_images_per_prompt=2)) > 50


def test_int8_refuses_weights_that_change_per_call_and_applies_nothing():
    pipe = load_pipeline("mini", "cpu", torch.bfloat16)
    with pytest.raises(InvalidInputError, match="cannot run with freeze=False"):
        pipe.enable_speed_mode(int8=True, freeze=False)
    assert pipe.speed is None and pipe.unet.__dict__.get("_compiled_call_impl") is None
