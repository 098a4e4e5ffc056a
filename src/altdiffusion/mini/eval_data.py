"""The mini report's evaluation data written in the layouts ``altdiffusion eval`` reads, so that
``eval zeroshot`` / ``eval retrieval`` on it reproduce the report's zero-shot and R@1 figures, and
``eval t2i`` has a prompt set (a scene a line, a caption per language) and the scenes' renders.

    OUT/zeroshot-wds-<lang>/      clip_benchmark webdataset: classnames.txt (the 40 phrases in <lang>),
                                  zeroshot_classification_templates.txt ("{c}"), test/0.tar (KEY.png + KEY.cls)
    OUT/zeroshot-folder/          NN-<colour>-<shape>/*.png, classnames-<lang>.txt, templates.txt
    OUT/retrieval/                images/*.png, captions.jsonl (a caption per language), captions-<lang>.tsv
    OUT/retrieval-wds-<lang>/     clip_benchmark retrieval webdataset (KEY.png + KEY.txt)
    OUT/t2i/                      prompts.jsonl ({"id", "en", "zh", ...}), reference/*.png (renders)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from altdiffusion.mini import evaluate, world


def _write_wds(folder: Path, samples: list[tuple[bytes, str, str]], extra: dict[str, str]) -> None:
    """clip_benchmark's layout: ``samples`` = (png, label extension, label text)."""
    (folder / "test").mkdir(parents=True, exist_ok=True)
    members = []
    for index, (png, ext, label) in enumerate(samples):
        members += [(f"s{index:07d}.png", png), (f"s{index:07d}.{ext}", label.encode())]
    world._write_tar(folder / "test" / "0.tar", members)
    (folder / "test" / "nshards.txt").write_text("1\n")
    for name, text in extra.items():
        (folder / name).write_text(text, encoding="utf-8")


def write_zeroshot(out: Path, *, seed: int = 0, n: int = 200) -> None:
    scenes = evaluate.zero_shot_scenes(seed, n)
    pngs = [world.png_bytes(im) for im in evaluate.eval_images(scenes, seed + 1)]
    labels = [evaluate.ZERO_SHOT_LABELS.index((s.things[0].colour, s.things[0].shape)) for s in scenes]
    for lang in world.LANGUAGES:
        names = "\n".join(world.phrase(c, s, lang) for c, s in evaluate.ZERO_SHOT_LABELS) + "\n"
        samples = [(png, "cls", str(label)) for png, label in zip(pngs, labels)]
        _write_wds(
            out / f"zeroshot-wds-{lang}",
            samples,
            {"classnames.txt": names, "zeroshot_classification_templates.txt": "{c}\n"},
        )
        (out / "zeroshot-folder").mkdir(parents=True, exist_ok=True)
        (out / "zeroshot-folder" / f"classnames-{lang}.txt").write_text(names, encoding="utf-8")
    (out / "zeroshot-folder" / "templates.txt").write_text("{c}\n")
    # Every class gets its folder, images or not: sorted folder names are the class indices.
    folders = [out / "zeroshot-folder" / f"{i:02d}-{c}-{s}" for i, (c, s) in enumerate(evaluate.ZERO_SHOT_LABELS)]
    for folder in folders:
        folder.mkdir(exist_ok=True)
    for index, (png, label) in enumerate(zip(pngs, labels)):
        (folders[label] / f"{index:04d}.png").write_bytes(png)


def write_retrieval(out: Path, *, seed: int = 0, n: int = 200) -> None:
    scenes = evaluate.retrieval_scenes(seed, n)
    pngs = [world.png_bytes(im) for im in evaluate.eval_images(scenes, seed)]
    (out / "retrieval" / "images").mkdir(parents=True, exist_ok=True)
    rows, tsv = [], {lang: [] for lang in world.LANGUAGES}
    for index, (png, scene) in enumerate(zip(pngs, scenes)):
        name = f"images/{index:04d}.png"
        (out / "retrieval" / name).write_bytes(png)
        captions = {lang: world.caption(scene, lang, 0) for lang in world.LANGUAGES}
        rows.append(json.dumps({"image": name, "captions": captions}, ensure_ascii=False))
        for lang, text in captions.items():
            tsv[lang].append(f"{name}\t{text}\t{lang}")
    (out / "retrieval" / "captions.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    for lang in world.LANGUAGES:
        (out / "retrieval" / f"captions-{lang}.tsv").write_text("\n".join(tsv[lang]) + "\n", encoding="utf-8")
        samples = [(png, "txt", world.caption(s, lang, 0)) for png, s in zip(pngs, scenes)]
        _write_wds(out / f"retrieval-wds-{lang}", samples, {"dataset_type.txt": "retrieval\n"})


def write_t2i(out: Path, *, seed: int = 0, n: int = 32) -> None:
    """Seen one-thing scenes (the report's generation scene set), captions and a render of each."""
    scenes = evaluate.generation_scenes(seed, n)
    (out / "t2i" / "reference").mkdir(parents=True, exist_ok=True)
    rows = []
    for index, scene in enumerate(scenes):
        rows.append(
            json.dumps(
                {"id": f"{index:04d}", **{lang: world.caption(scene, lang, 0) for lang in world.LANGUAGES}},
                ensure_ascii=False,
            )
        )
        image = world.render(scene, random.Random(f"reference-{seed}-{index}"))
        (out / "t2i" / "reference" / f"{index:04d}.png").write_bytes(world.png_bytes(image))
    (out / "t2i" / "prompts.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")


def write_eval_data(out: str | Path, *, seed: int = 0, n: int = 200, t2i_scenes: int = 32) -> Path:
    out = Path(out)
    write_zeroshot(out, seed=seed, n=n)
    write_retrieval(out, seed=seed, n=n)
    write_t2i(out, seed=seed, n=t2i_scenes)
    return out
