"""The mini world: scenes, pictures, captions in 9 languages, and deterministic shards."""

import hashlib
import io
import itertools
import json
import random
import re
import tarfile

import numpy as np
import pytest
from PIL import Image

from altdiffusion.mini import scenes, world
from altdiffusion.mini.world import (
    BACKGROUNDS,
    COLOURS,
    HELD_OUT,
    LANGUAGES,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    Thing,
    caption,
    n_templates,
    phrase,
    phrase_spans,
    render,
    sample_scene,
    scenes_for_eval,
    write_parallel_text,
    write_shards,
)


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _members(path):
    with tarfile.open(path) as tar:
        return {m.name: (m, tar.extractfile(m).read()) for m in tar.getmembers()}


@pytest.fixture(scope="module")
def train_shards(tmp_path_factory):
    """2000 training samples in two shards."""
    folder = tmp_path_factory.mktemp("train-shards")
    return write_shards(folder, 2000, seed=11, split="train", shard_size=1000)


# ------------------------------------------------------------------------------ the world


def test_palette_and_held_out_pairs():
    assert list(COLOURS) == ["red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink"]
    assert not set(BACKGROUNDS.values()) & set(COLOURS.values())
    rgb = np.array(list(COLOURS.values()), dtype=float)
    closest = min(np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2))
    assert closest > 80, "palette colours must stay well apart"
    assert len(HELD_OUT) == 8
    assert sorted(colour for colour, _ in HELD_OUT) == sorted(COLOURS)
    assert {shape for _, shape in HELD_OUT} == set(SHAPES)


def test_scene_dict_round_trips_through_json():
    rng = random.Random(0)
    for split in world.SPLITS:
        for _ in range(200):
            scene = sample_scene(rng, split)
            assert Scene.from_dict(json.loads(json.dumps(scene.to_dict()))) == scene


def test_scenes_are_validated():
    red_circle = Thing("circle", "red", "small")
    with pytest.raises(ValueError):
        Scene((red_circle,), "white", position=None, relation="above")
    with pytest.raises(ValueError):
        Scene((red_circle, Thing("circle", "red", "large")), "white", relation="above")  # same pair
    with pytest.raises(ValueError):
        Thing("hexagon", "red", "small")


def test_splits_keep_held_out_pairs_apart():
    rng = random.Random(1)
    counts = {1: 0, 2: 0}
    for _ in range(2000):
        for split in ("train", "seen"):
            scene = sample_scene(rng, split)
            assert not scene.is_held_out
            counts[len(scene.things)] += 1
        held = sample_scene(rng, "heldout")
        assert held.is_held_out
        if len(held.things) == 1:
            assert held.things[0].pair in HELD_OUT
        else:
            assert held.things[0].pair != held.things[1].pair
    assert 0.65 < counts[1] / 4000 < 0.75
    with pytest.raises(ValueError):
        sample_scene(rng, "test")


def test_scenes_for_eval_are_distinct_and_deterministic():
    scenes = scenes_for_eval("heldout", 100, seed=5)
    assert scenes == scenes_for_eval("heldout", 100, seed=5)
    assert scenes != scenes_for_eval("heldout", 100, seed=6)
    assert len({world.scene_key(s) for s in scenes}) == 100
    assert all(s.is_held_out and len(s.things) == 1 for s in scenes)
    pairs = scenes_for_eval("seen", 50, seed=5, n_things=2)
    assert all(len(s.things) == 2 and not s.is_held_out for s in pairs)
    # 8 pairs x 2 sizes x 5 positions x 3 backgrounds = 240 held-out one-thing scenes
    assert len(scenes_for_eval("heldout", 240, seed=0)) == 240
    with pytest.raises(ValueError):
        scenes_for_eval("heldout", 241, seed=0)


# ------------------------------------------------------------------------------ pictures


def test_render_draws_flat_colours_on_the_background():
    scene = Scene((Thing("square", "blue", "large"),), "gray", position="centre")
    image = render(scene)
    assert image.size == (64, 64) and image.mode == "RGB"
    pixels = np.asarray(image)
    assert tuple(pixels[0, 0]) == BACKGROUNDS["gray"]
    assert tuple(pixels[32, 32]) == COLOURS["blue"]
    inside = np.all(pixels == COLOURS["blue"], axis=2)
    assert 26 * 26 <= inside.sum() <= 28 * 28  # a 28 px square, edges antialiased
    assert np.array_equal(pixels, np.asarray(render(scene)))  # canonical: no jitter


