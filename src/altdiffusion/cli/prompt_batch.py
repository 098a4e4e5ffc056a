"""Run a prompt file (``generate --prompts FILE``): resumable, split across ``accelerate launch`` processes.

Work is cut into units, one a line and iteration (A1111's ``n_iter``), each writing
``batch_size`` images named ``<line>-<digest of the line>-<image>.png`` in the output folder:
the names depend only on the file, so a second run skips the units whose images all exist
(a changed line gets a new digest and runs again). Under ``accelerate launch`` every process
takes its share of the units (``PartialState.split_between_processes``) on its own device.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from altdiffusion.cli.prompt_file import PromptLine
from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.seeds import resolve_seed, wrap_seed


@dataclass(frozen=True)
class Unit:
    """One pipeline call of a prompt file: iteration ``iteration`` of ``line``."""

    line: PromptLine
    iteration: int
    batch_size: int

    def paths(self, folder: Path) -> list[Path]:
        first = self.iteration * self.batch_size
        return [folder / f"{self.line.number:05d}-{self.line.key}-{first + i:03d}.png" for i in range(self.batch_size)]


def units_of(lines: list[PromptLine], batch_size: int) -> list[Unit]:
    """Every unit of the file, in order; a line's ``--batch_size`` / ``--n_iter`` override the defaults."""
    units = []
    for line in lines:
        batch = line.settings.get("batch_size", batch_size)
        n_iter = line.settings.get("n_iter", 1)
        if batch < 1 or n_iter < 1:
            raise InvalidInputError(f"prompt file line {line.number}: batch_size and n_iter must be at least 1")
        units += [Unit(line, k, batch) for k in range(n_iter)]
    return units


def output_folder(out: str) -> Path:
    folder = Path(out)
    if folder.suffix.lower() == ".png" and not folder.is_dir():
        raise InvalidInputError(f"--prompts writes many images: --out must be a folder, not {out!r}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def process_state(device: str | None):
    """accelerate's view of this process (one process, unless run under ``accelerate launch``);
    CPU processes (``--device cpu`` or no CUDA) are told so, or accelerate would not see the others."""
    import torch
    from accelerate import PartialState

    on_cpu = (device or "").startswith("cpu") or not torch.cuda.is_available()
    return PartialState(cpu=on_cpu)


def unit_arguments(unit: Unit, defaults: dict) -> dict:
    """The pipeline arguments of ``unit``: the command's, then the line's, with this iteration's seeds
    (A1111: image i of the job has seed + i, or with variation seeds subseed + i)."""
    arguments = {**defaults, **unit.line.settings}
    arguments.pop("batch_size", None)
    arguments.pop("n_iter", None)
    offset = unit.iteration * unit.batch_size
    variation = bool(arguments.get("subseed_strength"))
    seed = arguments.get("seed", -1)
    arguments["seed"] = (
        resolve_seed(seed) if seed is None or seed < 0 else wrap_seed(seed + (0 if variation else offset))
    )
    subseed = arguments.get("subseed", -1)
    if variation and subseed is not None and subseed >= 0:
        arguments["subseed"] = wrap_seed(subseed + offset)
    arguments["num_images_per_prompt"] = unit.batch_size
    return arguments


def run_units(pipe, units: list[Unit], folder: Path, defaults: dict, state) -> int:
    """Generate this process's share of ``units``, skipping those already written; returns images written."""
    from altdiffusion.pipelines.infotext import write_png

    written = skipped = 0
    with state.split_between_processes(units) as mine:
        for unit in mine:
            paths = unit.paths(folder)
            if all(path.is_file() for path in paths):
                skipped += len(paths)
                continue
            try:
                result = pipe(**unit_arguments(unit, defaults))
            except InvalidInputError as exc:  # a setting of the line the pipeline refuses (steps 0, width 65...)
                raise InvalidInputError(f"prompt file line {unit.line.number}: {exc}") from None
            for image, text, path in zip(result.images, result.infotexts, paths):
                write_png(image, path, text)
                print(path)
                written += 1
    if skipped:
        where = f" (process {state.process_index})" if state.num_processes > 1 else ""
        print(f"skipped {skipped} images already in {os.fspath(folder)}{where}", file=sys.stderr)
    return written
