"""Turning a table of (local image, caption[, language]) into webdataset shards.

Output follows img2dataset: ``00000.tar`` ... with samples keyed ``SSSSSIIII`` (5-digit shard,
4-digit index), each ``<key>.<jpg|png|webp>`` (the original bytes), ``<key>.txt`` (caption) and
``<key>.json`` (caption, language, source). Corrupt images, missing files and empty captions
are skipped and counted, never fatal; each shard is written to a temporary name and renamed.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path

from altdiffusion.errors import InvalidInputError

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def read_table(path: Path) -> list[dict]:
    """Rows with ``image`` and ``caption`` (and optional ``language``) from TSV, CSV or JSONL."""
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as err:
                    raise InvalidInputError(f"{path}:{number}: not JSON ({err})") from None
        return rows
    delimiter = "\t" if path.suffix in (".tsv", ".txt") else ","
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
            raise InvalidInputError(
                f"{path}: the header must name the columns image and caption (and optionally language)"
            )
        return list(reader)


def _image_bytes(path: Path) -> tuple[bytes, str]:
    from PIL import Image

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        fmt = im.format
        im.load()  # verify() misses truncated pixel data; a full decode catches it
    if fmt not in EXTENSIONS:
        with Image.open(io.BytesIO(data)) as im:
            buf = io.BytesIO()
            im.convert("RGB").save(buf, format="PNG")
        return buf.getvalue(), "png"
    return data, EXTENSIONS[fmt]


def make_shards(
    table: str | Path, out: str | Path, *, shard_size: int = 10000, image_root: str | Path | None = None
) -> dict:
    """Write shards; returns ``{"written": n, "shards": k, "skipped": {reason: count}}``."""
    import webdataset as wds

    table, out = Path(table), Path(out)
    root = Path(image_root) if image_root else table.parent
    if shard_size <= 0:
        raise InvalidInputError("--shard-size must be positive")
    out.mkdir(parents=True, exist_ok=True)
    skipped: Counter = Counter()
    written = shard = index = 0
    writer = tmp = None

    def close():
        nonlocal writer
        if writer is not None:
            writer.close()
            os.replace(tmp, out / f"{shard:05d}.tar")
            writer = None

    try:
        for row in read_table(table):
            caption = str(row.get("caption") or "").strip()
            if not caption:
                skipped["empty caption"] += 1
                continue
            image_path = Path(str(row.get("image") or ""))
            image_path = image_path if image_path.is_absolute() else root / image_path
            try:
                data, ext = _image_bytes(image_path)
            except FileNotFoundError:
                skipped["missing image"] += 1
                continue
            except Exception:  # PIL raises many types for corrupt files
                skipped["corrupt image"] += 1
                continue
            if writer is None:
                tmp = out / f".{shard:05d}.tar.tmp"
                writer = wds.TarWriter(str(tmp))
            key = f"{shard:05d}{index:04d}"
            meta = {"caption": caption, "source": image_path.name}
            if row.get("language"):
                meta["language"] = str(row["language"])
            writer.write({"__key__": key, ext: data, "txt": caption, "json": json.dumps(meta, ensure_ascii=False)})
            written += 1
            index += 1
            if index == shard_size:
                close()
                shard, index = shard + 1, 0
        close()
    finally:
        if writer is not None:
            writer.close()
            Path(tmp).unlink(missing_ok=True)
    report = {"written": written, "shards": shard + (1 if index else 0), "skipped": dict(skipped)}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
