"""Data tools: a table of (image, caption[, language]) becomes img2dataset-style shards."""

import json
import subprocess
import sys
import tarfile

from altdiffusion.training.data import expand_shards, pick_caption, shard_samples
from altdiffusion.training.shards import make_shards
from tests.training import grammar


def _table(tmp_path, rows, suffix=".tsv"):
    path = tmp_path / f"table{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    else:
        sep = "\t" if suffix == ".tsv" else ","
        lines = [sep.join(["image", "caption", "language"])] + [
            sep.join([r["image"], r["caption"], r.get("language", "")]) for r in rows
        ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _images(tmp_path, n):
    names = []
    for i, scene in enumerate(grammar.scenes()[:n]):
        name = f"img{i}.png"
        grammar.render(*scene).save(tmp_path / name)
        names.append((name, scene))
    return names


def test_corrupt_missing_and_empty_are_skipped_and_counted(tmp_path):
    good = _images(tmp_path, 5)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (tmp_path / "truncated.png").write_bytes((tmp_path / good[0][0]).read_bytes()[:60])
    rows = [{"image": name, "caption": grammar.chinese(*scene), "language": "zh"} for name, scene in good]
    rows += [
        {"image": "broken.jpg", "caption": "坏的"},
        {"image": "truncated.png", "caption": "截断"},
        {"image": "missing.png", "caption": "不存在"},
        {"image": good[1][0], "caption": "   "},
    ]
    report = make_shards(_table(tmp_path, rows), tmp_path / "out", shard_size=2)
    assert report["written"] == 5
    assert report["shards"] == 3
    assert report["skipped"] == {"corrupt image": 2, "missing image": 1, "empty caption": 1}
    names = sorted(p.name for p in (tmp_path / "out").glob("*.tar"))
    assert names == ["00000.tar", "00001.tar", "00002.tar"]
    assert not list((tmp_path / "out").glob(".*tmp"))
    with tarfile.open(tmp_path / "out" / "00000.tar") as tar:
        members = sorted(m.name for m in tar.getmembers())
    assert members == [
        "000000000.json",
        "000000000.png",
        "000000000.txt",
        "000000001.json",
        "000000001.png",
        "000000001.txt",
    ]


def test_shards_read_back_with_captions_and_languages(tmp_path):
    good = _images(tmp_path, 4)
    rows = [{"image": name, "caption": grammar.english(*scene), "language": "en"} for name, scene in good]
    make_shards(_table(tmp_path, rows, ".jsonl"), tmp_path / "out", shard_size=3)
    urls = expand_shards(str(tmp_path / "out"))
    samples = list(shard_samples(urls, rank=0, world=1))
    import random

    captions = [pick_caption(s, random.Random(0))[0] for s in samples]
    assert captions == [grammar.english(*scene) for _, scene in good]
    # two ranks split the shards between them, together covering everything once
    r0 = list(shard_samples(urls, rank=0, world=2))
    r1 = list(shard_samples(urls, rank=1, world=2))
    assert len(r0) + len(r1) == 4 and {s["__key__"] for s in r0}.isdisjoint(s["__key__"] for s in r1)


def test_multilingual_json_caption_sampling_is_seeded():
    import random

    sample = {"json": json.dumps({"captions": {"en": "a red circle", "zh": "红色的圆形", "fr": "un cercle rouge"}})}
    picks = [pick_caption(sample, random.Random(f"7-{i}"))[1] for i in range(30)]
    again = [pick_caption(sample, random.Random(f"7-{i}"))[1] for i in range(30)]
    assert picks == again and set(picks) == {"en", "zh", "fr"}
    only = {pick_caption(sample, random.Random(i), ["zh"])[1] for i in range(10)}
    assert only == {"zh"}


def test_language_weights_set_each_language_share():
    import random

    sample = {"json": json.dumps({"captions": {"en": "a red circle", "zh": "红色的圆形", "ru": "красный круг"}})}
    rng = random.Random(0)
    picks = [pick_caption(sample, rng, {"ru": 3.0, "en": 1.0, "zh": 1.0})[1] for _ in range(4000)]
    assert abs(picks.count("ru") / 4000 - 0.6) < 0.03 and abs(picks.count("en") / 4000 - 0.2) < 0.03
    # equal weights draw exactly as the plain list does, so existing builds keep their data order
    equal = [pick_caption(sample, random.Random(f"7-{i}"), {"en": 2.0, "ru": 2.0})[1] for i in range(30)]
    plain = [pick_caption(sample, random.Random(f"7-{i}"), ["en", "ru"])[1] for i in range(30)]
    assert equal == plain and set(plain) == {"en", "ru"}


def test_cli_shards_reports_counts(tmp_path):
    good = _images(tmp_path, 2)
    rows = [{"image": name, "caption": grammar.english(*scene)} for name, scene in good] + [
        {"image": "nope.png", "caption": "x"}
    ]
    table = _table(tmp_path, rows, ".csv")
    done = subprocess.run(
        [sys.executable, "-m", "altdiffusion.cli", "data", "shards", str(table), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 2 samples in 1 shards" in done.stdout and "1 missing image" in done.stdout
