"""The mini world's words: one table per language, one word (or one set of inflected forms)
per attribute value (see captions.py for how they combine)."""

from __future__ import annotations

from altdiffusion.mini.scenes import COLOURS, POSITIONS, SHAPES

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
