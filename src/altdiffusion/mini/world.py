"""The mini world: a synthetic, multilingual, captioned image world for small models.

A scene is one or two flat-coloured shapes on a neutral background, 64×64 pixels. Each shape
("thing") has a colour (8), a shape (5) and a size (2). A one-thing scene says where the thing is
(one of 5 positions); a two-thing scene says how the two stand to each other (left of / above).
Eight (colour, shape) pairs are held out of the training split, so that evaluation can ask
whether a model composes attributes it has only seen apart.

Every scene has captions in 9 languages. Template ``t`` of one language is a translation of
template ``t`` of every other, so captions of a sample are parallel text, and every template
names every attribute. Everything is a deterministic function of the seed: shards written
twice are identical byte for byte.

The parts live in scenes.py (attributes, sampling, rendering), vocabulary.py (the words of each
language) and captions.py (noun phrases and templates); this module names them all, as
``world.X``, and writes the files: webdataset shards and parallel text.
"""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from altdiffusion.mini.captions import (
    SHORT,
    SHORT_PROBABILITY,
    TEMPLATES,
    caption,
    captions,
    draw_template,
    n_templates,
    phrase,
    phrase_spans,
)
from altdiffusion.mini.scenes import (
    ALL_PAIRS,
    BACKGROUNDS,
    COLOURS,
    HELD_OUT,
    HELD_OUT_PAIRS,
    IMAGE_SIZE,
    LANGUAGES,
    MIN_GAP,
    POSITION_CENTRES,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZE_EXTENTS,
    SIZES,
    SPLITS,
    SUPERSAMPLE,
    TRAIN_PAIRS,
    Placement,
    Scene,
    Thing,
    draw_placed,
    draw_shape,
    placements,
    render,
    sample_scene,
    scene_key,
    scenes_for_eval,
    shape_box,
    unit_polygon,
)
from altdiffusion.mini.vocabulary import words

__all__ = [  # what world.X names: the names below, and those of scenes, words and captions
    "ALL_PAIRS",
    "BACKGROUNDS",
    "COLOURS",
    "HELD_OUT",
    "HELD_OUT_PAIRS",
    "IMAGE_SIZE",
    "LANGUAGES",
    "MIN_GAP",
    "POSITIONS",
    "POSITION_CENTRES",
    "RELATIONS",
    "SHAPES",
    "SHARD_SIZE",
    "SHORT",
    "SHORT_PROBABILITY",
    "SIZES",
    "SIZE_EXTENTS",
    "SPLITS",
    "SUPERSAMPLE",
    "TEMPLATES",
    "TRAIN_PAIRS",
    "Placement",
    "Sample",
    "Scene",
    "Thing",
    "caption",
    "captions",
    "draw_placed",
    "draw_shape",
    "draw_template",
    "make_sample",
    "n_templates",
    "phrase",
    "phrase_spans",
    "placements",
    "png_bytes",
    "render",
    "sample_scene",
    "scene_key",
    "scenes_for_eval",
    "shape_box",
    "unit_polygon",
    "words",
    "write_parallel_text",
    "write_shards",
]

# ------------------------------------------------------------------------------ files


@dataclass(frozen=True)
class Sample:
    key: str
    scene: Scene
    image: Image.Image
    template: int
    placed: tuple[Placement, ...]  # where the image has each thing

    @property
    def captions(self) -> dict[str, str]:
        return {lang: caption(self.scene, lang, self.template) for lang in LANGUAGES}

    @property
    def regions(self) -> list[dict]:
        """Each thing's box (pixels: left, top, right, bottom) and its phrase in every caption
        ((start, end) characters): the grounding that diffusion training can read
        (``altdiffusion.training.grounding``)."""
        spans = {lang: phrase_spans(self.scene, lang, self.template) for lang in LANGUAGES}
        return [
            {
                "box": [round(v, 3) for v in shape_box(p.thing.shape, p.centre, p.extent)],
                "phrases": {lang: list(spans[lang][i]) for lang in LANGUAGES},
            }
            for i, p in enumerate(self.placed)
        ]


def make_sample(seed: int, split: str, index: int) -> Sample:
    """Sample ``index`` of a stream: it depends on (seed, split, index) only, not on sharding."""
    rng = random.Random(f"{seed}-{split}-{index}")
    scene = sample_scene(rng, split)
    placed = tuple(placements(scene, rng))
    return Sample(f"{index:08d}", scene, draw_placed(scene, list(placed)), draw_template(scene, rng), placed)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)  # no metadata, fixed settings
    return buffer.getvalue()


def _sample_members(sample: Sample) -> Iterator[tuple[str, bytes]]:
    meta = {
        "captions": sample.captions,
        "label": sample.scene.to_dict(),
        "template": sample.template,
        "regions": sample.regions,
        "background": list(BACKGROUNDS[sample.scene.background]),
    }
    yield f"{sample.key}.png", png_bytes(sample.image)
    yield f"{sample.key}.txt", sample.captions["en"].encode("utf-8")
    yield f"{sample.key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8")


def _tar_member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_atomically(path: Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Write through a temporary file beside ``path``, so that a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _write_tar(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    def write(fh) -> None:
        with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                tar.addfile(_tar_member(name, len(data)), io.BytesIO(data))

    return write_atomically(path, write)


SHARD_SIZE = 1000  # samples per shard: sample i lies in shard i // SHARD_SIZE


def write_shards(
    folder: str | Path, n: int, seed: int, *, split: str = "train", shard_size: int = SHARD_SIZE
) -> list[Path]:
    """``n`` samples as webdataset shards ``folder/00000.tar ...`` in img2dataset layout:
    ``KEY.png``, ``KEY.txt`` (English caption) and ``KEY.json`` (all captions, label, template,
    each thing's region and the background's colour)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    folder = Path(folder)
    paths = []
    for shard, start in enumerate(range(0, n, shard_size)):
        indices = range(start, min(n, start + shard_size))
        members = (member for i in indices for member in _sample_members(make_sample(seed, split, i)))
        paths.append(_write_tar(folder / f"{shard:05d}.tar", members))
    return paths


def write_parallel_text(path: str | Path, n: int, seed: int) -> Path:
    """``n`` lines of JSONL ``{"en": ..., "zh": ..., ...}``: captions of training scenes."""
    lines = []
    for i in range(n):
        rng = random.Random(f"{seed}-text-{i}")
        lines.append(json.dumps(captions(sample_scene(rng, "train"), rng), ensure_ascii=False) + "\n")
    data = "".join(lines).encode("utf-8")
    return write_atomically(Path(path), lambda fh: fh.write(data))
