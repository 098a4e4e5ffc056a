"""Generating a prompt set for ``eval t2i``: resumable, batched, split across processes.

prompts   TXT: one prompt a line (language from --language); JSONL: one scene a line,
          {"id": "s1", "en": "...", "zh": "...", ...} (MG-18 style, the same scene in each language)
images    OUT/images/<language>/<scene id>-<sample>.png, seed = SEED + scene index * samples + sample,
          so a scene's images have the same seeds in every language and any batching
resume    an image already on disk is never generated again (each file is written atomically)
processes under ``accelerate launch``, PartialState.split_between_processes shares the missing images
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from altdiffusion.errors import InvalidInputError


@dataclass(frozen=True)
class Job:
    scene: str
    language: str
    prompt: str
    seed: int
    path: Path


def read_prompts(path: str | Path, language: str = "en") -> list[tuple[str, dict[str, str]]]:
    """(scene id, {language: prompt}) per scene, in file order."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as err:
        raise InvalidInputError(f"cannot read prompts file {str(path)!r}: {err}") from None
    lines = [line for line in lines if line]
    if path.suffix != ".jsonl":
        return [(f"{i:05d}", {language: line}) for i, line in enumerate(lines)]
    scenes = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            prompts = row.get("prompts", {k: v for k, v in row.items() if k != "id"})
            prompts = {k: v for k, v in prompts.items() if isinstance(v, str) and v.strip()}
        except (ValueError, AttributeError):
            prompts = None
        if not prompts:
            raise InvalidInputError(f'{path}:{number}: expected {{"id": ..., "en": PROMPT, "zh": PROMPT, ...}}')
        scene = re.sub(r"[^\w.-]+", "-", str(row.get("id", f"{number - 1:05d}")))
        scenes.append((scene, prompts))
    return scenes


def plan(scenes, out: Path, *, languages=None, samples: int = 1, seed: int = 0) -> list[Job]:
    """Every image the evaluation needs, in (language, scene, sample) order."""
    present = list(dict.fromkeys(lang for _, prompts in scenes for lang in prompts))
    languages = languages or present
    missing = [lang for lang in languages if lang not in present]
    if missing:
        raise InvalidInputError(f"the prompt set has no prompts in {', '.join(missing)}; it has {', '.join(present)}")
    return [
        Job(scene, lang, prompts[lang], seed + i * samples + s, out / "images" / lang / f"{scene}-{s}.png")
        for lang in languages
        for i, (scene, prompts) in enumerate(scenes)
        if lang in prompts
        for s in range(samples)
    ]


def record_settings(out: Path, settings: dict) -> None:
    """Write ``settings`` to OUT/settings.json, or check that the images there were made with them."""
    path = out / "settings.json"
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
        if changed:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise InvalidInputError(
                f"{out} holds images made with other settings ({what}); use another --out, or the same settings"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".settings.json.partial-{os.getpid()}"
    partial.write_text(json.dumps(settings, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, path)


def batches(jobs: list[Job], size: int) -> list[list[Job]]:
    """Runs of jobs the pipeline can make in one call: one language, consecutive seeds (image i of a
    batch gets seed + i), at most ``size``."""
    groups: list[list[Job]] = []
    for job in jobs:
        last = groups[-1] if groups else None
        if last and len(last) < size and last[-1].language == job.language and last[-1].seed + 1 == job.seed:
            last.append(job)
        else:
            groups.append([job])
    return groups


def process_state(device=None):
    """accelerate's view of the processes. It forms a gloo group from torchrun's / ``accelerate launch``'s
    environment only when told it runs on CPU; otherwise every CPU process would think it is alone."""
    import torch
    from accelerate import PartialState

    on_cpu = str(device).startswith("cpu") or not (torch.cuda.is_available() or torch.backends.mps.is_available())
    return PartialState(cpu=on_cpu)


def missing(jobs: list[Job]) -> list[Job]:
    """The jobs whose image is not on disk yet. Every process must take this list before any of them
    writes (the caller waits for everyone in between): split_between_processes cuts each process's
    own copy, and lists read at different moments would be cut differently, leaving images unmade."""
    return [job for job in jobs if not job.path.is_file()]


def generate(pipe, todo: list[Job], *, state, batch_size: int, settings: dict, total: int) -> int:
    """Make the images of ``todo`` (taken by :func:`missing` on every process), this process's share
    of them; how many it made. ``total``: how many jobs the run has, for the summary line."""
    from altdiffusion.pipelines.infotext import write_png

    made = 0
    with state.split_between_processes(todo) as mine:
        groups = batches(list(mine), batch_size)
        for group in tqdm(groups, desc="generating", unit="batch", disable=not state.is_local_main_process):
            result = pipe([j.prompt for j in group], seed=group[0].seed, progress=False, **settings)
            for job, image, infotext in zip(group, result.images, result.infotexts):
                write_png(image, job.path, infotext)
            made += len(group)
    rank = f"process {state.process_index + 1}/{state.num_processes}: " if state.num_processes > 1 else ""
    print(f"{rank}generated {made} image(s); {total - len(todo)} were already there", flush=True)
    state.wait_for_everyone()
    return made
