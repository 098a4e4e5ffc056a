"""Training data: parallel text for teacher learning, image-text shards for contrastive learning.

Both streams are deterministic functions of (seed, step), so a resumed run sees exactly the
batches an uninterrupted run would, and N processes together see what one process sees.
"""

from __future__ import annotations

import io
import json
import random
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from altdiffusion.errors import InvalidInputError

IMAGE_KEYS = ("jpg", "png", "jpeg", "webp")
TEXT_KEYS = ("txt", "text", "caption")

# ------------------------------------------------------------------------------ parallel text


def read_parallel_text(paths: Sequence[str | Path], english_key: str = "en") -> list[tuple[str, str]]:
    """(student input, teacher input) pairs: every English line teaches itself, and every
    translation is taught toward the teacher's embedding of its English side.

    TSV/TXT: ``english<TAB>translation[<TAB>...]``; a line with one column is English only.
    JSONL: ``{"en": ..., "zh": ..., "fr": ...}``; every string field besides ``en`` is a translation.
    """
    pairs: list[tuple[str, str]] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise InvalidInputError(f"text data {path} does not exist")
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                if path.suffix == ".jsonl":
                    try:
                        record = json.loads(line)
                    except ValueError as err:
                        raise InvalidInputError(f"{path}:{number}: not JSON ({err})") from None
                    english = record.get(english_key)
                    others = [v for k, v in record.items() if k != english_key and isinstance(v, str) and v.strip()]
                else:
                    english, *others = line.split("\t")
                if not isinstance(english, str) or not english.strip():
                    continue
                pairs.append((english, english))
                pairs.extend((other, english) for other in others if other.strip())
    if not pairs:
        raise InvalidInputError(f"no usable lines in {', '.join(map(str, paths))}")
    return pairs


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def micro_batch_seed(seed: int, index: int, rank: int) -> int:
    """The seed of micro-batch ``index`` of ``rank``'s stream (its noise, caption dropout), the same
    in a resumed run; ranks differ (up to 64 of them)."""
    return (seed * 1_000_003 + index) * 64 + rank


def global_indices(n: int, seed: int, start: int, count: int) -> list[int]:
    """Items ``start .. start+count`` of the endless stream of seeded epoch permutations."""
    out: list[int] = []
    position = start
    while len(out) < count:
        epoch, offset = divmod(position, n)
        order = epoch_order(n, seed, epoch)
        take = order[offset : offset + count - len(out)]
        out.extend(take)
        position += len(take)
    return out


def micro_batches(
    items: Sequence, *, seed: int, start_step: int, micro: int, rank: int, world: int, grad_accum: int
) -> Iterator[list]:
    """This rank's micro-batches: global batch ``s`` is split into ``world*grad_accum`` chunks,
    and accumulation round ``a`` of rank ``r`` takes chunk ``a*world + r``."""
    global_batch = micro * world * grad_accum
    step = start_step
    while True:
        indices = global_indices(len(items), seed, step * global_batch, global_batch)
        for a in range(grad_accum):
            chunk = a * world + rank
            yield [items[i] for i in indices[chunk * micro : (chunk + 1) * micro]]
        step += 1


# ------------------------------------------------------------------------------ image-text shards


@dataclass
class SkipCounter:
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, count: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + count

    def merge(self, counts: Mapping[str, int]) -> None:
        for reason, count in counts.items():
            self.add(reason, count)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def sample_meta(sample: dict) -> dict | None:
    """A webdataset sample's ``json``, parsed; None where it has none or it is not a JSON object."""
    meta = sample.get("json")
    if isinstance(meta, (bytes, str)):
        try:
            meta = json.loads(meta)
        except ValueError:
            return None
    return meta if isinstance(meta, dict) else None


def pick_caption(
    sample: dict, rng: random.Random, languages: Sequence[str] | Mapping[str, float] | None = None
) -> tuple[str, str | None]:
    """The caption of a webdataset sample: ``txt`` (or ``text``/``caption``), or one language
    sampled from a ``json`` holding ``{"captions": {"en": ..., "zh": ...}}`` or ``{"caption": ...}``;
    ``languages`` keeps only those, each drawn in proportion to its weight where it maps to one."""
    meta = sample_meta(sample)
    if isinstance(meta, dict) and isinstance(meta.get("captions"), dict):
        options = {k: v for k, v in meta["captions"].items() if isinstance(v, str) and v.strip()}
        if languages:
            options = {k: v for k, v in options.items() if k in languages}
        if options:
            language = _draw_language(sorted(options), rng, languages if isinstance(languages, Mapping) else None)
            return options[language], language
    for key in TEXT_KEYS:
        if key in sample:
            value = sample[key]
            text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
            return text.strip(), (meta or {}).get("language")
    if isinstance(meta, dict) and isinstance(meta.get("caption"), str):
        return meta["caption"].strip(), meta.get("language")
    return "", None


