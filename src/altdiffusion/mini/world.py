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
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

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
    big = IMAGE_SIZE * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(canvas)
    for placed in placements(scene, rng):
        box = tuple(v * SUPERSAMPLE for v in shape_box(placed.thing.shape, placed.centre, placed.extent))
        draw_shape(draw, placed.thing.shape, box, COLOURS[placed.thing.colour])
    return canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)


# ------------------------------------------------------------------------------ vocabulary
# One table per language, one word (or one set of inflected forms) per attribute value, used in
# every template, so that a model sees the same word for the same attribute.

EN = {
    "size": {"small": "small", "large": "large"},
    "colour": {c: c for c in COLOURS},
    "shape": {s: s for s in SHAPES},
    "background": {"white": "white", "gray": "gray", "black": "black"},
    "position": {
        "left": "on the left of the picture",
        "right": "on the right of the picture",
        "top": "at the top of the picture",
        "bottom": "at the bottom of the picture",
        "centre": "in the centre of the picture",
    },
    "relation": {"left_of": "to the left of", "above": "above"},
    "relation_it": {"left_of": "to the left of it", "above": "above it"},
}

ZH = {
    "size": {"small": "小", "large": "大"},
    "colour": dict(zip(COLOURS, ("红色", "橙色", "黄色", "绿色", "青色", "蓝色", "紫色", "粉色"))),
    "shape": dict(zip(SHAPES, ("圆形", "正方形", "三角形", "五角星", "菱形"))),
    "measure": {"circle": "一个", "square": "一个", "triangle": "一个", "star": "一颗", "diamond": "一个"},
    "background": {"white": "白色", "gray": "灰色", "black": "黑色"},
    "position": dict(zip(POSITIONS, ("画面左侧", "画面右侧", "画面上方", "画面下方", "画面中央"))),
    "relation": {"left_of": "左侧", "above": "上方"},
}

JA = {
    "size": {"small": "小さな", "large": "大きな"},
    "colour": dict(zip(COLOURS, ("赤い", "オレンジ色の", "黄色い", "緑の", "水色の", "青い", "紫の", "ピンクの"))),
    "shape": dict(zip(SHAPES, ("丸", "正方形", "三角形", "星", "ひし形"))),
    "background": {"white": "白い", "gray": "灰色の", "black": "黒い"},
    "position": dict(zip(POSITIONS, ("左側", "右側", "上部", "下部", "中央"))),
    "relation": {"left_of": "左", "above": "上"},
}

KO = {
    "size": {"small": "작은", "large": "큰"},
    "colour": dict(zip(COLOURS, ("빨간", "주황색", "노란", "초록색", "청록색", "파란", "보라색", "분홍색"))),
    "shape": dict(zip(SHAPES, ("원", "정사각형", "삼각형", "별", "마름모"))),
    "background": {"white": "흰색", "gray": "회색", "black": "검은색"},
    "position": dict(zip(POSITIONS, ("왼쪽", "오른쪽", "위쪽", "아래쪽", "가운데"))),
    "relation": {"left_of": "왼쪽", "above": "위"},
}

# Romance languages: adjectives as (masculine, feminine), nouns as (word, gender).
ES = {
    "size": {"small": ("pequeño", "pequeña"), "large": ("grande", "grande")},
    "colour": {
        "red": ("rojo", "roja"),
        "orange": ("naranja", "naranja"),
        "yellow": ("amarillo", "amarilla"),
        "green": ("verde", "verde"),
        "cyan": ("cian", "cian"),
        "blue": ("azul", "azul"),
        "purple": ("morado", "morada"),
        "pink": ("rosa", "rosa"),
    },
    "shape": {
        "circle": ("círculo", "m"),
        "square": ("cuadrado", "m"),
        "triangle": ("triángulo", "m"),
        "star": ("estrella", "f"),
        "diamond": ("rombo", "m"),
    },
    "background": {"white": "blanco", "gray": "gris", "black": "negro"},
    "position": {
        "left": "a la izquierda de la imagen",
        "right": "a la derecha de la imagen",
        "top": "en la parte superior de la imagen",
        "bottom": "en la parte inferior de la imagen",
        "centre": "en el centro de la imagen",
    },
    "relation": {"left_of": "a la izquierda de", "above": "encima de"},
    # the relation to a thing named before, by its pronoun, (masculine, feminine)
    "relation_it": {"left_of": ("a su izquierda", "a su izquierda"), "above": ("encima de él", "encima de ella")},
}

