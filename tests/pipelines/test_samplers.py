"""A1111 sampler names -> diffusers schedulers built on the checkpoint's noise schedule."""

import re

import pytest
from diffusers.configuration_utils import FrozenDict

from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines import samplers
from altdiffusion.pipelines.samplers import (
    SAMPLERS,
    available_samplers,
    canonical_sampler_name,
    make_scheduler,
    sampler_table_markdown,
)

# The scheduler config shipped with the SD-1 / AltDiffusion checkpoints.
PNDM_CONFIG = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "trained_betas": None,
}

EXPECTED = {  # class, timesteps for set_timesteps(20) as diffusers 0.42 produces them
    "Euler": ("EulerDiscreteScheduler", 20),
    "Euler a": ("EulerAncestralDiscreteScheduler", 20),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", 20),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", 20),
    "DPM++ SDE": ("DPMSolverSDEScheduler", 39),  # second order: 2n - 1
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", 20),
    "DDIM": ("DDIMScheduler", 20),
    "PLMS": ("PNDMScheduler", 21),  # PLMS repeats its first timestep
    "LMS": ("LMSDiscreteScheduler", 20),
    "LMS Karras": ("LMSDiscreteScheduler", 20),
    "Heun": ("HeunDiscreteScheduler", 39),  # second order: 2n - 1
    "DPM2": ("KDPM2DiscreteScheduler", 39),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", 39),
    "UniPC": ("UniPCMultistepScheduler", 20),
}


def test_table_covers_the_requested_samplers_in_order():
    assert list(SAMPLERS) == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_sampler_builds_from_the_pndm_config(name):
    spec = SAMPLERS[name]
    if spec.missing_packages():
        with pytest.raises(InvalidInputError, match=f"pip install {spec.missing_packages()[0]}"):
            make_scheduler(name, PNDM_CONFIG)
        pytest.skip(f"{name} needs {spec.missing_packages()}")
    cls_name, n_timesteps = EXPECTED[name]
    scheduler = make_scheduler(name, PNDM_CONFIG)
    assert type(scheduler).__name__ == cls_name
    cfg = scheduler.config
    assert (cfg.beta_start, cfg.beta_end, cfg.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert cfg.num_train_timesteps == 1000 and cfg.steps_offset == 1
    assert cfg.timestep_spacing == "leading"
    scheduler.set_timesteps(20)
    assert len(scheduler.timesteps) == n_timesteps
    assert scheduler.timesteps.max() < 1000


@pytest.mark.parametrize("name", ["Euler", "Euler a", "DDIM", "PLMS", "Heun"])
def test_leading_spacing_with_offset_matches_published_pipelines(name):
    scheduler = make_scheduler(name, PNDM_CONFIG)
    scheduler.set_timesteps(20)
    assert float(scheduler.timesteps[0]) == 951.0
    assert float(scheduler.timesteps[-1]) == 1.0


def test_fresh_scheduler_each_call():
    a = make_scheduler("Euler", PNDM_CONFIG)
    b = make_scheduler("Euler", PNDM_CONFIG)
    assert a is not b


def test_base_class_settings_do_not_leak():
    # PNDM-only keys are not passed on; DDIM gets SD's settings explicitly
    # (diffusers' DDIM default clip_sample=True would change images).
    ddim = make_scheduler("DDIM", {k: v for k, v in PNDM_CONFIG.items() if k != "clip_sample"})
    assert ddim.config.clip_sample is False and ddim.config.set_alpha_to_one is False
    euler = make_scheduler("Euler", PNDM_CONFIG)
    assert "skip_prk_steps" not in euler.config and "set_alpha_to_one" not in euler.config
    plms = make_scheduler("PLMS", {**PNDM_CONFIG, "skip_prk_steps": False})
    assert plms.config.skip_prk_steps is True


def test_previous_sampler_settings_do_not_leak():
    karras_sde = make_scheduler("DPM++ 2M SDE", PNDM_CONFIG, "Karras")
    assert karras_sde.config.use_karras_sigmas is True
    plain = make_scheduler("DPM++ 2M", karras_sde.config)
    assert plain.config.use_karras_sigmas is False
    assert plain.config.algorithm_type == "dpmsolver++"
    euler = make_scheduler("Euler", karras_sde)  # a scheduler object works too
    assert euler.config.use_karras_sigmas is False


def test_model_prediction_type_and_frozendict_are_kept():
    base = FrozenDict({**PNDM_CONFIG, "prediction_type": "v_prediction"})
    for name in available_samplers():
        assert make_scheduler(name, base).config.prediction_type == "v_prediction", name


@pytest.mark.parametrize("name", ["DPM++ 2M Karras", "LMS Karras"])
def test_karras_variants_set_karras_sigmas(name):
    spec = SAMPLERS[name]
    assert spec.kwargs["use_karras_sigmas"] is True
    if spec.missing_packages():
        pytest.skip(f"{name} needs {spec.missing_packages()}")
    scheduler = make_scheduler(name, PNDM_CONFIG)
    assert scheduler.config.use_karras_sigmas is True
    plain = make_scheduler(name.removesuffix(" Karras"), PNDM_CONFIG)
    assert plain.config.use_karras_sigmas is False


def test_karras_schedule_type_equals_karras_sampler():
    a = make_scheduler("DPM++ 2M", PNDM_CONFIG, "Karras")
    b = make_scheduler("DPM++ 2M Karras", PNDM_CONFIG, "Automatic")
    a.set_timesteps(20)
    b.set_timesteps(20)
    assert a.config.use_karras_sigmas is True
    assert a.sigmas.tolist() == b.sigmas.tolist()


def test_schedule_types():
    assert make_scheduler("Euler", PNDM_CONFIG, None).config.use_karras_sigmas is False
    assert make_scheduler("Euler", PNDM_CONFIG, "exponential").config.use_exponential_sigmas is True
    assert make_scheduler("UniPC", PNDM_CONFIG, "karras").config.use_karras_sigmas is True
    assert make_scheduler("DPM++ 2M Karras", PNDM_CONFIG, "Karras").config.use_karras_sigmas is True
    sgm = make_scheduler("Euler", PNDM_CONFIG, "SGM Uniform")
    assert sgm.config.timestep_spacing == "trailing"
    uniform = make_scheduler("Euler", PNDM_CONFIG, "Uniform")
    uniform.set_timesteps(20)
    assert float(uniform.timesteps[0]) == 999.0 and float(uniform.timesteps[-1]) == 0.0


@pytest.mark.parametrize(
    "name, schedule, needle",
    [
        ("Euler a", "Karras", "does not support schedule type 'Karras'"),
        ("DDIM", "Exponential", "does not support schedule type 'Exponential'"),
        ("DPM++ 2M Karras", "Exponential", "choose sampler 'DPM++ 2M'"),
        ("Euler", "Align Your Steps", "unknown schedule type 'Align Your Steps'; use one of: Automatic, Karras"),
    ],
)
def test_bad_schedule_types_raise(name, schedule, needle):
    with pytest.raises(InvalidInputError, match=re.escape(needle)):
        make_scheduler(name, PNDM_CONFIG, schedule)


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("k_euler_a", "Euler a"),
        ("euler_a", "Euler a"),
        ("EULER A", "Euler a"),
        ("k_euler", "Euler"),
        ("dpmpp_2m", "DPM++ 2M"),
        ("k_dpmpp_2m", "DPM++ 2M"),
        ("k_dpmpp_2m_ka", "DPM++ 2M Karras"),
        ("dpm++ 2m karras", "DPM++ 2M Karras"),
        ("k_dpmpp_2m_sde", "DPM++ 2M SDE"),
        ("k_dpmpp_sde", "DPM++ SDE"),
        ("ddim", "DDIM"),
        ("plms", "PLMS"),
        ("pndm", "PLMS"),
        ("unipc", "UniPC"),
        ("k_lms", "LMS"),
        ("k_lms_ka", "LMS Karras"),
        ("k_heun", "Heun"),
        ("k_dpm_2", "DPM2"),
        ("k_dpm_2_a", "DPM2 a"),
        ("  Euler  ", "Euler"),
    ],
)
def test_aliases_resolve(alias, canonical):
    assert canonical_sampler_name(alias) == canonical