def _draw_language(names: list[str], rng: random.Random, weights: Mapping[str, float] | None) -> str:
    """One of ``names``; equal weights draw with ``rng.choice`` (the unweighted stream, unchanged)."""
    if weights is None or len({weights[name] for name in names}) == 1:
        return rng.choice(names)
    return rng.choices(names, weights=[weights[name] for name in names])[0]


def decode_image(sample: dict):
    from PIL import Image

    for key in IMAGE_KEYS:
        if key in sample:
            with Image.open(io.BytesIO(sample[key])) as im:
                im.load()
                return im.convert("RGB")
    raise ValueError("no image (expected one of jpg, png, jpeg, webp)")


def shard_samples(urls: Sequence[str], *, rank: int, world: int) -> Iterator[dict]:
    """Raw samples of this rank's shards (shard ``i`` goes to rank ``i % world``), in order.

    Reading goes through webdataset's tar reader; corrupt shards end that shard, not the run.
    """
    import webdataset as wds

    mine = [u for i, u in enumerate(urls) if i % world == rank]
    if not mine:
        raise InvalidInputError(
            f"{len(urls)} shards cannot feed {world} processes; give at least one shard per process"
        )
    dataset = wds.WebDataset(
        mine,
        shardshuffle=False,
        nodesplitter=None,
        workersplitter=None,
        handler=wds.warn_and_continue,
        empty_check=False,
    )
    yield from dataset


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """Shard list from a brace pattern (``data/{00000..00099}.tar``), a glob, a folder or a list."""
    import braceexpand

    specs = [spec] if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for item in specs:
        path = Path(item)
        if path.is_dir():
            urls += sorted(str(p) for p in path.glob("*.tar"))
        elif any(c in item for c in "*?["):
            urls += (
                sorted(str(p) for p in Path().glob(item))
                if not Path(item).is_absolute()
                else sorted(str(p) for p in Path("/").glob(item.lstrip("/")))
            )
        else:
            urls += list(braceexpand.braceexpand(item))
    missing = [u for u in urls if "://" not in u and not Path(u).is_file()]
    if not urls or missing:
        raise InvalidInputError(
            f"no shards found for {spec!r}" + (f" (missing: {', '.join(missing[:3])})" if missing else "")
        )
    return urls