FR = {
    "size": {"small": ("petit", "petite"), "large": ("grand", "grande")},
    "colour": {
        "red": ("rouge", "rouge"),
        "orange": ("orange", "orange"),
        "yellow": ("jaune", "jaune"),
        "green": ("vert", "verte"),
        "cyan": ("cyan", "cyan"),
        "blue": ("bleu", "bleue"),
        "purple": ("violet", "violette"),
        "pink": ("rose", "rose"),
    },
    "shape": {
        "circle": ("cercle", "m"),
        "square": ("carré", "m"),
        "triangle": ("triangle", "m"),
        "star": ("étoile", "f"),
        "diamond": ("losange", "m"),
    },
    "background": {"white": "blanc", "gray": "gris", "black": "noir"},
    "position": {
        "left": "à gauche de l'image",
        "right": "à droite de l'image",
        "top": "en haut de l'image",
        "bottom": "en bas de l'image",
        "centre": "au centre de l'image",
    },
    # "de" before "un"/"une", so always elided
    "relation": {"left_of": "à gauche d'", "above": "au-dessus d'"},
    "relation_it": {"left_of": ("à sa gauche", "à sa gauche"), "above": ("au-dessus", "au-dessus")},
}

IT = {
    "size": {"small": ("piccolo", "piccola"), "large": ("grande", "grande")},
    "colour": {
        "red": ("rosso", "rossa"),
        "orange": ("arancione", "arancione"),
        "yellow": ("giallo", "gialla"),
        "green": ("verde", "verde"),
        "cyan": ("ciano", "ciano"),
        "blue": ("blu", "blu"),
        "purple": ("viola", "viola"),
        "pink": ("rosa", "rosa"),
    },
    "shape": {
        "circle": ("cerchio", "m"),
        "square": ("quadrato", "m"),
        "triangle": ("triangolo", "m"),
        "star": ("stella", "f"),
        "diamond": ("rombo", "m"),
    },
    "background": {"white": "bianco", "gray": "grigio", "black": "nero"},
    "position": {
        "left": "a sinistra dell'immagine",
        "right": "a destra dell'immagine",
        "top": "in alto nell'immagine",
        "bottom": "in basso nell'immagine",
        "centre": "al centro dell'immagine",
    },
    "relation": {"left_of": "a sinistra di", "above": "sopra"},
    "relation_it": {"left_of": ("alla sua sinistra", "alla sua sinistra"), "above": ("sopra di esso", "sopra di essa")},
}

# Russian: adjectives by (case, gender), nouns by case; "слева от" takes the genitive, "над" the
# instrumental, "на ... фоне" the prepositional.
_RU_CASES = ("nom", "gen", "ins")


def _ru_adjective(nom_m: str, nom_f: str, gen_m: str, gen_f: str, ins_m: str, ins_f: str) -> dict:
    return {
        ("nom", "m"): nom_m,
        ("nom", "f"): nom_f,
        ("gen", "m"): gen_m,
        ("gen", "f"): gen_f,
        ("ins", "m"): ins_m,
        ("ins", "f"): ins_f,
    }


def _ru_hard(stem: str) -> dict:
    return _ru_adjective(stem + "ый", stem + "ая", stem + "ого", stem + "ой", stem + "ым", stem + "ой")


