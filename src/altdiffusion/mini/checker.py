"""An analytic checker for mini-world pictures: which attributes of a scene label does an image show?

It needs no model, so it can grade a generator without a grader that might share its errors.
The background is the colour of the border; objects are the connected blobs that differ from it;
each blob's colour is the nearest palette colour, its shape the best-fitting template drawn into
its bounding box, its size its extent, its position the nearest canonical centre. It tolerates
what a small diffusion model does to a picture (soft edges, shifted colours, specks) and still
rejects a wrong attribute; ``perturb`` makes the wrong-attribute scenes that test this.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from altdiffusion.mini.scenes import (
    ALL_PAIRS,
    BACKGROUNDS,
    COLOURS,
    IMAGE_SIZE,
    POSITION_CENTRES,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZE_EXTENTS,
    SIZES,
    SUPERSAMPLE,
    Scene,
    Thing,
    draw_shape,
)

FOREGROUND_DISTANCE = 60.0  # RGB distance from the background beyond which a pixel belongs to an object
MIN_AREA = 40  # blobs smaller than this (in pixels) are specks, not objects; a small thing covers 100+
SIZE_THRESHOLD = (SIZE_EXTENTS["small"] + SIZE_EXTENTS["large"]) / 2
MAX_OBJECTS = 6  # matching tries every assignment; more blobs than this is noise anyway


@dataclass(frozen=True)
class FoundObject:
    colour: str
    shape: str
    size: str
    centre: tuple[float, float]  # centre of the bounding box, in pixel-edge coordinates
    bbox: tuple[int, int, int, int]  # left, top, right, bottom (right and bottom exclusive)
    area: int  # pixels in the blob
    rgb: tuple[float, float, float]  # the blob's measured colour

    @property
    def position(self) -> str:
        return nearest_position(self.centre)


@dataclass(frozen=True)
class Analysis:
    background: str
    objects: tuple[FoundObject, ...]  # largest first


# ------------------------------------------------------------------------------ pixels


def _pixels(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.shape[:2] == (IMAGE_SIZE, IMAGE_SIZE):
            return image.astype(np.float32)[..., :3]
        image = Image.fromarray(np.clip(image[..., :3], 0, 255).astype(np.uint8))
    image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
    return np.asarray(image, dtype=np.float32)


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]], distance) -> str:
    return min(palette, key=lambda name: distance(rgb, np.asarray(palette[name], dtype=np.float32)))


def _euclidean(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum((a - b) ** 2))


def _redmean(a: np.ndarray, b: np.ndarray) -> float:
    """A cheap perceptual colour distance: RGB weighted by how the eye weighs each channel."""
    mean_red = (a[0] + b[0]) / 2
    dr, dg, db = a - b
    return float((2 + mean_red / 256) * dr * dr + 4 * dg * dg + (2 + (255 - mean_red) / 256) * db * db)


def _background(pixels: np.ndarray) -> tuple[str, np.ndarray]:
    """The median border colour (objects stay off the border) and the named background nearest it."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    measured = np.median(border, axis=0)
    return _nearest(measured, BACKGROUNDS, _euclidean), measured


EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)  # diagonal neighbours join a blob too


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected blobs of ``mask`` as arrays of (row, column) pairs, in the order of their first
    pixel in row-major order (which breaks ties between blobs of one size)."""
    labels, count = ndimage.label(mask, structure=EIGHT_NEIGHBOURS)
    return [np.argwhere(labels == label) for label in range(1, count + 1)]


# ------------------------------------------------------------------------------ one object


TEMPLATE_MARGIN = 3  # pixels of context around a blob's bounding box when matching shapes
# A soft picture (a diffusion model's, or a blurred one) shows a shape blurred, and its thin parts
# (star tips) fainter, so that it looks smaller than it is: templates come blurred too, and a
# little larger.
TEMPLATE_BLURS = (0.0, 1.0)
TEMPLATE_GROWTHS = (0.0, 1.5)
FAINT_COVERAGE = 0.1  # coverage below this, around a blob, is noise


@lru_cache(maxsize=16384)
def _template(shape: str, patch_size: tuple[int, int], box: tuple[int, int, int, int], blur: float) -> np.ndarray:
    """Coverage (0..1) of ``shape`` filling ``box`` (in 1/SUPERSAMPLE pixels) on a patch of
    ``patch_size`` pixels, antialiased like a render and blurred by ``blur``."""
    width, height = patch_size
    canvas = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    draw_shape(ImageDraw.Draw(canvas), shape, box, 255)
    small = canvas.resize(patch_size, Image.BOX)
    if blur:
        small = small.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(small, dtype=np.float32) / 255


def _coverage(pixels: np.ndarray, background: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """How much of each pixel an object of ``colour`` covers, read as a blend with the background.
    Not clipped at 1: in a blurred picture the measured colour of a small shape is paler than
    its centre would be, and clipping would flatten the shape's profile."""
    direction = colour - background
    alpha = (pixels - background) @ direction / max(float(direction @ direction), 1.0)
    return np.maximum(alpha, 0.0)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation: blind to contrast and offset, so a pale or blurred blob is
    judged by its form alone."""
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / max(float(np.sqrt((a * a).sum() * (b * b).sum())), 1e-9))


def _subpixel_box(patch: np.ndarray) -> tuple[float, float, float, float]:
    """The shape's box (left, top, right, bottom) in patch pixels, to a fraction of a pixel: the
    most-covered pixel of each column (row) says how much of that column (row) the shape spans."""
    box = []
    for profile in (patch.max(axis=0), patch.max(axis=1)):
        length = max(float(profile.sum()), 1.0)
        centre = float((profile * (np.arange(len(profile)) + 0.5)).sum()) / length
        box.append((centre - length / 2, centre + length / 2))
    (left, right), (top, bottom) = box
    return left, top, right, bottom


def _shape_scores(patch: np.ndarray, box: tuple[float, float, float, float]) -> dict[str, float]:
    """Correlation of the blob with each shape drawn into its box (the best of a few blurs and
    growths). The margin around the box penalises a shape that spills out of it."""
    patch_size = (patch.shape[1], patch.shape[0])
    scores = {}
    for shape in SHAPES:
        fits = []
        for growth in TEMPLATE_GROWTHS:
            grown = (box[0] - growth / 2, box[1] - growth / 2, box[2] + growth / 2, box[3] + growth / 2)
            quantised = tuple(round(v * SUPERSAMPLE) for v in grown)
            fits += [_correlation(patch, _template(shape, patch_size, quantised, blur)) for blur in TEMPLATE_BLURS]
        scores[shape] = max(fits)
    return scores


def _object(pixels: np.ndarray, background: np.ndarray, blob: np.ndarray) -> FoundObject | None:
    blob_pixels = pixels[blob[:, 0], blob[:, 1]]
    # the colour of the blob's interior: the half of its pixels farthest from the background
    distance = np.linalg.norm(blob_pixels - background, axis=1)
    rgb = np.median(blob_pixels[distance >= np.median(distance)], axis=0)
    coverage = np.zeros(pixels.shape[:2], dtype=np.float32)
    coverage[blob[:, 0], blob[:, 1]] = _coverage(blob_pixels, background, rgb)
    solid_rows, solid_columns = np.nonzero(coverage >= 0.5)  # the blob's core: its bounding box
    if len(solid_rows) == 0:
        return None
    bbox = (int(solid_columns.min()), int(solid_rows.min()), int(solid_columns.max()) + 1, int(solid_rows.max()) + 1)
    # fringe pixels that the foreground threshold left out still belong to the shape
    coverage = np.maximum(coverage, _coverage(pixels, background, rgb) * _near(coverage.shape, bbox, TEMPLATE_MARGIN))
    coverage[coverage < FAINT_COVERAGE] = 0
    margin = TEMPLATE_MARGIN
    patch = np.pad(coverage, margin)[bbox[1] : bbox[3] + 2 * margin, bbox[0] : bbox[2] + 2 * margin]
    box = _subpixel_box(np.minimum(patch, 1.0))
    scores = _shape_scores(patch, box)
    extent = max(box[2] - box[0], box[3] - box[1])
    origin_x, origin_y = bbox[0] - margin, bbox[1] - margin
    return FoundObject(
        colour=_nearest(rgb, COLOURS, _redmean),
        shape=max(scores, key=scores.get),
        size="large" if extent > SIZE_THRESHOLD else "small",
        centre=(origin_x + (box[0] + box[2]) / 2, origin_y + (box[1] + box[3]) / 2),
        bbox=bbox,
        area=len(blob),
        rgb=tuple(float(v) for v in rgb),
    )


def _near(shape: tuple[int, int], bbox: tuple[int, int, int, int], margin: int) -> np.ndarray:
    """1 on the bounding box grown by ``margin`` pixels, 0 elsewhere."""
    mask = np.zeros(shape, dtype=np.float32)
    left, top, right, bottom = bbox
    mask[max(top - margin, 0) : bottom + margin, max(left - margin, 0) : right + margin] = 1
    return mask


def nearest_position(centre: tuple[float, float]) -> str:
    x, y = centre
    return min(POSITIONS, key=lambda p: (POSITION_CENTRES[p][0] - x) ** 2 + (POSITION_CENTRES[p][1] - y) ** 2)


def analyse(image) -> Analysis:
    """The background and the objects of a 64×64 picture (a PIL image or an H×W×3 array;
    other sizes are resized to 64×64)."""
    pixels = _pixels(image)
    name, background = _background(pixels)
    foreground = np.linalg.norm(pixels - background, axis=2) > FOREGROUND_DISTANCE
    blobs = sorted((b for b in _components(foreground) if len(b) >= MIN_AREA), key=len, reverse=True)
    objects = (_object(pixels, background, blob) for blob in blobs[:MAX_OBJECTS])
    return Analysis(name, tuple(o for o in objects if o is not None))


# ------------------------------------------------------------------------------ against a label


def _agreement(found: FoundObject | None, thing: Thing) -> int:
    if found is None:
        return 0
    return 4 * (found.colour == thing.colour) + 4 * (found.shape == thing.shape) + (found.size == thing.size)


def _match(objects: tuple[FoundObject, ...], things: tuple[Thing, ...]) -> tuple[FoundObject | None, ...]:
    """The found object for each thing, choosing the assignment that agrees best (ties: larger objects)."""
    candidates = list(objects) + [None] * len(things)
    best, best_score = None, -1
    for assignment in itertools.permutations(candidates, len(things)):
        score = sum(_agreement(found, thing) for found, thing in zip(assignment, things))
        if score > best_score:
            best, best_score = assignment, score
    return best


def relation_holds(first: tuple[float, float], second: tuple[float, float], relation: str) -> bool:
    """``first`` is left of / above ``second``, and the two are arranged along that axis."""
    dx, dy = second[0] - first[0], second[1] - first[1]
    if relation == "left_of":
        return dx > 0 and abs(dx) > abs(dy)
    if relation == "above":
        return dy > 0 and abs(dy) > abs(dx)
    raise ValueError(f"unknown relation {relation!r}")


def found_things(image, scene: Scene) -> tuple[FoundObject | None, ...]:
    """The object ``image`` shows for each thing of ``scene`` (None: no object left for it)."""
    return _match(analyse(image).objects, scene.things)


def check(image, scene: Scene) -> dict[str, bool]:
    """Whether ``image`` shows each attribute of ``scene``: background, count, colour, shape, size,
    and position (one thing) or relation (two things)."""
    analysis = analyse(image)
    matched = _match(analysis.objects, scene.things)
    pairs = list(zip(matched, scene.things))
    result = {
        "background": analysis.background == scene.background,
        "count": len(analysis.objects) == len(scene.things),
        "colour": all(found is not None and found.colour == thing.colour for found, thing in pairs),
        "shape": all(found is not None and found.shape == thing.shape for found, thing in pairs),
        "size": all(found is not None and found.size == thing.size for found, thing in pairs),
    }
    if scene.position is not None:
        result["position"] = matched[0] is not None and matched[0].position == scene.position
    else:
        result["relation"] = None not in matched and relation_holds(
            matched[0].centre, matched[1].centre, scene.relation
        )
    return result


def passes(image, scene: Scene) -> bool:
    return all(check(image, scene).values())


# ------------------------------------------------------------------------------ wrong labels


def _other(rng: random.Random, values, current):
    return rng.choice([v for v in values if v != current])


def _valid(make) -> Scene | None:
    try:
        return make()
    except ValueError:  # e.g. two things that would be the same (colour, shape)
        return None


def _change_thing(scene: Scene, rng: random.Random, field: str, values) -> Scene:
    options = []
    for index, thing in enumerate(scene.things):
        for value in values:
            if value == getattr(thing, field):
                continue
            things = scene.things[:index] + (replace(thing, **{field: value}),) + scene.things[index + 1 :]
            candidate = _valid(lambda things=things: replace(scene, things=things))
            if candidate is not None:
                options.append(candidate)
    return rng.choice(options)


def _change_relation(scene: Scene, rng: random.Random) -> Scene:
    if rng.random() < 0.5:  # the same relation between the things in the other order
        return replace(scene, things=scene.things[::-1])
    return replace(scene, relation=_other(rng, RELATIONS, scene.relation))


def _change_count(scene: Scene, rng: random.Random) -> Scene:
    if len(scene.things) == 2:
        return Scene((rng.choice(scene.things),), scene.background, position=rng.choice(POSITIONS))
    old = scene.things[0]
    colour, shape = rng.choice([pair for pair in ALL_PAIRS if pair != old.pair])
    things = [old, Thing(shape, colour, rng.choice(SIZES))]
    rng.shuffle(things)
    return Scene(tuple(things), scene.background, relation=rng.choice(RELATIONS))


def perturb(scene: Scene, rng: random.Random) -> tuple[Scene, str]:
    """A scene that differs from ``scene`` in exactly one attribute, and that attribute's name:
    colour, shape, size, background, count, and position or relation."""
    layout = "position" if scene.position is not None else "relation"
    kind = rng.choice(("colour", "shape", "size", "background", "count", layout))
    if kind == "colour":
        changed = _change_thing(scene, rng, "colour", COLOURS)
    elif kind == "shape":
        changed = _change_thing(scene, rng, "shape", SHAPES)
    elif kind == "size":
        changed = _change_thing(scene, rng, "size", SIZES)
    elif kind == "background":
        changed = replace(scene, background=_other(rng, BACKGROUNDS, scene.background))
    elif kind == "count":
        changed = _change_count(scene, rng)
    elif kind == "position":
        changed = replace(scene, position=_other(rng, POSITIONS, scene.position))
    else:
        changed = _change_relation(scene, rng)
    return changed, kind