def folder_samples(folder: Path, *, rank: int, world: int) -> Iterator[dict]:
    """Images with a caption file beside them (``cat.png`` + ``cat.txt``), as webdataset-like samples."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower().lstrip(".") in IMAGE_KEYS)
    if not files:
        raise InvalidInputError(f"{folder}: no images (png, jpg, jpeg, webp) found")
    for i, path in enumerate(files):
        if i % world != rank:
            continue
        sample = {"__key__": path.stem, path.suffix.lower().lstrip("."): path.read_bytes()}
        caption = path.with_suffix(".txt")
        if caption.is_file():
            sample["txt"] = caption.read_bytes()
        yield sample


@dataclass(frozen=True)
class RawSample:
    """A sample whose caption is chosen (and json parsed) but whose image is not decoded yet."""

    sample: dict  # webdataset's raw sample: the image's bytes under its extension
    caption: str
    meta: dict | None  # its parsed json
    language: str | None  # the caption's


def caption_samples(
    source, *, rank: int, world: int, seed: int, languages=None, skipped: SkipCounter | None = None
) -> Iterator[RawSample]:
    """This rank's samples that have a caption, epoch after epoch, deterministically (a folder of
    images with ``.txt`` captions, or a list of shard urls). Empty captions are counted in ``skipped``;
    no image is decoded here, so finding a position in the stream costs no decoding."""
    epoch = 0
    while True:
        rng = random.Random(f"{seed}-{rank}-{epoch}")
        raw = (
            folder_samples(source, rank=rank, world=world)
            if isinstance(source, Path)
            else shard_samples(source, rank=rank, world=world)
        )
        yielded = False
        for sample in raw:
            meta = sample_meta(sample)  # parsed once: the caption and the grounding both read it
            caption, language = pick_caption({**sample, "json": meta}, rng, languages)
            if not caption:
                if skipped is not None:
                    skipped.add("empty caption")
                continue
            yielded = True
            yield RawSample(sample, caption, meta, language)
        if not yielded:
            raise InvalidInputError("the training data holds no usable image-caption sample")
        epoch += 1


def image_text_samples(
    source,
    *,
    rank: int,
    world: int,
    seed: int,
    languages=None,
    skipped: SkipCounter | None = None,
    with_meta: bool = False,
):
    """Usable (PIL image, caption) pairs of :func:`caption_samples`; ``with_meta``: (image, caption,
    the sample's parsed json or None, the caption's language). Corrupt images are counted in
    ``skipped`` and passed over."""
    for raw in caption_samples(source, rank=rank, world=world, seed=seed, languages=languages, skipped=skipped):
        try:
            image = decode_image(raw.sample)
        except Exception:  # PIL raises many types for corrupt data
            if skipped is not None:
                skipped.add("corrupt image")
            continue
        yield (image, raw.caption, raw.meta, raw.language) if with_meta else (image, raw.caption)


# ------------------------------------------------------------------------------ micro-batch plans


@dataclass
class Plan:
    """One micro-batch before its images are decoded: what every data worker computes alike (cheap:
    reading the shards, choosing captions), so that one of them can decode it (dear)."""

    index: int  # the micro-batch's number in the run: with the rank, it seeds the batch's noise
    rank: int  # the process whose stream it is
    micro: int  # samples in the batch
    samples: list[RawSample]  # its ``micro`` samples, then as many more to stand in for corrupt images
    skipped: dict[str, int]  # samples passed over while these were read (each counted in one plan)


def micro_batch_plans(
    source, *, start: int, micro: int, rank: int, world: int, seed: int, languages=None
) -> Iterator[Plan]:
    """This rank's micro-batches ``start``, ``start + 1``, ...: batch ``i`` is the ``micro`` samples
    after the first ``i * micro`` of :func:`caption_samples`, so a resumed run (``start`` > 0) sees
    exactly the batches an uninterrupted one does. A corrupt image is replaced by the next sample
    that decodes (:func:`decode_plan`), which the following batch then holds too."""
    passed_over = SkipCounter()
    stream = caption_samples(source, rank=rank, world=world, seed=seed, languages=languages, skipped=passed_over)
    for _ in range(start * micro):
        next(stream)
    ahead: deque[RawSample] = deque()
    index = start
    while True:
        while len(ahead) < 2 * micro:
            ahead.append(next(stream))
        yield Plan(index, rank, micro, list(ahead), dict(passed_over.counts))
        passed_over.counts.clear()
        for _ in range(micro):
            ahead.popleft()
        index += 1


@dataclass
class DecodedPlan:
    images: list  # PIL images, ``plan.micro`` of them
    samples: list[RawSample]  # the sample of each image
    skipped: dict[str, int]  # the plan's passed-over samples and its corrupt images


def decode_plan(plan: Plan) -> DecodedPlan:
    """The first ``plan.micro`` of ``plan``'s images that decode; corrupt ones are counted and passed over."""
    images, samples, skipped = [], [], SkipCounter(dict(plan.skipped))
    for raw in plan.samples:
        if len(images) == plan.micro:
            break
        try:
            images.append(decode_image(raw.sample))
            samples.append(raw)
        except Exception:  # PIL raises many types for corrupt data
            skipped.add("corrupt image")
    if len(images) < plan.micro:
        raise InvalidInputError(
            f"the training data is mostly corrupt: of {len(plan.samples)} samples in a row (micro-batch "
            f"{plan.index}), {len(images)} images could be decoded and {plan.micro} are needed"
        )
    return DecodedPlan(images, samples, skipped.counts)


def data_source(spec) -> Path | list[str]:
    """A folder of captioned images stays a folder; anything else names shards."""
    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if len(specs) == 1 and Path(specs[0]).is_dir() and not any(Path(specs[0]).glob("*.tar")):
        return Path(specs[0])
    return expand_shards([str(s) for s in specs])


def crop_geometry(size: tuple[int, int], resolution: int) -> tuple[int, int, int, int]:
    """(width, height) an image of ``size`` is resized to so its short side is ``resolution``, and the
    (left, top) of the centred ``resolution`` square cut from it: what ``crop_pixels`` does."""
    w, h = size
    scale = resolution / min(w, h)
    width, height = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    return width, height, (width - resolution) // 2, (height - resolution) // 2


def crop_pixels(image, resolution: int) -> torch.Tensor:
    """Resize the short side to ``resolution``, centre-crop, values in [-1, 1], (3, r, r)."""
    from PIL import Image

    width, height, left, top = crop_geometry(image.size, resolution)
    if image.size != (resolution, resolution):
        image = image.resize((width, height), Image.BICUBIC)
    array = np.asarray(image.crop((left, top, left + resolution, top + resolution)), dtype=np.float32) / 127.5 - 1
    return torch.from_numpy(array).permute(2, 0, 1)