RU = {
    "size": {
        "small": _ru_adjective("маленький", "маленькая", "маленького", "маленькой", "маленьким", "маленькой"),
        "large": _ru_adjective("большой", "большая", "большого", "большой", "большим", "большой"),
    },
    "colour": {
        "red": _ru_hard("красн"),
        "orange": _ru_hard("оранжев"),
        "yellow": _ru_hard("жёлт"),
        "green": _ru_hard("зелён"),
        "cyan": _ru_adjective("голубой", "голубая", "голубого", "голубой", "голубым", "голубой"),
        "blue": _ru_adjective("синий", "синяя", "синего", "синей", "синим", "синей"),
        "purple": _ru_hard("фиолетов"),
        "pink": _ru_hard("розов"),
    },
    # (nominative, genitive, instrumental), gender
    "shape": {
        "circle": (("круг", "круга", "кругом"), "m"),
        "square": (("квадрат", "квадрата", "квадратом"), "m"),
        "triangle": (("треугольник", "треугольника", "треугольником"), "m"),
        "star": (("звезда", "звезды", "звездой"), "f"),
        "diamond": (("ромб", "ромба", "ромбом"), "m"),
    },
    # (nominative, prepositional) of the adjective before "фон"
    "background": {"white": ("белый", "белом"), "gray": ("серый", "сером"), "black": ("чёрный", "чёрном")},
    "position": {
        "left": "в левой части изображения",
        "right": "в правой части изображения",
        "top": "в верхней части изображения",
        "bottom": "в нижней части изображения",
        "centre": "в центре изображения",
    },
    "relation": {"left_of": "слева от", "above": "над"},
    "relation_it": {"left_of": ("слева от него", "слева от неё"), "above": ("над ним", "над ней")},
}

AR = {
    "size": {"small": ("صغير", "صغيرة"), "large": ("كبير", "كبيرة")},
    "colour": {
        "red": ("أحمر", "حمراء"),
        "orange": ("برتقالي", "برتقالية"),
        "yellow": ("أصفر", "صفراء"),
        "green": ("أخضر", "خضراء"),
        "cyan": ("سماوي", "سماوية"),
        "blue": ("أزرق", "زرقاء"),
        "purple": ("بنفسجي", "بنفسجية"),
        "pink": ("وردي", "وردية"),
    },
    "shape": {
        "circle": ("دائرة", "f"),
        "square": ("مربع", "m"),
        "triangle": ("مثلث", "m"),
        "star": ("نجمة", "f"),
        "diamond": ("معين", "m"),
    },
    # "خلفية" (background) is feminine
    "background": {"white": "بيضاء", "gray": "رمادية", "black": "سوداء"},
    "position": {
        "left": "في يسار الصورة",
        "right": "في يمين الصورة",
        "top": "في أعلى الصورة",
        "bottom": "في أسفل الصورة",
        "centre": "في وسط الصورة",
    },
    "relation": {"left_of": "على يسار", "above": "فوق"},
    # with the pronoun suffix "its": ـه (masculine), ـها (feminine)
    "relation_it": {"left_of": ("على يساره", "على يسارها"), "above": ("فوقه", "فوقها")},
}

_TABLES = {"en": EN, "zh": ZH, "ja": JA, "ko": KO, "es": ES, "fr": FR, "it": IT, "ru": RU, "ar": AR}


def _forms(entry) -> frozenset[str]:
    """Every surface string of a table entry: a word, a tuple of forms or a dict of forms."""
    if isinstance(entry, str):
        return frozenset({entry})
    values = entry.values() if isinstance(entry, dict) else entry
    return frozenset().union(*(_forms(v) for v in values))


def _without_gender(entry):
    """A shape entry is ``(word or forms, gender)`` outside the CJK tables; the gender is no word."""
    return entry[0] if isinstance(entry, tuple) and entry[-1] in ("m", "f") else entry


