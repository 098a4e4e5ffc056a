"""The mini world's scenes: attributes, sampling, placement and rendering (see world.py).

A scene is one or two flat-coloured shapes on a neutral background, 64×64 pixels, drawn
supersampled and box-filtered down, so that edges are antialiased as in a photo of a drawing.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from functools import cache

from PIL import Image, ImageDraw

LANGUAGES = ("en", "zh", "es", "fr", "ru", "ja", "ko", "ar", "it")
IMAGE_SIZE = 64

COLOURS = {
    "red": (220, 20, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 220, 0),
    "green": (20, 160, 50),
    "cyan": (0, 200, 210),
    "blue": (20, 50, 220),
    "purple": (130, 40, 190),
    "pink": (255, 110, 190),
}
BACKGROUNDS = {"white": (255, 255, 255), "gray": (128, 128, 128), "black": (0, 0, 0)}
SHAPES = ("circle", "square", "triangle", "star", "diamond")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "centre")
RELATIONS = ("left_of", "above")
SPLITS = ("train", "seen", "heldout")

# Each colour once, every shape at least once: a model that never saw a "yellow star" has seen
# yellow on four other shapes and stars in six other colours.
HELD_OUT = frozenset(
    {
        ("red", "triangle"),
        ("orange", "circle"),
        ("yellow", "star"),
        ("green", "diamond"),
        ("cyan", "square"),
        ("blue", "star"),
        ("purple", "circle"),
        ("pink", "square"),
    }
)

# Geometry in image pixels; a shape's extent is the longer side of its bounding box.
SIZE_EXTENTS = {"small": 16.0, "large": 28.0}
POSITION_CENTRES = {
    "left": (17.0, 32.0),
    "right": (47.0, 32.0),
    "top": (32.0, 17.0),
    "bottom": (32.0, 47.0),
    "centre": (32.0, 32.0),
}
RELATION_CENTRES = {"left_of": ((16.0, 32.0), (48.0, 32.0)), "above": ((32.0, 16.0), (32.0, 48.0))}
CENTRE_JITTER = 2.0
EXTENT_JITTER = 1.5
MIN_GAP = 4.0  # pixels between two things, so that blur never merges them into one blob
MARGIN = 1.0  # pixels between a thing and the image border
SUPERSAMPLE = 4
STAR_INNER_RATIO = 0.45  # a little fatter than a pentagram (0.38): small stars keep visible arms


# ------------------------------------------------------------------------------ scenes


@dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    size: str

    def __post_init__(self):
        if self.shape not in SHAPES or self.colour not in COLOURS or self.size not in SIZES:
            raise ValueError(f"unknown thing {self}")

    @property
    def pair(self) -> tuple[str, str]:
        return (self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]
    background: str
    position: str | None = None
    relation: str | None = None

    def __post_init__(self):
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}")
        if len(self.things) == 1:
            if self.position not in POSITIONS or self.relation is not None:
                raise ValueError("a one-thing scene has a position and no relation")
        elif len(self.things) == 2:
            if self.relation not in RELATIONS or self.position is not None:
                raise ValueError("a two-thing scene has a relation and no position")
            if self.things[0].pair == self.things[1].pair:
                raise ValueError("the two things of a scene differ in colour or shape")
        else:
            raise ValueError("a scene has one or two things")

    @property
    def is_held_out(self) -> bool:
        return any(thing.pair in HELD_OUT for thing in self.things)

    def to_dict(self) -> dict:
        return {
            "things": [{"shape": t.shape, "colour": t.colour, "size": t.size} for t in self.things],
            "background": self.background,
            "position": self.position,
            "relation": self.relation,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        things = tuple(Thing(t["shape"], t["colour"], t["size"]) for t in d["things"])
        return cls(things, d["background"], d.get("position"), d.get("relation"))


ALL_PAIRS = tuple((colour, shape) for colour in COLOURS for shape in SHAPES)
TRAIN_PAIRS = tuple(pair for pair in ALL_PAIRS if pair not in HELD_OUT)
HELD_OUT_PAIRS = tuple(pair for pair in ALL_PAIRS if pair in HELD_OUT)  # in a stable order


def _draw_pairs(rng: random.Random, split: str, n_things: int) -> list[tuple[str, str]]:
    if split in ("train", "seen"):
        first, rest = TRAIN_PAIRS, TRAIN_PAIRS
    elif split == "heldout":
        first, rest = HELD_OUT_PAIRS, ALL_PAIRS
    else:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    pairs = [rng.choice(first)]
    while len(pairs) < n_things:
        pair = rng.choice(rest)
        if pair not in pairs:
            pairs.append(pair)
    if split == "heldout":
        rng.shuffle(pairs)  # the held-out thing may be either one of two
    return pairs


def sample_scene(rng: random.Random, split: str = "train", n_things: int | None = None) -> Scene:
    """A random scene. "train" and "seen" never use a held-out pair; in "heldout" at least one
    thing has one."""
    if n_things is None:
        n_things = 1 if rng.random() < 0.7 else 2
    if n_things not in (1, 2):
        raise ValueError("a scene has one or two things")
    background = rng.choice(tuple(BACKGROUNDS))
    things = tuple(Thing(shape, colour, rng.choice(SIZES)) for colour, shape in _draw_pairs(rng, split, n_things))
    if n_things == 1:
        return Scene(things, background, position=rng.choice(POSITIONS))
    return Scene(things, background, relation=rng.choice(RELATIONS))


def scene_key(scene: Scene) -> str:
    return json.dumps(scene.to_dict(), sort_keys=True)


def scenes_for_eval(split: str, n: int, seed: int, n_things: int = 1) -> list[Scene]:
    """``n`` distinct scenes of ``split``, the same ones for the same arguments."""
    rng = random.Random(f"{seed}-eval-{split}-{n_things}")
    scenes: dict[str, Scene] = {}
    attempts = 0
    while len(scenes) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            raise ValueError(f"the {split} split has only {len(scenes)} distinct {n_things}-thing scenes, not {n}")
        scene = sample_scene(rng, split, n_things)
        scenes.setdefault(scene_key(scene), scene)
    return list(scenes.values())


# ------------------------------------------------------------------------------ rendering


@dataclass(frozen=True)
class Placement:
    thing: Thing
    centre: tuple[float, float]
    extent: float


def _clamp_centre(value: float, extent: float) -> float:
    half = extent / 2
    return min(max(value, half + MARGIN), IMAGE_SIZE - half - MARGIN)


def _place(thing: Thing, centre: tuple[float, float], rng: random.Random | None) -> Placement:
    extent = SIZE_EXTENTS[thing.size]
    x, y = centre
    if rng is not None:
        extent += rng.uniform(-EXTENT_JITTER, EXTENT_JITTER)
        x += rng.uniform(-CENTRE_JITTER, CENTRE_JITTER)
        y += rng.uniform(-CENTRE_JITTER, CENTRE_JITTER)
    return Placement(thing, (_clamp_centre(x, extent), _clamp_centre(y, extent)), extent)


def _gap(first: Placement, second: Placement, axis: int) -> float:
    return (second.centre[axis] - second.extent / 2) - (first.centre[axis] + first.extent / 2)


def placements(scene: Scene, rng: random.Random | None = None) -> list[Placement]:
    """Where each thing goes and how big it is; ``rng=None`` gives the canonical layout."""
    if len(scene.things) == 1:
        return [_place(scene.things[0], POSITION_CENTRES[scene.position], rng)]
    axis = 0 if scene.relation == "left_of" else 1
    centres = RELATION_CENTRES[scene.relation]
    while True:  # redraw jitter that would bring two large things too close (rare)
        placed = [_place(thing, centre, rng) for thing, centre in zip(scene.things, centres)]
        if rng is None or _gap(placed[0], placed[1], axis) >= MIN_GAP:
            return placed


@cache
def unit_polygon(shape: str) -> tuple[tuple[float, float], ...]:
    """The outline of a polygonal shape, centred on its bounding box, longer box side 1 (y down)."""
    if shape == "square":
        points = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif shape == "diamond":
        points = [(0, -1), (1, 0), (0, 1), (-1, 0)]
    elif shape == "triangle":  # apex up, base as wide as the triangle is tall
        points = [(0, -1), (1, 1), (-1, 1)]
    elif shape == "star":  # five points, one up
        points = []
        for k in range(10):
            radius = 1.0 if k % 2 == 0 else STAR_INNER_RATIO
            angle = math.radians(-90 + 36 * k)
            points.append((radius * math.cos(angle), radius * math.sin(angle)))
    else:
        raise ValueError(f"{shape!r} is not a polygon")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    cx, cy = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    scale = max(max(xs) - min(xs), max(ys) - min(ys))
    return tuple(((x - cx) / scale, (y - cy) / scale) for x, y in points)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], fill) -> None:
    """Draw ``shape`` stretched over ``box`` = (left, top, right, bottom) in pixel-edge coordinates;
    a square box keeps the shape's proportions except for the star, whose box is not square."""
    left, top, right, bottom = box
    if shape == "circle":
        # PIL's ellipse box is inclusive of its last pixel row and column
        draw.ellipse([round(left), round(top), round(right) - 1, round(bottom) - 1], fill=fill)
        return
    cx, cy, w, h = (left + right) / 2, (top + bottom) / 2, right - left, bottom - top
    draw.polygon([(cx + x * w, cy + y * h) for x, y in unit_polygon(shape)], fill=fill)


def shape_box(shape: str, centre: tuple[float, float], extent: float) -> tuple[float, float, float, float]:
    """The bounding box of a shape of the given extent; stars are a little less tall than wide."""
    xs, ys = zip(*unit_polygon(shape)) if shape != "circle" else ((-0.5, 0.5), (-0.5, 0.5))
    w, h = (max(xs) - min(xs)) * extent, (max(ys) - min(ys)) * extent
    x, y = centre
    return (x - w / 2, y - h / 2, x + w / 2, y + h / 2)


def render(scene: Scene, rng: random.Random | None = None) -> Image.Image:
    """The 64×64 RGB picture of ``scene``, drawn at 4× and box-filtered down for clean edges."""
    return draw_placed(scene, placements(scene, rng))


def draw_placed(scene: Scene, placed_things: list[Placement]) -> Image.Image:
    """``render`` with the things' places already drawn."""
    big = IMAGE_SIZE * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(canvas)
    for placed in placed_things:
        box = tuple(v * SUPERSAMPLE for v in shape_box(placed.thing.shape, placed.centre, placed.extent))
        draw_shape(draw, placed.thing.shape, box, COLOURS[placed.thing.colour])
    return canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)