def test_render_places_things_where_the_label_says():
    for position, (x, y) in world.POSITION_CENTRES.items():
        image = np.asarray(render(Scene((Thing("circle", "red", "small"),), "black", position=position)))
        rows, columns = np.nonzero(image.sum(axis=2) > 0)
        assert abs((columns.min() + columns.max() + 1) / 2 - x) <= 1 and abs((rows.min() + rows.max() + 1) / 2 - y) <= 1
    things = (Thing("star", "yellow", "large"), Thing("triangle", "green", "large"))
    for relation in RELATIONS:
        scene = Scene(things, "white", relation=relation)
        for seed in range(20):
            a, b = world.placements(scene, random.Random(seed))
            axis = 0 if relation == "left_of" else 1
            assert b.centre[axis] - a.centre[axis] > 25
            assert scenes._gap(a, b, axis) >= world.MIN_GAP


def test_jitter_is_small_and_reproducible():
    scene = Scene((Thing("diamond", "pink", "small"),), "white", position="left")
    assert np.array_equal(np.asarray(render(scene, random.Random(3))), np.asarray(render(scene, random.Random(3))))
    for seed in range(50):
        (placed,) = world.placements(scene, random.Random(seed))
        assert abs(placed.centre[0] - 17) <= 2 and abs(placed.centre[1] - 32) <= 2
        assert abs(placed.extent - 16) <= 1.5


# ------------------------------------------------------------------------------ captions


def _one_thing_scenes():
    for (colour, shape), size, position, background in itertools.product(
        world.ALL_PAIRS, SIZES, POSITIONS, BACKGROUNDS
    ):
        yield Scene((Thing(shape, colour, size),), background, position=position)


def _two_thing_scenes(n=300):
    rng = random.Random(2)
    return [sample_scene(rng, rng.choice(world.SPLITS), n_things=2) for _ in range(n)]


def _mentions(text, forms):
    return any(form.lower() in text.lower() for form in forms)  # a caption starts with a capital


def test_every_template_names_every_attribute_in_every_language():
    scenes = list(_one_thing_scenes()) + _two_thing_scenes()
    for lang in LANGUAGES:
        vocab = world.words(lang)
        for scene in scenes:
            for template in range(n_templates(lang, len(scene.things))):
                text = caption(scene, lang, template)
                where = f"{lang} template {template}: {text}"
                for thing in scene.things:
                    assert _mentions(text, vocab["colour"][thing.colour]), where
                    assert _mentions(text, vocab["shape"][thing.shape]), where
                    assert _mentions(text, vocab["size"][thing.size]), where
                assert _mentions(text, vocab["background"][scene.background]), where
                if scene.position:
                    assert _mentions(text, vocab["position"][scene.position]), where
                else:
                    assert _mentions(text, vocab["relation"][scene.relation]), where
                for colour in set(COLOURS) - {t.colour for t in scene.things}:
                    assert not _mentions(text, vocab["colour"][colour]), f"{where} names {colour}"


def test_each_thing_span_holds_its_whole_phrase():
    """The span that grounding training ties to a thing's box names the thing's size, colour and
    shape, in whatever case the template puts it (Russian "над большим зелёным квадратом": all of it)."""
    for lang in LANGUAGES:
        vocab = world.words(lang)
        for scene in list(_one_thing_scenes()) + _two_thing_scenes():
            for template in range(n_templates(lang, len(scene.things))):
                text = caption(scene, lang, template)
                for thing, (start, end) in zip(scene.things, phrase_spans(scene, lang, template)):
                    for kind in ("size", "colour", "shape"):
                        where = (lang, template, text, text[start:end], kind)
                        assert _mentions(text[start:end], vocab[kind][getattr(thing, kind)]), where