def words(lang: str) -> dict[str, dict[str, frozenset[str]]]:
    """For each attribute kind and value, the surface forms that a caption may use for it
    (inflected forms included). Lets tests check that a caption names what it should."""
    table = _TABLES[lang]
    kinds = ("size", "colour", "shape", "background", "position", "relation")
    out = {kind: {value: _forms(_without_gender(entry)) for value, entry in table[kind].items()} for kind in kinds}
    for relation, entry in table.get("relation_it", {}).items():
        out["relation"][relation] |= _forms(entry)
    return out


# ------------------------------------------------------------------------------ noun phrases


def _en_np(thing: Thing, sized: bool = True) -> str:
    words_ = ([EN["size"][thing.size]] if sized else []) + [EN["colour"][thing.colour], EN["shape"][thing.shape]]
    article = "an" if words_[0][0] in "aeiou" else "a"
    return f"{article} {' '.join(words_)}"


def _zh_np(thing: Thing, sized: bool = True) -> str:
    size = ZH["size"][thing.size] if sized else ""
    return f"{ZH['measure'][thing.shape]}{ZH['colour'][thing.colour]}的{size}{ZH['shape'][thing.shape]}"


def _ja_np(thing: Thing, sized: bool = True) -> str:
    size = JA["size"][thing.size] if sized else ""
    return f"{size}{JA['colour'][thing.colour]}{JA['shape'][thing.shape]}"


def _ko_np(thing: Thing, sized: bool = True) -> str:
    size = [KO["size"][thing.size]] if sized else []
    return " ".join(size + [KO["colour"][thing.colour], KO["shape"][thing.shape]])


def _gender_index(gender: str) -> int:
    return 0 if gender == "m" else 1


def _es_np(thing: Thing, sized: bool = True) -> str:
    noun, gender = ES["shape"][thing.shape]
    g = _gender_index(gender)
    size = [ES["size"][thing.size][g]] if sized else []
    return " ".join(["un" if gender == "m" else "una", noun, ES["colour"][thing.colour][g]] + size)


def _fr_np(thing: Thing, sized: bool = True) -> str:
    noun, gender = FR["shape"][thing.shape]
    g = _gender_index(gender)
    size = [FR["size"][thing.size][g]] if sized else []
    return " ".join(["un" if gender == "m" else "une"] + size + [noun, FR["colour"][thing.colour][g]])


def _it_np(thing: Thing, sized: bool = True) -> str:
    noun, gender = IT["shape"][thing.shape]
    g = _gender_index(gender)
    size = [IT["size"][thing.size][g]] if sized else []
    return " ".join(["un" if gender == "m" else "una"] + size + [noun, IT["colour"][thing.colour][g]])


def _ru_np(thing: Thing, case: str = "nom", sized: bool = True) -> str:
    forms, gender = RU["shape"][thing.shape]
    size = [RU["size"][thing.size][(case, gender)]] if sized else []
    return " ".join(size + [RU["colour"][thing.colour][(case, gender)], forms[_RU_CASES.index(case)]])


def _ar_np(thing: Thing, sized: bool = True) -> str:
    noun, gender = AR["shape"][thing.shape]
    g = _gender_index(gender)
    size = [AR["size"][thing.size][g]] if sized else []
    return " ".join([noun, AR["colour"][thing.colour][g]] + size)


_NOUN_PHRASES: dict[str, Callable[..., str]] = {
    "en": _en_np,
    "zh": _zh_np,
    "ja": _ja_np,
    "ko": _ko_np,
    "es": _es_np,
    "fr": _fr_np,
    "it": _it_np,
    "ru": _ru_np,
    "ar": _ar_np,
}


def phrase(colour: str, shape: str, lang: str) -> str:
    """The short noun phrase "a red circle" in ``lang``, for zero-shot classification prompts."""
    thing = Thing(shape, colour, "small")
    if lang == "ja":  # counted, as Japanese names a single object
        return f"{_ja_np(thing, sized=False)}が一つ"
    if lang == "ko":
        return f"{_ko_np(thing, sized=False)} 한 개"
    return _NOUN_PHRASES[lang](thing, sized=False)


