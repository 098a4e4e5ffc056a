"""Prompt files for ``altdiffusion generate --prompts FILE``: one job a line.

A line is either a plain prompt, or A1111's "Prompts from file or textbox" syntax
(scripts/prompts_from_file.py): ``--prompt "a cat" --negative_prompt "blurry" --seed 1 --steps 20``,
split with shell quoting. As in A1111, the words after ``--prompt`` / ``--negative_prompt`` up to
the next ``--option`` join into one prompt. Empty lines are skipped. A line A1111 would reject
(an unknown option, a value that is not a number) stops the run before any model loads, with
one error naming the file and line.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from altdiffusion.errors import InvalidInputError


def _number(kind):
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None

    return convert


def _sampler(text: str) -> str:
    from altdiffusion.pipelines.samplers import canonical_sampler_name

    try:
        return canonical_sampler_name(text)
    except InvalidInputError as exc:
        raise ValueError(str(exc)) from None


# A1111's keys this project honours -> (pipeline argument, converter). A1111's other keys
# (styles, restore_faces, tiling, outpath_*...) have no meaning here and are refused.
OPTIONS = {
    "prompt": ("prompt", str),
    "negative_prompt": ("negative_prompt", str),
    "seed": ("seed", _number(int)),
    "subseed": ("subseed", _number(int)),
    "subseed_strength": ("subseed_strength", _number(float)),
    "seed_resize_from_h": ("seed_resize_from_h", _number(int)),
    "seed_resize_from_w": ("seed_resize_from_w", _number(int)),
    "sampler_name": ("sampler", _sampler),
    "steps": ("num_inference_steps", _number(int)),
    "cfg_scale": ("guidance_scale", _number(float)),
    "width": ("width", _number(int)),
    "height": ("height", _number(int)),
    "batch_size": ("batch_size", _number(int)),
    "n_iter": ("n_iter", _number(int)),
}
_TEXT_OPTIONS = ("prompt", "negative_prompt")


@dataclass(frozen=True)
class PromptLine:
    """One line of a prompt file: its settings under the pipeline's argument names."""

    number: int  # 1-based line number in the file
    text: str  # the line as written (stripped)
    settings: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        """A short digest of the line's text: its images' names change when the line does."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:8]


def read_prompt_file(path: str | Path) -> list[PromptLine]:
    """Every non-empty line of ``path`` (UTF-8), parsed; one InvalidInputError naming the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"--prompts {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"--prompts {path}: cannot read it as UTF-8 text ({exc})") from None
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            lines.append(PromptLine(number, line, parse_line(line)))
        except ValueError as exc:
            raise InvalidInputError(f"{path}, line {number}: {exc}") from None
    if not lines:
        raise InvalidInputError(f"--prompts {path}: the file has no prompts (one prompt or --options line a line)")
    return lines


def parse_line(line: str) -> dict:
    """One line's settings: ``{"prompt": line}`` for a plain prompt, else its ``--options``."""
    if not line.startswith("--"):
        return {"prompt": line}
    words = shlex.split(line)
    settings: dict = {}
    pos = 0
    while pos < len(words):
        option = words[pos]
        if not option.startswith("--"):
            raise ValueError(f"expected an --option, got {option!r}")
        key = option[2:]
        if key not in OPTIONS:
            raise ValueError(f"unknown or unsupported option {option}; supported: --{', --'.join(OPTIONS)}")
        if pos + 1 >= len(words):
            raise ValueError(f"{option} needs a value")
        end = pos + 2
        if key in _TEXT_OPTIONS:  # A1111: the words up to the next --option are one prompt
            while end < len(words) and not words[end].startswith("--"):
                end += 1
        value = " ".join(words[pos + 1 : end])
        name, convert = OPTIONS[key]
        try:
            settings[name] = convert(value)
        except ValueError as exc:
            raise ValueError(f"{option}: {exc}") from None
        pos = end
    return settings
