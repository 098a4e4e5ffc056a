"""Zero-shot classification prompt templates per language, and a script-based language guess.

Templates avoid grammatical agreement with the label (Slavic cases, Arabic articles) by
putting the label after a colon where a language would inflect it.
"""

from __future__ import annotations

TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("a photo of a {}.", "a picture of a {}.", "an image of a {}."),
    "zh": ("一张{}的照片。", "{}的图片。", "这是一张{}的照片。"),
    "ja": ("{}の写真。", "{}の画像。"),
    "ko": ("{} 사진.", "{}의 사진."),
    "ar": ("صورة {}.", "صورة فوتوغرافية: {}."),
    "ru": ("фотография: {}.", "изображение: {}."),
    "uk": ("фотографія: {}.", "зображення: {}."),
    "es": ("una foto de {}.", "una imagen de {}."),
    "fr": ("une photo de {}.", "une image de {}."),
    "it": ("una foto di {}.", "un'immagine di {}."),
    "de": ("ein Foto von {}.", "ein Bild von {}."),
    "pt": ("uma foto de {}.", "uma imagem de {}."),
    "nl": ("een foto van {}.", "een afbeelding van {}."),
    "pl": ("zdjęcie: {}.", "obraz: {}."),
    "tr": ("{} fotoğrafı.", "bir {} resmi."),
    "vi": ("ảnh của {}.", "một bức ảnh về {}."),
    "th": ("ภาพถ่ายของ{}", "รูปภาพของ{}"),
    "hi": ("{} की तस्वीर।", "{} का फोटो।"),
}

# Unicode ranges that identify a language by script alone (first match wins).
_SCRIPTS = (
    ("ja", ((0x3040, 0x30FF),)),  # kana before Han: Japanese mixes both
    ("ko", ((0xAC00, 0xD7AF), (0x1100, 0x11FF))),
    ("zh", ((0x4E00, 0x9FFF), (0x3400, 0x4DBF))),
    ("ar", ((0x0600, 0x06FF),)),
    ("th", ((0x0E00, 0x0E7F),)),
    ("hi", ((0x0900, 0x097F),)),
    ("ru", ((0x0400, 0x04FF),)),
)


def guess_language(text: str) -> str:
    """The language a label is most likely in, by script; Latin script gives "en"."""
    for language, ranges in _SCRIPTS:
        if any(lo <= ord(ch) <= hi for ch in text for lo, hi in ranges):
            return language
    return "en"


def templates_for(language: str) -> tuple[str, ...]:
    from altdiffusion.errors import InvalidInputError

    if language not in TEMPLATES:
        raise InvalidInputError(
            f"no prompt templates for language {language!r}; known: {', '.join(TEMPLATES)} (or pass --template)"
        )
    return TEMPLATES[language]