# ------------------------------------------------------------------------------ templates
# Each language fills named slots from the scene; template t of every language says the same.
# English one-thing: 0 "A large red circle on the left of the picture, on a white background."
#                    1 "On a white background there is a large red circle on the left of the picture."
#                    2 "A white background with a large red circle on the left of the picture."
# English two-thing: 0 "A small red circle to the left of a large blue square, on a white background."
#                    1 "On a white background there is a large blue square, and to the left of it a small red circle."

TEMPLATES = {
    "en": (
        ("{a0} {pos}, on {bg}.", "On {bg} there is {a0} {pos}.", "{bg} with {a0} {pos}."),
        ("{a0} {rel} {a1}, on {bg}.", "On {bg} there is {a1}, and {rel_it} {a0}."),
    ),
    "zh": (
        ("{n0}，位于{pos}，{bg}背景。", "{bg}背景上，{pos}有{n0}。", "一张{bg}背景的图片，{pos}画着{n0}。"),
        ("{n0}位于{n1}{rel}，{bg}背景。", "{bg}背景上有{n1}，它的{rel}是{n0}。"),
    ),
    "ja": (
        (
            "{n0}が一つ、{bg}背景の画像の{pos}にある。",
            "{bg}背景に{n0}が一つあり、画像の{pos}に位置している。",
            "画像の{pos}に{n0}が一つ描かれた{bg}背景。",
        ),
        ("{bg}背景の画像で、{n1}の{rel}に{n0}が一つある。", "{bg}背景に{n1}が一つあり、その{rel}に{n0}が一つある。"),
    ),
    "ko": (
        # "배경에", not "배경 위": "위" is the word for "above"
        (
            "{bg} 배경의 그림 {pos}에 있는 {n0} 한 개.",
            "{bg} 배경에 {n0} 한 개가 그림 {pos}에 있다.",
            "그림 {pos}에 {n0} 한 개가 있는 {bg} 배경.",
        ),
        (
            "{bg} 배경의 그림에서 {n1} {rel}에 있는 {n0} 한 개.",
            "{bg} 배경에 {n1} 한 개가 있고, 그 {rel}에 {n0} 한 개가 있다.",
        ),
    ),
    "es": (
        ("{a0} {pos}, sobre un fondo {bg}.", "Sobre un fondo {bg} hay {a0} {pos}.", "Un fondo {bg} con {a0} {pos}."),
        ("{a0} {rel} {a1}, sobre un fondo {bg}.", "Sobre un fondo {bg} hay {a1} y, {rel_it}, {a0}."),
    ),
    "fr": (
        ("{a0} {pos}, sur un fond {bg}.", "Sur un fond {bg}, il y a {a0} {pos}.", "Un fond {bg} avec {a0} {pos}."),
        ("{a0} {rel_a1}, sur un fond {bg}.", "Sur un fond {bg}, il y a {a1} et, {rel_it}, {a0}."),
    ),
    "it": (
        ("{a0} {pos}, su uno sfondo {bg}.", "Su uno sfondo {bg} c'è {a0} {pos}.", "Uno sfondo {bg} con {a0} {pos}."),
        ("{a0} {rel} {a1}, su uno sfondo {bg}.", "Su uno sfondo {bg} c'è {a1} e, {rel_it}, {a0}."),
    ),
    "ru": (
        ("{n0} {pos} на {bg_prep} фоне.", "На {bg_prep} фоне {pos} находится {n0}.", "{bg_nom} фон с {n0_ins} {pos}."),
        ("{n0} {rel_n1} на {bg_prep} фоне.", "На {bg_prep} фоне находится {n1}, а {rel_it} — {n0}."),
    ),
    "ar": (
        ("{n0} {pos}، على خلفية {bg}.", "على خلفية {bg} {exists0} {n0} {pos}.", "خلفية {bg} عليها {n0} {pos}."),
        ("{n0} {rel} {n1}، على خلفية {bg}.", "على خلفية {bg} {exists1} {n1}، و{rel_it} {n0}."),
    ),
}


