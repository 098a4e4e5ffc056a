"""AUTOMATIC1111 sampler names mapped onto diffusers schedulers.

Users (and infotexts pasted from A1111) name samplers "Euler a" or "DPM++ 2M Karras";
diffusers names scheduler classes. This module is the one table between the two.

Choices, so results are comparable with the published AltDiffusion pipelines:

* A new scheduler keeps only the checkpoint's *noise schedule* (betas, number of
  training steps, ``steps_offset``, ``prediction_type``) from the base config. Settings
  of the base class (PNDM's ``skip_prk_steps``, ``set_alpha_to_one``, a previous
  sampler's ``use_karras_sigmas``...) are dropped, then each sampler adds its own.
* ``timestep_spacing`` is ``"leading"`` for every sampler: it is what the published
  pipelines' PNDM config uses (and what diffusers' SD schedulers did when AltDiffusion
  was released; ``X.from_config(pipe.scheduler.config)`` inherits it), so e.g. 20 Euler
  steps sample t = 951, 901, ..., 1. The schedule types "Uniform" (A1111's k-diffusion
  default: ``"linspace"``, t = 999 ... 0) and "SGM Uniform" (``"trailing"``) change it.
* "Schedule type" (A1111's separate setting) maps to ``use_karras_sigmas`` /
  ``use_exponential_sigmas`` where the class supports it; "Automatic" keeps the
  sampler's own default.
* "DPM++ SDE" draws Brownian noise from the scheduler's own ``noise_sampler_seed``,
  not from the pipeline's generator: set it for reproducible images.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import diffusers

from altdiffusion.errors import InvalidInputError

# Keys of a scheduler config that describe the trained model, not the sampler.
NOISE_SCHEDULE_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "steps_offset",
    "rescale_betas_zero_snr",
)
DEFAULT_TIMESTEP_SPACING = "leading"


@dataclass(frozen=True)
class SamplerSpec:
    """One A1111 sampler: which diffusers class, with which settings."""

    scheduler: str  # diffusers class name, e.g. "EulerDiscreteScheduler"
    kwargs: Mapping[str, object] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    description: str = ""
    requires: tuple[str, ...] = ()  # importable modules the class needs at run time

    @property
    def scheduler_class(self) -> type:
        return getattr(diffusers, self.scheduler)

    def missing_packages(self) -> list[str]:
        return [name for name in self.requires if importlib.util.find_spec(name) is None]


def _spec(scheduler: str, description: str, *aliases: str, requires: tuple[str, ...] = (), **kwargs) -> SamplerSpec:
    return SamplerSpec(scheduler, MappingProxyType(kwargs), aliases, description, requires)


# Aliases are A1111's own (k_...) plus the usual short spellings; matching ignores case,
# spaces, '_' and '-', and "++" equals "pp" (see _key).
SAMPLERS: Mapping[str, SamplerSpec] = MappingProxyType(
    {
        "Euler": _spec("EulerDiscreteScheduler", "Euler method; deterministic", "k_euler"),
        "Euler a": _spec(
            "EulerAncestralDiscreteScheduler",
            "Euler ancestral; adds fresh noise every step",
            "k_euler_a",
            "k_euler_ancestral",
        ),
        "DPM++ 2M": _spec("DPMSolverMultistepScheduler", "DPM-Solver++ second-order multistep", "k_dpmpp_2m"),
        "DPM++ 2M Karras": _spec(
            "DPMSolverMultistepScheduler",
            "DPM++ 2M on the Karras noise schedule",
            "k_dpmpp_2m_ka",
            use_karras_sigmas=True,
        ),
        "DPM++ SDE": _spec(
            "DPMSolverSDEScheduler",
            "DPM++ stochastic (Brownian-tree noise); second order",
            "k_dpmpp_sde",
            requires=("torchsde",),
        ),
        "DPM++ 2M SDE": _spec(
            "DPMSolverMultistepScheduler",
            "DPM++ 2M with stochastic (SDE) steps",
            "k_dpmpp_2m_sde",
            algorithm_type="sde-dpmsolver++",
        ),
        "DDIM": _spec("DDIMScheduler", "DDIM; deterministic", "ddim", clip_sample=False, set_alpha_to_one=False),
        "PLMS": _spec(
            "PNDMScheduler",
            "pseudo linear multistep (the published default)",
            "plms",
            "pndm",
            skip_prk_steps=True,
            set_alpha_to_one=False,
        ),
        "LMS": _spec("LMSDiscreteScheduler", "linear multistep", "k_lms", requires=("scipy",)),
        "LMS Karras": _spec(
            "LMSDiscreteScheduler",
            "LMS on the Karras noise schedule",
            "k_lms_ka",
            requires=("scipy",),
            use_karras_sigmas=True,
        ),
        "Heun": _spec("HeunDiscreteScheduler", "Heun's method; 2 model calls per step", "k_heun"),
        "DPM2": _spec("KDPM2DiscreteScheduler", "DPM-Solver-2; 2 model calls per step", "k_dpm_2"),
        "DPM2 a": _spec(
            "KDPM2AncestralDiscreteScheduler",
            "DPM-Solver-2 ancestral; 2 model calls per step",
            "k_dpm_2_a",
            "dpm2_ancestral",
        ),
        "UniPC": _spec("UniPCMultistepScheduler", "UniPC predictor-corrector multistep", "unipc"),
    }
)

# A1111 "Schedule type" -> extra scheduler settings (None: needs no class support).
SCHEDULE_TYPES: Mapping[str, tuple[str | None, dict[str, object]]] = MappingProxyType(
    {
        "Automatic": (None, {}),
        "Karras": ("use_karras_sigmas", {"use_karras_sigmas": True}),
        "Exponential": ("use_exponential_sigmas", {"use_exponential_sigmas": True}),
        "Uniform": ("timestep_spacing", {"timestep_spacing": "linspace"}),  # k-diffusion's default
        "SGM Uniform": ("timestep_spacing", {"timestep_spacing": "trailing"}),
    }
)


def _key(name: str) -> str:
    """Normalise a spelling: "K_DPM++_2M" -> "dpmpp2m"."""
    key = name.strip().lower().replace("++", "pp")
    key = key[2:] if key.startswith("k_") else key
    return re.sub(r"[\s_\-]+", "", key)


_LOOKUP = {_key(alias): name for name, spec in SAMPLERS.items() for alias in (name, *spec.aliases)}
_SCHEDULE_LOOKUP = {_key(name): name for name in SCHEDULE_TYPES}


def canonical_sampler_name(name: str) -> str:
    """The A1111 name for any accepted spelling ("k_euler_a" -> "Euler a")."""
    found = _LOOKUP.get(_key(name)) if isinstance(name, str) else None
    if found is None:
        raise InvalidInputError(
            f"unknown sampler {name!r}; use one of: {', '.join(SAMPLERS)} "
            "(A1111 aliases such as k_euler_a or dpmpp_2m also work)"
        )
    return found


def available_samplers() -> list[str]:
    """Sampler names whose optional packages are installed, in table order."""
    return [name for name, spec in SAMPLERS.items() if not spec.missing_packages()]


def make_scheduler(name: str, base_config: Mapping[str, object], schedule_type: str | None = None):
    """A fresh diffusers scheduler for sampler ``name`` on the model's noise schedule.

    ``base_config`` is the pipeline's scheduler config (``pipe.scheduler.config``);
    ``schedule_type`` is A1111's "Schedule type" (None or "Automatic": sampler default).
    """
    canonical = canonical_sampler_name(name)
    spec = SAMPLERS[canonical]
    missing = spec.missing_packages()
    if missing:
        raise InvalidInputError(
            f"sampler {canonical!r} needs the Python package(s) {', '.join(missing)}, which are not "
            f"installed; run `pip install {' '.join(missing)}` or pick one of: {', '.join(available_samplers())}"
        )
    cls = spec.scheduler_class
    accepted = set(inspect.signature(cls.__init__).parameters)
    config = dict(getattr(base_config, "config", base_config))
    kwargs = {k: config[k] for k in NOISE_SCHEDULE_KEYS if k in config and k in accepted}
    kwargs["timestep_spacing"] = DEFAULT_TIMESTEP_SPACING
    kwargs.update(spec.kwargs)
    kwargs.update(_schedule_kwargs(canonical, spec, schedule_type, accepted))
    return cls.from_config(kwargs)


def _schedule_kwargs(canonical: str, spec: SamplerSpec, schedule_type: str | None, accepted: set[str]) -> dict:
    """Settings for A1111's "Schedule type", or InvalidInputError if it cannot apply."""
    schedule = _SCHEDULE_LOOKUP.get(_key(schedule_type)) if isinstance(schedule_type, str) else None
    if schedule_type is None or schedule == "Automatic":
        return {}
    if schedule is None:
        raise InvalidInputError(f"unknown schedule type {schedule_type!r}; use one of: {', '.join(SCHEDULE_TYPES)}")
    needed, extra = SCHEDULE_TYPES[schedule]
    if spec.kwargs.get("use_karras_sigmas") and schedule != "Karras":
        base = canonical.removesuffix(" Karras")
        raise InvalidInputError(
            f"sampler {canonical!r} already uses the Karras schedule; for schedule type "
            f"{schedule!r} choose sampler {base!r} instead"
        )
    if needed is not None and needed not in accepted:
        supported = [s for s, (n, _) in SCHEDULE_TYPES.items() if n is None or n in accepted]
        raise InvalidInputError(
            f"sampler {canonical!r} ({spec.scheduler}) does not support schedule type {schedule!r}; "
            f"use one of: {', '.join(supported)}, or another sampler"
        )
    return dict(extra)


def sampler_table_markdown() -> str:
    """Markdown table of the samplers for the README."""
    rows = ["| A1111 name | diffusers scheduler | options |", "|---|---|---|"]
    for name, spec in SAMPLERS.items():
        options = [f"`{k}={v!r}`" for k, v in spec.kwargs.items()]
        if spec.requires:
            options.append("needs " + ", ".join(f"`{r}`" for r in spec.requires))
        rows.append(f"| {name} | `{spec.scheduler}` | {', '.join(options) or '—'} |")
    return "\n".join(rows)


def sampler_name_for(scheduler) -> str:
    """The A1111 name of a scheduler object (its class's first entry in SAMPLERS)."""
    cls = type(scheduler).__name__
    return next((name for name, spec in SAMPLERS.items() if spec.scheduler == cls), cls)
