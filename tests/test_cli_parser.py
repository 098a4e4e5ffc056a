"""The command line's parser: quick to build, and its options become the tasks' settings."""

import subprocess
import sys

import pytest

from altdiffusion.cli import build_parser
from altdiffusion.errors import InvalidInputError
from altdiffusion.training.settings import DiffusionSettings, DreamBoothSettings, dreambooth_train_settings


def test_building_the_parser_imports_no_heavy_library():
    """`altdiffusion --help` must not wait for torch, diffusers or transformers to import."""
    code = (
        "import sys\n"
        "from altdiffusion.cli import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'PIL') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def _dreambooth(*extra):
    return build_parser().parse_args(
        ["train", "dreambooth", "--model", "m", "--instance-images", "i", "--instance-prompt", "p"]
        + ["--output-dir", "out", *extra]
    )


@pytest.mark.parametrize("extra,lr,steps", [((), 1e-4, 500), (("--full",), 5e-6, 400), (("--lr", "0.01"), 0.01, 500)])
def test_dreambooth_learning_rate_and_steps_default_per_mode(extra, lr, steps):
    settings = dreambooth_train_settings(_dreambooth(*extra))
    assert (settings.lr, settings.steps) == (lr, steps)


def test_dreambooth_settings_refuse_class_images_without_their_prompt():
    with pytest.raises(InvalidInputError, match="--class-images needs --class-prompt"):
        DreamBoothSettings.from_args(_dreambooth("--class-images", "c"))


def test_finetune_is_diffusion_training_at_the_finetune_preset():
    args = build_parser().parse_args(
        ["train", "finetune", "--model", "m", "--data", "d", "--output-dir", "out", "--languages", "zh,en"]
    )
    settings = DiffusionSettings.from_args(args)
    assert (settings.base, settings.stage, settings.text_encoder, settings.conditioning) == (
        "m",
        "finetune",
        None,
        None,
    )
    assert settings.languages == {"zh": 1.0, "en": 1.0}
    assert (args.func.module, args.func.task_settings) == ("diffusion", DiffusionSettings)


def _finetune_languages(spec):
    args = build_parser().parse_args(["train", "finetune", "--model", "m", "--data", "d", "--output-dir", "o"])
    args.languages = spec
    return DiffusionSettings.from_args(args).languages


def test_languages_take_sampling_weights():
    assert _finetune_languages("ru:3,en, zh:0.5") == {"ru": 3.0, "en": 1.0, "zh": 0.5}


@pytest.mark.parametrize("spec", ["ru:0", "ru:x", ":2", "en,,zh", "ru:-1", "ru:inf", "ru:nan"])
def test_languages_refuse_a_weight_that_is_not_positive(spec):
    with pytest.raises(InvalidInputError, match=r"--languages: .* positive weight"):
        _finetune_languages(spec)


@pytest.mark.parametrize("extra,grounding", [((), True), (("--grounding",), True), (("--no-grounding",), False)])
def test_mini_build_runs_the_grounding_stages_unless_told_not_to(extra, grounding):
    """The shipped weights come out of the ground-* stages, so the plain command rebuilds them."""
    assert build_parser().parse_args(["mini", "build", *extra]).grounding is grounding