def _gender(table: dict, thing: Thing) -> str:
    return table["shape"][thing.shape][1]


def _slots_en(scene: Scene) -> dict:
    slots = {"a0": _en_np(scene.things[0]), "bg": f"a {EN['background'][scene.background]} background"}
    if scene.position:
        return slots | {"pos": EN["position"][scene.position]}
    rel, rel_it = EN["relation"][scene.relation], EN["relation_it"][scene.relation]
    return slots | {"a1": _en_np(scene.things[1]), "rel": rel, "rel_it": rel_it}


def _slots_cjk(table: dict, noun_phrase: Callable[[Thing], str]) -> Callable[[Scene], dict]:
    def slots(scene: Scene) -> dict:
        out = {"n0": noun_phrase(scene.things[0]), "bg": table["background"][scene.background]}
        if scene.position:
            return out | {"pos": table["position"][scene.position]}
        return out | {"n1": noun_phrase(scene.things[1]), "rel": table["relation"][scene.relation]}

    return slots


def _slots_es(scene: Scene) -> dict:
    slots = {"a0": _es_np(scene.things[0]), "bg": ES["background"][scene.background]}
    if scene.position:
        return slots | {"pos": ES["position"][scene.position]}
    rel_it = ES["relation_it"][scene.relation][_gender_index(_gender(ES, scene.things[1]))]
    return slots | {"a1": _es_np(scene.things[1]), "rel": ES["relation"][scene.relation], "rel_it": rel_it}


def _slots_fr(scene: Scene) -> dict:
    slots = {"a0": _fr_np(scene.things[0]), "bg": FR["background"][scene.background]}
    if scene.position:
        return slots | {"pos": FR["position"][scene.position]}
    a1 = _fr_np(scene.things[1])
    rel_a1 = FR["relation"][scene.relation] + a1
    rel_it = FR["relation_it"][scene.relation][_gender_index(_gender(FR, scene.things[1]))]
    return slots | {"a1": a1, "rel_a1": rel_a1, "rel_it": rel_it}


def _slots_it(scene: Scene) -> dict:
    slots = {"a0": _it_np(scene.things[0]), "bg": IT["background"][scene.background]}
    if scene.position:
        return slots | {"pos": IT["position"][scene.position]}
    rel_it = IT["relation_it"][scene.relation][_gender_index(_gender(IT, scene.things[1]))]
    return slots | {"a1": _it_np(scene.things[1]), "rel": IT["relation"][scene.relation], "rel_it": rel_it}


def _slots_ru(scene: Scene) -> dict:
    nominative, prepositional = RU["background"][scene.background]
    slots = {"n0": _ru_np(scene.things[0]), "bg_nom": nominative, "bg_prep": prepositional}
    if scene.position:
        return slots | {"pos": RU["position"][scene.position], "n0_ins": _ru_np(scene.things[0], "ins")}
    case = "gen" if scene.relation == "left_of" else "ins"  # "слева от" + genitive, "над" + instrumental
    rel_n1 = f"{RU['relation'][scene.relation]} {_ru_np(scene.things[1], case)}"
    rel_it = RU["relation_it"][scene.relation][_gender_index(_gender(RU, scene.things[1]))]
    return slots | {"n1": _ru_np(scene.things[1]), "rel_n1": rel_n1, "rel_it": rel_it}


def _slots_ar(scene: Scene) -> dict:
    def exists(thing: Thing) -> str:  # "there is": the verb agrees with the noun's gender
        return "توجد" if _gender(AR, thing) == "f" else "يوجد"

    slots = {
        "n0": _ar_np(scene.things[0]),
        "bg": AR["background"][scene.background],
        "exists0": exists(scene.things[0]),
    }
    if scene.position:
        return slots | {"pos": AR["position"][scene.position]}
    rel_it = AR["relation_it"][scene.relation][_gender_index(_gender(AR, scene.things[1]))]  # "its" agrees too
    return slots | {
        "n1": _ar_np(scene.things[1]),
        "exists1": exists(scene.things[1]),
        "rel": AR["relation"][scene.relation],
        "rel_it": rel_it,
    }


