"""Evaluation datasets in the community's layouts, read into one shape: ``Dataset``.

Classification (``zeroshot``):
    clip_benchmark webdataset    DIR/classnames.txt, DIR/zeroshot_classification_templates.txt,
                                 DIR/test/nshards.txt, DIR/test/0.tar ... (KEY.cls + KEY.webp/png/jpg)
    image folder                 DIR/<class>/*.png|jpg|webp; class names = folder names, or --classnames
Retrieval (``retrieval``):
    clip_benchmark webdataset    DIR/dataset_type.txt = "retrieval", shards with KEY.txt (a caption a line)
    JSONL                        {"image": "a.jpg", "captions": ["...", ...]} or {"image": ..., "captions":
                                 {"en": [...], "zh": "..."}} (XTD-10 / Crossmodal-3600: a caption per language)
    TSV                          image<TAB>caption[<TAB>language], one caption a line, images repeat

Paths in JSONL/TSV are relative to the file's folder. A sample that cannot be used (no image, no label,
an image that does not decode) is skipped and counted; a dataset that cannot be used at all (no class
names, a label beyond them, no samples) stops with one message.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from altdiffusion.errors import InvalidInputError

IMAGE_EXTENSIONS = ("webp", "png", "jpg", "jpeg")
CLASSIFICATION = "zeroshot_classification"
RETRIEVAL = "zeroshot_retrieval"


@dataclass
class Dataset:
    """Samples in a fixed order; ``read_images()`` yields each sample's image bytes (None: unreadable)."""

    name: str
    task: str
    keys: list[str]
    read_images: Callable[[], Iterator[bytes | None]]
    fingerprint: str
    labels: list[int] = field(default_factory=list)
    captions: list[dict[str, list[str]]] = field(default_factory=list)  # per sample: language -> captions
    classnames: list[str] | None = None
    templates: list[str] | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    def languages(self) -> list[str]:
        return sorted({lang for caps in self.captions for lang in caps})