def test_templates_are_parallel_across_languages():
    assert all(n_templates(lang, 1) >= 3 and n_templates(lang, 2) >= 2 for lang in LANGUAGES)
    for n_things in (1, 2):
        assert len({n_templates(lang, n_things) for lang in LANGUAGES}) == 1
    rng = random.Random(4)
    for _ in range(50):
        scene = sample_scene(rng)
        texts = world.captions(scene, rng)
        assert list(texts) == list(LANGUAGES)
        assert len(set(texts.values())) == len(LANGUAGES)
        candidates = list(range(n_templates("en", len(scene.things)))) + (
            [world.SHORT] if len(scene.things) == 1 else []
        )
        template = next(t for t in candidates if caption(scene, "en", t) == texts["en"])
        assert texts == {lang: caption(scene, lang, template) for lang in LANGUAGES}


def test_templates_of_one_language_differ():
    scene = Scene((Thing("star", "red", "large"),), "white", position="left")
    pair = Scene((Thing("circle", "red", "small"), Thing("square", "blue", "large")), "white", relation="left_of")
    for lang in LANGUAGES:
        for s in (scene, pair):
            texts = [caption(s, lang, t) for t in range(n_templates(lang, len(s.things)))]
            assert len(set(texts)) == len(texts)


def test_short_captions_are_the_zero_shot_phrases_and_some_captions_are_short():
    rng = random.Random(6)
    scenes = [sample_scene(rng, n_things=1) for _ in range(400)]
    templates = [world.draw_template(s, rng) for s in scenes]
    assert 0.1 < templates.count(world.SHORT) / len(templates) < 0.3
    s = scenes[0]
    for lang in LANGUAGES:
        assert caption(s, lang, world.SHORT) == world.phrase(s.things[0].colour, s.things[0].shape, lang)


def test_scripts_and_measure_words():
    rng = random.Random(5)
    for _ in range(100):
        scene = sample_scene(rng)
        t = world.draw_template(scene, rng)
        assert re.search("[\u0600-\u06ff]", caption(scene, "ar", t))
        assert not re.search("[A-Za-z]", caption(scene, "ar", t))
        assert re.search("[一][个颗]", caption(scene, "zh", t))
        assert "一つ" in caption(scene, "ja", t)
        assert "한 개" in caption(scene, "ko", t)
        assert re.search("[а-яё]", caption(scene, "ru", t))


GOLDEN = {
    # a large red star on the left, on white
    "star": {
        "en": "A large red star on the left of the picture, on a white background.",
        "zh": "一颗红色的大五角星，位于画面左侧，白色背景。",
        "es": "Una estrella roja grande a la izquierda de la imagen, sobre un fondo blanco.",
        "fr": "Une grande étoile rouge à gauche de l'image, sur un fond blanc.",
        "it": "Una grande stella rossa a sinistra dell'immagine, su uno sfondo bianco.",
        "ru": "Большая красная звезда в левой части изображения на белом фоне.",
        "ja": "大きな赤い星が一つ、白い背景の画像の左側にある。",
        "ko": "흰색 배경의 그림 왼쪽에 있는 큰 빨간 별 한 개.",
        "ar": "نجمة حمراء كبيرة في يسار الصورة، على خلفية بيضاء.",
    },
    # a small green circle to the left of a large blue star, on gray
    "pair": {
        "en": "A small green circle to the left of a large blue star, on a gray background.",
        "zh": "一个绿色的小圆形位于一颗蓝色的大五角星左侧，灰色背景。",
        "es": "Un círculo verde pequeño a la izquierda de una estrella azul grande, sobre un fondo gris.",
        "fr": "Un petit cercle vert à gauche d'une grande étoile bleue, sur un fond gris.",
        "it": "Un piccolo cerchio verde a sinistra di una grande stella blu, su uno sfondo grigio.",
        "ru": "Маленький зелёный круг слева от большой синей звезды на сером фоне.",
        "ja": "灰色の背景の画像で、大きな青い星の左に小さな緑の丸が一つある。",
        "ko": "회색 배경의 그림에서 큰 파란 별 왼쪽에 있는 작은 초록색 원 한 개.",
        "ar": "دائرة خضراء صغيرة على يسار نجمة زرقاء كبيرة، على خلفية رمادية.",
    },
}