_SLOTS: dict[str, Callable[[Scene], dict]] = {
    "en": _slots_en,
    "zh": _slots_cjk(ZH, _zh_np),
    "ja": _slots_cjk(JA, _ja_np),
    "ko": _slots_cjk(KO, _ko_np),
    "es": _slots_es,
    "fr": _slots_fr,
    "it": _slots_it,
    "ru": _slots_ru,
    "ar": _slots_ar,
}


def n_templates(lang: str, n_things: int) -> int:
    return len(TEMPLATES[lang][n_things - 1])


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


SHORT = -1  # the template number of a one-thing scene's short caption, "a red circle"
SHORT_PROBABILITY = 0.2


def caption(scene: Scene, lang: str, template: int) -> str:
    """Caption ``template`` of ``scene`` in ``lang``; it names every attribute of the scene,
    except ``SHORT``, which names only the colour and shape of a one-thing scene."""
    if template == SHORT:
        if len(scene.things) != 1:
            raise ValueError("the short caption is for one-thing scenes")
        return phrase(scene.things[0].colour, scene.things[0].shape, lang)
    pattern = TEMPLATES[lang][len(scene.things) - 1][template]
    return _capitalise(pattern.format(**_SLOTS[lang](scene)))


def draw_template(scene: Scene, rng: random.Random) -> int:
    """A template number; one-thing scenes get the short caption now and then, as real captions
    vary in detail, so that short prompts (zero-shot classification's "a red circle") are familiar."""
    if len(scene.things) == 1 and rng.random() < SHORT_PROBABILITY:
        return SHORT
    return rng.randrange(n_templates("en", len(scene.things)))


def captions(scene: Scene, rng: random.Random) -> dict[str, str]:
    """One caption per language, all from the same template (parallel text)."""
    template = draw_template(scene, rng)
    return {lang: caption(scene, lang, template) for lang in LANGUAGES}


# ------------------------------------------------------------------------------ files


@dataclass(frozen=True)
class Sample:
    key: str
    scene: Scene
    image: Image.Image
    template: int

    @property
    def captions(self) -> dict[str, str]:
        return {lang: caption(self.scene, lang, self.template) for lang in LANGUAGES}


def make_sample(seed: int, split: str, index: int) -> Sample:
    """Sample ``index`` of a stream: it depends on (seed, split, index) only, not on sharding."""
    rng = random.Random(f"{seed}-{split}-{index}")
    scene = sample_scene(rng, split)
    image = render(scene, rng)
    return Sample(f"{index:08d}", scene, image, draw_template(scene, rng))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)  # no metadata, fixed settings
    return buffer.getvalue()


def _sample_members(sample: Sample) -> Iterator[tuple[str, bytes]]:
    meta = {"captions": sample.captions, "label": sample.scene.to_dict(), "template": sample.template}
    yield f"{sample.key}.png", png_bytes(sample.image)
    yield f"{sample.key}.txt", sample.captions["en"].encode("utf-8")
    yield f"{sample.key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8")


def _tar_member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_atomically(path: Path, write: Callable[[io.BufferedWriter], None]) -> Path:
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

    return _write_atomically(path, write)


def write_shards(folder: str | Path, n: int, seed: int, *, split: str = "train", shard_size: int = 1000) -> list[Path]:
    """``n`` samples as webdataset shards ``folder/00000.tar ...`` in img2dataset layout:
    ``KEY.png``, ``KEY.txt`` (English caption) and ``KEY.json`` (all captions, label, template)."""
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
    return _write_atomically(Path(path), lambda fh: fh.write(data))
