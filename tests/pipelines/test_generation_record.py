"""The pipeline is the only author of a generation's record: schedule types, LoRA tags, extra
infotext fields, seeds and the partial images of a stopped generation all come from ``__call__``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from altdiffusion.errors import InvalidInputError
from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.pipelines.alt_diffusion import AltDiffusionPipeline, GenerationInterrupted
from altdiffusion.pipelines.infotext import parse_infotext
from altdiffusion.pipelines.lora import LoraLayer, layers_to_kohya
from altdiffusion.pipelines.seeds import MAX_SEED, seed_range

SIZE, STEPS = 32, 3
Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = write_tiny_altdiffusion(tmp_path_factory.mktemp("record") / "m9", "m9", safety_checker=False)
    return AltDiffusionPipeline.from_pretrained(folder, device="cpu")


def run(pipe, prompt="一只猫", **kwargs):
    kwargs = {"num_inference_steps": STEPS, "height": SIZE, "width": SIZE, "seed": 7, "progress": False, **kwargs}
    return pipe(prompt, **kwargs)


def test_schedule_type_builds_the_sampler_with_that_schedule_and_is_recorded(pipe):
    karras = run(pipe, sampler="DPM++ 2M", schedule="Karras")
    builtin = run(pipe, sampler="DPM++ 2M Karras")
    plain = run(pipe, sampler="DPM++ 2M")
    assert np.array_equal(np.asarray(karras.images[0]), np.asarray(builtin.images[0]))
    assert not np.array_equal(np.asarray(karras.images[0]), np.asarray(plain.images[0]))
    _, _, params = parse_infotext(karras.infotexts[0])
    assert (params["Sampler"], params["Schedule type"]) == ("DPM++ 2M", "Karras")
    assert "Schedule type" not in parse_infotext(plain.infotexts[0])[2]


def test_unsupported_schedule_is_one_clear_error(pipe):
    with pytest.raises(InvalidInputError, match="schedule type"):
        run(pipe, sampler="DDIM", schedule="Karras")


def test_extra_infotext_fields_come_before_version(pipe):
    text = run(pipe, extra_infotext={"Styles": "ink, warm"}).infotexts[0]
    params = parse_infotext(text)[2]
    assert params["Styles"] == "ink, warm"
    assert list(params)[-2:] == ["Styles", "Version"]


def test_seeds_wrap_and_a_seed_past_the_range_is_refused(pipe):
    assert seed_range(MAX_SEED, 3) == [MAX_SEED, 0, 1]
    result = run(pipe, seed=MAX_SEED, num_images_per_prompt=2)
    assert result.seeds == [MAX_SEED, 0]
    assert [parse_infotext(t)[2]["Seed"] for t in result.infotexts] == [str(MAX_SEED), "0"]
    with pytest.raises(InvalidInputError, match="at most"):
        run(pipe, seed=MAX_SEED + 1)


def test_a_stopped_generation_carries_its_partial_images_and_record(pipe):
    asked = []
    with pytest.raises(GenerationInterrupted) as stopped:
        run(pipe, num_images_per_prompt=2, should_stop=lambda: asked.append(1) or len(asked) > 2)
    result = stopped.value.result
    assert (result.partial, result.steps_done, result.seeds) == (True, 2, [7, 8])
    assert len(result.images) == 2 and all(img.size == (SIZE, SIZE) for img in result.images)
    assert parse_infotext(result.infotexts[1])[2]["Seed"] == "8"
    with pytest.raises(GenerationInterrupted) as at_once:
        run(pipe, should_stop=lambda: True)
    assert (at_once.value.result.images, at_once.value.result.steps_done) == ([], 0)
    finished = run(pipe, sampler="Euler")  # (PLMS takes one step more than asked: steps + 1 timesteps)
    assert (finished.partial, finished.steps_done) == (False, STEPS)


def test_lora_tags_condition_without_the_tag_and_are_recorded_with_hashes(pipe, tmp_path):
    from safetensors.torch import save_file

    rank, width = 2, pipe.unet.get_submodule(Q).in_features
    down = torch.randn(rank, width, generator=torch.Generator().manual_seed(0))
    up = torch.randn(width, rank, generator=torch.Generator().manual_seed(1))
    tensors, metadata = layers_to_kohya([LoraLayer("unet", Q, down, up, float(rank))])
    save_file(tensors, str(tmp_path / "ink.safetensors"), metadata=metadata)
    with pytest.raises(InvalidInputError, match="'ink', which is not loaded"):
        run(pipe, "一只猫<lora:ink:1>")
    pipe.load_lora(tmp_path / "ink.safetensors")
    try:
        tagged, untagged = run(pipe, "一只猫<lora:ink:1>"), run(pipe, "一只猫")
    finally:
        pipe.unload_lora()
    assert np.array_equal(np.asarray(tagged.images[0]), np.asarray(untagged.images[0]))
    prompt, _, params = parse_infotext(tagged.infotexts[0])
    assert prompt == "一只猫<lora:ink:1>" and params["Lora hashes"].startswith("ink: ")
    assert pipe.loras == [] and "Lora hashes" not in parse_infotext(run(pipe).infotexts[0])[2]