def test_golden_captions_agree_in_gender_number_and_case():
    star = Scene((Thing("star", "red", "large"),), "white", position="left")
    pair = Scene((Thing("circle", "green", "small"), Thing("star", "blue", "large")), "gray", relation="left_of")
    for lang in LANGUAGES:
        assert caption(star, lang, 0) == GOLDEN["star"][lang]
        assert caption(pair, lang, 0) == GOLDEN["pair"][lang]
    above = Scene((Thing("square", "purple", "small"), Thing("star", "yellow", "small")), "black", relation="above")
    assert caption(above, "ru", 0) == "Маленький фиолетовый квадрат над маленькой жёлтой звездой на чёрном фоне."
    assert (
        caption(above, "ru", 1)
        == "На чёрном фоне находится маленькая жёлтая звезда, а над ней — маленький фиолетовый квадрат."
    )
    assert caption(above, "ar", 1) == "على خلفية سوداء توجد نجمة صفراء صغيرة، وفوقها مربع بنفسجي صغير."
    assert (
        caption(above, "es", 1)
        == "Sobre un fondo negro hay una estrella amarilla pequeña y, encima de ella, un cuadrado morado pequeño."
    )
    assert (
        caption(above, "en", 1)
        == "On a black background there is a small yellow star, and above it a small purple square."
    )


def test_phrases_for_zero_shot_prompts():
    assert phrase("red", "circle", "en") == "a red circle"
    assert phrase("orange", "diamond", "en") == "an orange diamond"
    assert phrase("red", "circle", "zh") == "一个红色的圆形"
    assert phrase("red", "star", "zh") == "一颗红色的五角星"
    assert phrase("red", "circle", "ja") == "赤い丸が一つ"
    assert phrase("red", "star", "es") == "una estrella roja"
    assert phrase("green", "star", "fr") == "une étoile verte"
    assert phrase("blue", "star", "ru") == "синяя звезда"
    assert phrase("red", "circle", "ar") == "دائرة حمراء"
    for lang in LANGUAGES:
        texts = {phrase(colour, shape, lang) for colour, shape in world.ALL_PAIRS}
        assert len(texts) == len(world.ALL_PAIRS)


# ------------------------------------------------------------------------------ files


def test_shards_are_byte_for_byte_deterministic(tmp_path):
    first = write_shards(tmp_path / "a", 45, seed=7, shard_size=20)
    again = write_shards(tmp_path / "b", 45, seed=7, shard_size=20)
    other = write_shards(tmp_path / "c", 45, seed=8, shard_size=20)
    assert [p.name for p in first] == ["00000.tar", "00001.tar", "00002.tar"]
    assert [_sha256(p) for p in first] == [_sha256(p) for p in again]
    assert all(_sha256(p) != _sha256(q) for p, q in zip(first, other))
    assert not list((tmp_path / "a").glob("*.tmp"))
    # a sample does not depend on how the stream is cut into shards
    whole = write_shards(tmp_path / "d", 45, seed=7, shard_size=45)
    pieces = {}
    for path in first:
        pieces.update({name: data for name, (_, data) in _members(path).items()})
    assert pieces == {name: data for name, (_, data) in _members(whole[0]).items()}


def test_shard_members_follow_the_img2dataset_layout(train_shards):
    members = _members(train_shards[0])
    assert len(members) == 3 * 1000
    assert list(members)[:3] == ["00000000.png", "00000000.txt", "00000000.json"]
    for info, _ in itertools.islice(members.values(), 30):
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode) == (0, 0, 0, "", "", 0o644)
    for key in ("00000000", "00000999"):
        meta = json.loads(members[f"{key}.json"][1].decode("utf-8"))
        scene = Scene.from_dict(meta["label"])
        assert set(meta["captions"]) == set(LANGUAGES)
        assert meta["captions"] == {lang: caption(scene, lang, meta["template"]) for lang in LANGUAGES}
        assert members[f"{key}.txt"][1].decode("utf-8") == meta["captions"]["en"]
        image = Image.open(io.BytesIO(members[f"{key}.png"][1]))
        assert image.size == (64, 64) and image.mode == "RGB"
        assert tuple(image.getpixel((0, 0))) == BACKGROUNDS[scene.background]
    raw = members["00000000.json"][1].decode("utf-8")
    assert "\\u" not in raw  # UTF-8 text, not escapes


