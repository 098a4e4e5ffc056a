"""The mini world's captions: noun phrases and parallel templates in 9 languages.

Template ``t`` of one language is a translation of template ``t`` of every other, so captions
of a sample are parallel text, and every template names every attribute.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from altdiffusion.mini.scenes import LANGUAGES, Scene, Thing
from altdiffusion.mini.vocabulary import _RU_CASES, AR, EN, ES, FR, IT, JA, KO, RU, ZH

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
    n1_rel = _ru_np(scene.things[1], case)  # its own slot: phrase_spans finds the phrase in this case
    rel_it = RU["relation_it"][scene.relation][_gender_index(_gender(RU, scene.things[1]))]
    rel_n1 = f"{RU['relation'][scene.relation]} {n1_rel}"
    return slots | {"n1": _ru_np(scene.things[1]), "n1_rel": n1_rel, "rel_n1": rel_n1, "rel_it": rel_it}


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


def slots(lang: str, scene: Scene) -> dict[str, str]:
    """The words ``scene``'s templates in ``lang`` are filled with (English: ``a0``, ``a1`` the things)."""
    return _SLOTS[lang](scene)


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
    return _capitalise(pattern.format(**slots(lang, scene)))


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


def phrase_spans(scene: Scene, lang: str, template: int) -> list[tuple[int, int]]:
    """(start, end) in ``caption(scene, lang, template)`` of each thing's noun phrase, in the
    scene's order: where training tells the UNet's cross-attention each thing's words belong."""
    text = caption(scene, lang, template)
    if template == SHORT:
        return [(0, len(text))]  # the short caption is the thing's phrase alone
    filled, lowered, spans = slots(lang, scene), text.lower(), []
    for i in range(len(scene.things)):
        forms = [filled.get(f"{slot}{i}{case}") for slot in ("a", "n") for case in ("", "_ins", "_rel")]
        found = [form.lower() for form in forms if form and form.lower() in lowered]
        if not found:
            raise ValueError(f"thing {i}'s phrase is not in the {lang} caption {text!r} (template {template})")
        start = lowered.index(found[0])
        spans.append((start, start + len(found[0])))
    return spans
