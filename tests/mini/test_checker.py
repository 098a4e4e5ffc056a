"""The analytic checker: renders of a label pass, renders of a wrong label fail."""

import random
from collections import Counter

import numpy as np
from PIL import Image, ImageFilter

from altdiffusion.mini import world
from altdiffusion.mini.checker import analyse, check, passes, perturb
from altdiffusion.mini.world import Scene, Thing, render, sample_scene

N = 500


def _scene(rng):
    """Mixed one- and two-thing scenes from every split."""
    return sample_scene(rng, rng.choice(world.SPLITS))


def _soften(image, rng):
    """What a small diffusion model might do: soft edges and a slight colour cast."""
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(1)), dtype=np.int16)
    cast = np.array([rng.randint(-15, 15) for _ in range(3)], dtype=np.int16)
    return Image.fromarray(np.clip(blurred + cast, 0, 255).astype(np.uint8))


def test_renders_of_a_label_pass():
    rng = random.Random(0)
    failed = Counter()
    passed = 0
    for _ in range(N):
        scene = _scene(rng)
        result = check(render(scene, rng), scene)
        passed += all(result.values())
        failed.update(k for k, ok in result.items() if not ok)
    print(f"renders pass: {passed / N:.3f}; failed checks: {dict(failed)}")
    assert passed / N >= 0.99


def test_renders_of_a_wrong_label_fail():
    rng = random.Random(1)
    rejected, total, own_key_failed = Counter(), Counter(), Counter()
    for _ in range(N):
        scene = _scene(rng)
        wrong, attribute = perturb(scene, rng)
        result = check(render(wrong, rng), scene)
        total[attribute] += 1
        rejected[attribute] += not all(result.values())
        own_key_failed[attribute] += not result[attribute]
    rates = {a: round(rejected[a] / total[a], 3) for a in sorted(total)}
    overall = sum(rejected.values()) / N
    print(f"wrong labels rejected: {overall:.3f}; per attribute: {rates}")
    assert overall >= 0.99
    assert set(total) == {"colour", "shape", "size", "background", "count", "position", "relation"}
    # the check that fails is the one for the attribute that changed
    assert all(own_key_failed[a] / total[a] >= 0.97 for a in total), own_key_failed


def test_soft_and_colour_shifted_renders_still_pass():
    rng = random.Random(2)
    passed = 0
    failed = Counter()
    for _ in range(N):
        scene = _scene(rng)
        result = check(_soften(render(scene, rng), rng), scene)
        passed += all(result.values())
        failed.update(k for k, ok in result.items() if not ok)
    print(f"blurred, colour-shifted renders pass: {passed / N:.3f}; failed checks: {dict(failed)}")
    assert passed / N >= 0.95


def test_specks_are_ignored():
    rng = random.Random(3)
    passed = 0
    for _ in range(100):
        scene = _scene(rng)
        pixels = np.array(render(scene, rng))
        for _ in range(3):  # a few 3x3 specks of a random palette colour
            x, y = rng.randrange(2, 60), rng.randrange(2, 60)
            pixels[y : y + 3, x : x + 3] = world.COLOURS[rng.choice(list(world.COLOURS))]
        passed += passes(Image.fromarray(pixels), scene)
    assert passed >= 97


def test_analysis_measures_what_was_drawn():
    scene = Scene((Thing("triangle", "cyan", "large"), Thing("star", "orange", "small")), "black", relation="above")
    analysis = analyse(render(scene))
    assert analysis.background == "black"
    first, second = sorted(analysis.objects, key=lambda o: o.centre[1])
    assert (first.colour, first.shape, first.size) == ("cyan", "triangle", "large")
    assert (second.colour, second.shape, second.size) == ("orange", "star", "small")
    assert np.allclose(first.centre, (32, 16), atol=1) and np.allclose(second.centre, (32, 48), atol=1)
    assert 26 <= first.bbox[2] - first.bbox[0] <= 30
    assert first.area > second.area
    assert check(render(scene), scene) == dict.fromkeys(
        ["background", "count", "colour", "shape", "size", "relation"], True
    )


def test_an_empty_picture_fails_everything_but_the_background():
    scene = Scene((Thing("circle", "red", "large"),), "white", position="centre")
    result = check(Image.new("RGB", (64, 64), world.BACKGROUNDS["white"]), scene)
    assert result == {
        "background": True,
        "count": False,
        "colour": False,
        "shape": False,
        "size": False,
        "position": False,
    }


def test_perturb_changes_exactly_one_attribute():
    rng = random.Random(4)
    seen = set()
    for _ in range(300):
        scene = _scene(rng)
        wrong, attribute = perturb(scene, rng)
        seen.add(attribute)
        before, after = scene.to_dict(), wrong.to_dict()
        assert wrong != scene
        if attribute == "count":
            assert len(wrong.things) != len(scene.things) and wrong.background == scene.background
            continue
        if attribute == "relation":
            assert wrong.things == scene.things[::-1] or (
                wrong.things == scene.things and wrong.relation != scene.relation
            )
            continue
        changed = {key for key in before if before[key] != after[key]}
        if attribute in ("colour", "shape", "size"):
            assert changed == {"things"}
            differences = [
                (i, field)
                for i, (a, b) in enumerate(zip(before["things"], after["things"]))
                for field in a
                if a[field] != b[field]
            ]
            assert len(differences) == 1 and differences[0][1] == attribute
        else:
            assert changed == {attribute}
    assert seen == {"colour", "shape", "size", "background", "count", "position", "relation"}
