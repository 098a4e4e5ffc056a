"""The int8 calibration cache (pipelines/int8_ranges.py) on a small conv-and-linear model prepared by
torchao's real PT2E flow: ranges read back convert to a bit-identical graph, keys follow every
weight, and a file that does not fit is refused with a warning. (The full UNet's round trip across
pipelines is in test_int8.py.)"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from altdiffusion.pipelines.int8 import _quantizer, import_torchao
from altdiffusion.pipelines.int8_ranges import RangeCache, calibration_key, observer_state, weights_digest

EXAMPLE = (torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)),)


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.linear = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.linear(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def prepared(model: torch.nn.Module) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    return prepare_pt2e(torch.export.export(model, EXAMPLE).module(), _quantizer())


@pytest.fixture(scope="module")
def model():
    import_torchao()
    torch.manual_seed(0)
    return Small().eval()


def calibrated(model) -> torch.fx.GraphModule:
    observed = prepared(model)
    for seed in range(3):
        observed(torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed + 1)) * (seed + 1))
    return observed


def test_cached_ranges_convert_to_the_same_graph(model, tmp_path):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    cache = RangeCache(tmp_path / "ranges")
    observed = calibrated(model)
    cache.save("k", observed)
    assert [p.name for p in (tmp_path / "ranges").iterdir()] == ["k.safetensors"]  # no temporary left

    fresh = prepared(model)
    state = cache.read("k", fresh)
    assert state is not None and cache.read("other", fresh) is None
    fresh.load_state_dict(state, strict=False)
    loaded, saved = observer_state(fresh), observer_state(observed)
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[name], saved[name]) for name in saved)  # eps too: 2**-12, not float32's
    expected = convert_pt2e(observed)(*EXAMPLE)
    assert torch.equal(convert_pt2e(fresh)(*EXAMPLE), expected)
    with pytest.warns(UserWarning, match="must run observer"):
        uncalibrated = convert_pt2e(prepared(model))
    assert not torch.equal(uncalibrated(*EXAMPLE), expected)


def test_keys_follow_every_weight_the_recipe_and_the_conditioning(model):
    changed = Small().eval()
    changed.load_state_dict(model.state_dict())
    digest = weights_digest(model)
    assert weights_digest(changed) == digest
    with torch.no_grad():
        changed.linear.bias[3] += 1e-3
    float_digest = weights_digest(changed)
    assert float_digest != digest
    assert weights_digest(changed.to(torch.bfloat16)) != float_digest

    cond = [torch.ones(1, 77, 8)]
    key = calibration_key(digest, {"bucket": (2, 4, 8, 8, 77, 8)}, cond)
    assert key == calibration_key(digest, {"bucket": (2, 4, 8, 8, 77, 8)}, [torch.ones(1, 77, 8)])
    assert key != calibration_key(digest, {"bucket": (2, 4, 8, 16, 77, 8)}, cond)
    assert key != calibration_key(digest, {"bucket": (2, 4, 8, 8, 77, 8)}, [torch.ones(1, 77, 8) * 2])


RECIPE_IN_A_NEW_PROCESS = """
import json
from diffusers import PNDMScheduler
from altdiffusion.models.tiny import SCHEDULER_CONFIG
from altdiffusion.pipelines.int8 import calibration_recipe
config = PNDMScheduler.from_config({k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")}).config
assert len(config["_use_default_values"]) > 1  # a list made from a set: its order follows the hash seed
print(json.dumps(calibration_recipe((2, 4, 32, 32, 77, 768), config), sort_keys=True))
"""


def test_a_recipe_is_the_same_in_every_process():
    recipes = {
        subprocess.run(
            [sys.executable, "-c", RECIPE_IN_A_NEW_PROCESS], env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()[-1]
        for seed in range(4)
    }  # fmt: skip
    assert len(recipes) == 1, recipes  # else a new process would never find an earlier one's ranges
    (recipe,) = recipes
    assert json.loads(recipe)["bucket"] == [2, 4, 32, 32, 77, 768]
    assert json.loads(recipe)["scheduler"]["beta_schedule"] == "scaled_linear"


def test_a_file_that_does_not_fit_is_refused_with_a_warning(model, tmp_path, caplog):
    cache = RangeCache(tmp_path)
    fresh = prepared(model)
    cache.path("torn").write_bytes(b"\x00" * 40)
    cache.save("partial", calibrated(model))
    state = cache.read("partial", fresh)
    cache.save("partial", torch.nn.ModuleDict({"activation_post_process_0": torch.nn.Linear(1, 1)}))
    with caplog.at_level(logging.WARNING, logger="altdiffusion.pipelines.int8_ranges"):
        assert cache.read("torn", fresh) is None
        assert cache.read("partial", fresh) is None
    assert state is not None
    assert caplog.text.count("ignoring the cached calibration") == 2
    assert "torn.safetensors" in caplog.text and "observer tensors" in caplog.text


def test_an_unwritable_folder_costs_a_warning_not_the_quantization(model, tmp_path, caplog):
    (tmp_path / "file").write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="altdiffusion.pipelines.int8_ranges"):
        RangeCache(tmp_path / "file" / "ranges").save("k", calibrated(model))
    assert "could not cache the calibration" in caplog.text


def test_the_folder_keeps_the_most_recently_used_files(model, tmp_path):
    cache, observed = RangeCache(tmp_path, max_files=2), calibrated(model)
    cache.save("old", observed)
    cache.save("read", observed)
    os.utime(cache.path("old"), (1000, 1000))
    os.utime(cache.path("read"), (999, 999))  # written before "old", but read since:
    assert cache.read("read", prepared(model)) is not None
    cache.save("new", observed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.safetensors", "read.safetensors"]