def fingerprint(files: list[Path], *extra: str) -> str:
    """Identity of the files (path, size, mtime) and options: an embedding cache key part."""
    digest = hashlib.sha256("\0".join(extra).encode())
    for path in sorted(files):
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def read_lines(path: Path, what: str) -> list[str]:
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except FileNotFoundError:
        raise InvalidInputError(f"{what} file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"cannot read {what} file {str(path)!r}: {err}") from None
    return [line for line in lines if line]


def read_classnames(path: str | Path, dataset_name: str = "") -> list[str]:
    """One name a line, or clip_benchmark's JSON ({"imagenet1k": [...], ...}: the dataset's or only list)."""
    path = Path(path)
    if path.suffix != ".json":
        return read_lines(path, "class names")
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InvalidInputError(f"cannot read class names file {str(path)!r}: {err}") from None
    if isinstance(table, dict) and len(table) > 1:
        if dataset_name not in table:
            raise InvalidInputError(f"{str(path)!r} has class names for {', '.join(table)}; name the dataset's")
        return list(table[dataset_name])
    return list(next(iter(table.values())) if isinstance(table, dict) else table)


def _read_files(paths: list[Path]) -> Callable[[], Iterator[bytes | None]]:
    def read() -> Iterator[bytes | None]:
        for path in paths:
            try:
                yield path.read_bytes()
            except OSError:
                yield None

    return read


def image_folder(root: Path) -> Dataset:
    """One sub-folder per class (sorted names give the class indices), images inside."""
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    paths, labels = [], []
    for index, folder in enumerate(classes):
        for path in sorted(folder.iterdir()):
            if path.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS:
                paths.append(path)
                labels.append(index)
    if not paths:
        raise InvalidInputError(
            f"{str(root)!r} has no images in class sub-folders (expected {root}/<class>/*.png|jpg|webp)"
        )
    return Dataset(
        name=root.name,
        task=CLASSIFICATION,
        keys=[str(p.relative_to(root)) for p in paths],
        read_images=_read_files(paths),
        fingerprint=fingerprint(paths, "folder"),
        labels=labels,
        classnames=[p.name for p in classes],
    )


def _captions_of(row: dict, default_language: str) -> dict[str, list[str]]:
    captions = row.get("captions", row.get("caption"))
    if isinstance(captions, dict):
        return {lang: [c] if isinstance(c, str) else list(c) for lang, c in captions.items() if c}
    if isinstance(captions, str):
        return {default_language: [captions]}
    return {default_language: [c for c in captions or [] if isinstance(c, str) and c.strip()]}


def _table_rows(path: Path, default_language: str) -> Iterator[tuple[int, str, dict[str, list[str]]]]:
    text = read_lines(path, "dataset")
    if path.suffix == ".jsonl":
        for number, line in enumerate(text, 1):
            try:
                row = json.loads(line)
                yield number, row["image"], _captions_of(row, default_language)
            except (ValueError, KeyError, TypeError, AttributeError):
                raise InvalidInputError(
                    f'{path}:{number}: expected {{"image": PATH, "captions": [...] or {{LANG: ...}}}}'
                ) from None
        return
    for number, cells in enumerate(csv.reader(text, delimiter="\t"), 1):
        if len(cells) < 2:
            raise InvalidInputError(f"{path}:{number}: expected image<TAB>caption[<TAB>language]")
        yield number, cells[0], {(cells[2] if len(cells) > 2 else default_language): [cells[1]]}


def caption_table(path: Path, default_language: str) -> Dataset:
    """Image paths and captions (JSONL or TSV); rows naming the same image add captions to it."""
    order: dict[str, dict[str, list[str]]] = {}
    for _, image, captions in _table_rows(path, default_language):
        merged = order.setdefault(image, {})
        for lang, texts in captions.items():
            merged.setdefault(lang, []).extend(texts)
    paths = [path.parent / image for image in order]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InvalidInputError(f"{path}: {len(missing)} image(s) do not exist, e.g. {str(missing[0])!r}")
    return Dataset(
        name=path.stem,
        task=RETRIEVAL,
        keys=list(order),
        read_images=_read_files(paths),
        fingerprint=fingerprint([path, *paths], "table", default_language),
        captions=list(order.values()),
    )


def load_dataset(
    location: str | Path,
    *,
    task: str,
    language: str = "en",
    classnames: str | Path | None = None,
    templates: str | Path | None = None,
    split: str = "test",
) -> Dataset:
    """The dataset at ``location`` in whichever supported layout it is, for ``task``."""
    from altdiffusion.eval.webdataset import is_webdataset, webdataset

    root = Path(location)
    if not root.exists():
        raise InvalidInputError(f"dataset {str(root)!r} does not exist")
    if is_webdataset(root, split):
        dataset = webdataset(root, split, language)
    elif root.is_dir():
        dataset = image_folder(root)
    elif root.suffix in (".jsonl", ".tsv"):
        dataset = caption_table(root, language)
    else:
        raise InvalidInputError(
            f"{str(root)!r} is not a dataset layout altdiffusion reads: a clip_benchmark webdataset folder, "
            "an image folder with a sub-folder per class, or a .jsonl/.tsv of images and captions"
        )
    if dataset.task != task:
        raise InvalidInputError(
            f"{str(root)!r} is a {dataset.task.split('_')[1]} dataset, not a {task.split('_')[1]} one"
        )
    if classnames is not None:
        dataset = replace(dataset, classnames=read_classnames(classnames, dataset.name))
    if templates is not None:
        dataset = replace(dataset, templates=read_lines(Path(templates), "templates"))
    if task == CLASSIFICATION:
        check_labels(dataset, root)
    return dataset


def check_labels(dataset: Dataset, root: Path) -> None:
    if not dataset.classnames:
        raise InvalidInputError(
            f"{str(root)!r} has no class names: add classnames.txt (one name a line) or pass --classnames FILE"
        )
    bad = [(k, label) for k, label in zip(dataset.keys, dataset.labels) if not 0 <= label < len(dataset.classnames)]
    if bad:
        key, label = bad[0]
        raise InvalidInputError(
            f"{str(root)!r}: sample {key} has class {label}, but there are {len(dataset.classnames)} class names "
            f"({len(bad)} sample(s) out of range); the class names file does not match the shards"
        )
