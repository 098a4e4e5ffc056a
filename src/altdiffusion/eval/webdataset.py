"""clip_benchmark's webdataset layout (``clip_benchmark.datasets.builder.build_wds_dataset``).

    DIR/SPLIT/nshards.txt, DIR/SPLIT/0.tar ... N-1.tar     members KEY.EXT, KEY = name up to the first dot
    DIR/classnames.txt, DIR/zeroshot_classification_templates.txt   (classification)
    DIR/dataset_type.txt = "retrieval"                     (KEY.txt: one caption a line)

Read with the standard library's tarfile, not webdataset's pipeline: a first pass reads only the small
members (labels, captions) so a bad label stops the run before any image is embedded, and every
problem can name its shard and key.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

from altdiffusion.errors import InvalidInputError
from altdiffusion.eval.datasets import (
    CLASSIFICATION,
    IMAGE_EXTENSIONS,
    RETRIEVAL,
    Dataset,
    fingerprint,
    read_lines,
)


def is_webdataset(root: Path, split: str) -> bool:
    return (root / split / "nshards.txt").is_file()


def _shards(root: Path, split: str) -> list[Path]:
    text = (root / split / "nshards.txt").read_text().strip()
    if not text.isdigit():
        raise InvalidInputError(f"{root / split / 'nshards.txt'} should hold the number of shards, not {text!r}")
    shards = [root / split / f"{i}.tar" for i in range(int(text))]
    missing = [s for s in shards if not s.is_file()]
    if missing:
        raise InvalidInputError(f"{root}: nshards.txt says {len(shards)} shards but {missing[0].name} is missing")
    return shards


def _members(shard: Path) -> Iterator[tuple[str, str, tarfile.TarFile, tarfile.TarInfo]]:
    """(key, extension, archive, member) of each file in the shard, in order."""
    try:
        with tarfile.open(shard) as archive:
            for member in archive:
                if member.isfile():
                    name = member.name.rsplit("/", 1)[-1]
                    key, _, ext = name.partition(".")
                    yield f"{member.name[: len(member.name) - len(name)]}{key}", ext.lower(), archive, member
    except tarfile.ReadError as err:
        raise InvalidInputError(f"shard {str(shard)!r} is not a readable tar file ({err})") from None


def _index(shards: list[Path], label_ext: str) -> tuple[list[tuple[Path, str, str]], dict, dict[str, int]]:
    """Samples (shard, key, image member name) that have an image and a label, their labels, and skips."""
    samples, labels, skipped = [], {}, {}
    for shard in shards:
        images, found = {}, {}
        for key, ext, archive, member in _members(shard):
            if ext in IMAGE_EXTENSIONS and key not in images:
                images[key] = member.name
            elif ext == label_ext:
                found[key] = archive.extractfile(member).read().decode("utf-8", errors="replace")
        if not images and not found:
            skipped["empty shard"] = skipped.get("empty shard", 0) + 1
        unlabelled, imageless = len(images.keys() - found.keys()), len(found.keys() - images.keys())
        if unlabelled:
            skipped[f"no .{label_ext}"] = skipped.get(f"no .{label_ext}", 0) + unlabelled
        if imageless:
            skipped["no image"] = skipped.get("no image", 0) + imageless
        for key in (k for k in images if k in found):
            samples.append((shard, key, images[key]))
            labels[(shard, key)] = found[key]
    return samples, labels, skipped


def _parse_label(shard: Path, key: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidInputError(
            f"shard {str(shard)!r}, sample {key}: .cls should be a class index, not {text!r}"
        ) from None


def _reader(samples: list[tuple[Path, str, str]]):
    """Image bytes in sample order, streamed: samples follow their image members' order in each shard."""

    def read() -> Iterator[bytes | None]:
        for shard in dict.fromkeys(s for s, _, _ in samples):
            wanted = {member for s, _, member in samples if s == shard}
            for _, _, archive, info in _members(shard):
                if info.name in wanted:
                    wanted.discard(info.name)
                    yield archive.extractfile(info).read()

    return read


def webdataset(root: Path, split: str, language: str) -> Dataset:
    kind = (root / "dataset_type.txt").read_text().strip().lower() if (root / "dataset_type.txt").is_file() else ""
    retrieval = kind == "retrieval"
    shards = _shards(root, split)
    samples, labels, skipped = _index(shards, "txt" if retrieval else "cls")
    if not samples:
        raise InvalidInputError(f"{str(root)!r} ({split} split) has no samples with both an image and a label")
    keys = [f"{shard.name}/{key}" for shard, key, _ in samples]
    text = [labels[(shard, key)] for shard, key, _ in samples]
    names, templates = root / "classnames.txt", root / "zeroshot_classification_templates.txt"
    return Dataset(
        name=root.name,
        task=RETRIEVAL if retrieval else CLASSIFICATION,
        keys=keys,
        read_images=_reader(samples),
        fingerprint=fingerprint([*shards, *(p for p in (names, templates) if p.is_file())], "wds", split, language),
        labels=[] if retrieval else [_parse_label(s, k, t) for (s, k, _), t in zip(samples, text)],
        captions=[{language: [x for x in t.splitlines() if x.strip()]} for t in text] if retrieval else [],
        classnames=read_lines(names, "class names") if names.is_file() and not retrieval else None,
        templates=read_lines(templates, "templates") if templates.is_file() and not retrieval else None,
        skipped=skipped,
    )