def test_train_shards_never_show_a_held_out_pair(train_shards):
    labels = []
    for path in train_shards:
        labels += [json.loads(data)["label"] for name, (_, data) in _members(path).items() if name.endswith(".json")]
    assert len(labels) == 2000
    scenes = [Scene.from_dict(label) for label in labels]
    assert not any(scene.is_held_out for scene in scenes)
    assert {t.pair for s in scenes for t in s.things} == set(world.TRAIN_PAIRS)


def test_the_project_reader_reads_the_shards(train_shards):
    from altdiffusion.training.data import SkipCounter, data_source, image_text_samples

    source = data_source(str(train_shards[0].parent))
    assert source == [str(p) for p in train_shards]
    skipped = SkipCounter()
    stream = image_text_samples(source, rank=0, world=1, seed=0, skipped=skipped)
    first = list(itertools.islice(stream, 60))
    members = _members(train_shards[0])
    languages = set()
    for i, (image, text) in enumerate(first):
        captions = json.loads(members[f"{i:08d}.json"][1])["captions"]
        assert image.size == (64, 64)
        assert text in captions.values()
        languages.add(next(lang for lang, c in captions.items() if c == text))
    assert len(languages) >= 5  # one language sampled per sample, not always English
    assert skipped.total == 0
    chinese = image_text_samples(source, rank=0, world=1, seed=0, languages=["zh"])
    assert all(re.search("[\u4e00-\u9fff]", text) for _, text in itertools.islice(chinese, 10))


def test_parallel_text_is_deterministic_jsonl(tmp_path):
    from altdiffusion.training.data import read_parallel_text

    path = write_parallel_text(tmp_path / "parallel.jsonl", 40, seed=3)
    assert path.read_bytes() == write_parallel_text(tmp_path / "again.jsonl", 40, seed=3).read_bytes()
    assert path.read_bytes() != write_parallel_text(tmp_path / "other.jsonl", 40, seed=4).read_bytes()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 40 and all(list(line) == list(LANGUAGES) for line in lines)
    pairs = read_parallel_text([path])
    assert len(pairs) == 40 * len(LANGUAGES)
    assert all(teacher in {line["en"] for line in lines} for _, teacher in pairs)


def test_shard_regions_box_each_thing_and_span_its_phrase(train_shards):
    """Each region's box holds its thing's pixels (the antialiased edge aside), and its span in
    every caption is that thing's phrase: it names the thing's colour and shape in every language."""
    members = _members(train_shards[0])
    two_things = 0
    for i in range(0, 1000, 7):
        meta = json.loads(members[f"{i:08d}.json"][1])
        scene = Scene.from_dict(meta["label"])
        image = np.asarray(Image.open(io.BytesIO(members[f"{i:08d}.png"][1])), dtype=int)
        assert tuple(meta["background"]) == BACKGROUNDS[scene.background]
        assert len(meta["regions"]) == len(scene.things)
        two_things += len(scene.things) == 2
        rows, cols = np.mgrid[:64, :64]
        inside = [
            (cols >= left - 1) & (cols < right + 1) & (rows >= top - 1) & (rows < bottom + 1)
            for left, top, right, bottom in (region["box"] for region in meta["regions"])
        ]
        for k, (thing, region) in enumerate(zip(scene.things, meta["regions"])):
            exact = (image == COLOURS[thing.colour]).all(-1)
            same_colour = [inside[j] for j, other in enumerate(scene.things) if other.colour == thing.colour]
            assert (exact & inside[k]).sum() >= 10, (i, region)  # the thing is in its box
            assert not (exact & ~np.logical_or.reduce(same_colour)).any(), (i, region)  # and nowhere else
            spans = {lang: meta["captions"][lang][a:b] for lang, (a, b) in region["phrases"].items()}
            assert set(spans) == set(LANGUAGES) and all(spans.values())
            for lang, span in spans.items():
                for kind, value in (("colour", thing.colour), ("shape", thing.shape)):
                    assert any(form in span.lower() for form in world.words(lang)[kind][value]), (lang, span, value)
    assert two_things > 30