def test_aliases_are_unambiguous():
    owners = {}
    for name, spec in SAMPLERS.items():
        for alias in (name, *spec.aliases):
            owners.setdefault(samplers._key(alias), set()).add(name)
    assert {k: v for k, v in owners.items() if len(v) > 1} == {}
    assert samplers._key("DPM++ 2M") == samplers._key("k_dpmpp_2m") != samplers._key("DPM2")


@pytest.mark.parametrize("bad", ["Euler b", "", "dpm++ 3m", None])
def test_unknown_names_list_valid_ones(bad):
    with pytest.raises(InvalidInputError) as info:
        canonical_sampler_name(bad)
    message = str(info.value)
    assert f"unknown sampler {bad!r}" in message
    for name in SAMPLERS:
        assert name in message
    with pytest.raises(InvalidInputError):
        make_scheduler(bad, PNDM_CONFIG)


def test_missing_optional_package_is_reported(monkeypatch):
    real = samplers.importlib.util.find_spec
    monkeypatch.setattr(
        samplers.importlib.util, "find_spec", lambda name, *a: None if name == "torchsde" else real(name, *a)
    )
    assert "DPM++ SDE" not in available_samplers()
    assert "Euler a" in available_samplers()
    with pytest.raises(InvalidInputError, match=r"needs the Python package\(s\) torchsde.*pip install torchsde"):
        make_scheduler("k_dpmpp_sde", PNDM_CONFIG)


def test_table_markdown():
    table = sampler_table_markdown().splitlines()
    assert table[0] == "| A1111 name | diffusers scheduler | options |"
    assert len(table) == 2 + len(SAMPLERS)
    assert "| DPM++ 2M Karras | `DPMSolverMultistepScheduler` | `use_karras_sigmas=True` |" in table
    assert "| DPM++ SDE | `DPMSolverSDEScheduler` | needs `torchsde` |" in table
    assert "| PLMS | `PNDMScheduler` | `skip_prk_steps=True`, `set_alpha_to_one=False` |" in table
