"""A1111 infotext: exact format, parsing, PNG round trips, atomic writes, output names."""

import os
from pathlib import Path

import pytest
from PIL import Image

from altdiffusion.errors import InvalidInputError
from altdiffusion.pipelines.infotext import (
    format_infotext,
    output_paths,
    parse_infotext,
    parse_size,
    read_infotext,
    write_png,
)

PARAMS = {
    "Steps": 20,
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": 7.0,
    "Seed": 1234,
    "Size": "512x768",
    "Model hash": "0123456789",
    "Model": "AltDiffusion-m9",
    "Denoising strength": 0.75,
    "Lora hashes": "a: 1, b: 2",
    "Styles": "oil painting, warm light",
    "Version": None,
}
# What PARAMS reads back as: strings, written the way A1111 writes them.
PARSED = {
    "Steps": "20",
    "Sampler": "DPM++ 2M",
    "Schedule type": "Karras",
    "CFG scale": "7",
    "Seed": "1234",
    "Size": "512x768",
    "Model hash": "0123456789",
    "Model": "AltDiffusion-m9",
    "Denoising strength": "0.75",
    "Lora hashes": "a: 1, b: 2",
    "Styles": "oil painting, warm light",
}


def test_exact_text_with_chinese_prompt_and_quoted_value():
    text = format_infotext("一只猫坐在窗台上，油画", "模糊, low quality", PARAMS)
    assert text == (
        "一只猫坐在窗台上，油画\n"
        "Negative prompt: 模糊, low quality\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, "
        "Size: 512x768, Model hash: 0123456789, Model: AltDiffusion-m9, Denoising strength: 0.75, "
        'Lora hashes: "a: 1, b: 2", Styles: "oil painting, warm light"'
    )


def test_number_and_quoting_rules():
    text = format_infotext("p", "", {"CFG scale": 7.5, "A": 0.1, "Size": (640, 480), "B": "x\ny", "C": '"q"'})
    assert text == 'p\nCFG scale: 7.5, A: 0.1, Size: 640x480, B: "x\\ny", C: "\\"q\\""'
    assert parse_infotext(text)[2] == {"CFG scale": "7.5", "A": "0.1", "Size": "640x480", "B": "x\ny", "C": '"q"'}


def test_no_negative_line_when_empty():
    text = format_infotext("a cat", "", {"Steps": 20, "Seed": 1, "Size": "512x512"})
    assert text == "a cat\nSteps: 20, Seed: 1, Size: 512x512"
    assert "Negative prompt" not in text
    assert parse_infotext(text) == ("a cat", "", {"Steps": "20", "Seed": "1", "Size": "512x512"})


@pytest.mark.parametrize("key", ["CFG: scale", "a,b", "", 'q"', "x\ny"])
def test_unwritable_keys_rejected(key):
    with pytest.raises(InvalidInputError, match="parameter name"):
        format_infotext("p", "", {key: 1})


def test_parse_a1111_text():
    text = (
        "masterpiece, 1girl\nsecond line\n"
        "Negative prompt: lowres, bad hands\nmore negative\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 512x768, Time taken: 1:05, "
        'Lora hashes: "x: abc, y: def"'
    )
    prompt, negative, params = parse_infotext(text)
    assert prompt == "masterpiece, 1girl\nsecond line"
    assert negative == "lowres, bad hands\nmore negative"
    assert params == {
        "Steps": "30",
        "Sampler": "Euler a",
        "CFG scale": "7.5",
        "Seed": "42",
        "Size": "512x768",
        "Time taken": "1:05",
        "Lora hashes": "x: abc, y: def",
    }


def test_parse_without_parameters_line():
    assert parse_infotext("a cat\nSteps: 20, Seed: 3") == ("a cat\nSteps: 20, Seed: 3", "", {})  # < 3 pairs
    # A prompt with "key: value" bits is not a parameters line unless pairs fill it.
    line = "photo, style: anime, light: soft, mood: calm"
    assert parse_infotext(line) == (line, "", {})
    assert parse_infotext("a cat\r\nNegative prompt: dog\r\nSteps: 1, Seed: 2, Size: 8x8\r\n") == (
        "a cat",
        "dog",
        {"Steps": "1", "Seed": "2", "Size": "8x8"},
    )


def test_parse_size():
    assert parse_size("512x768") == (512, 768)
    assert parse_size(" 640 X 480 ") == (640, 480)
    for bad in ["512", "0x512", "axb", "512x-1", ""]:
        with pytest.raises(InvalidInputError, match="WIDTHxHEIGHT"):
            parse_size(bad)


PROMPTS = [
    ("一只穿着宇航服的熊猫，高清，8k", "模糊，低质量"),
    ("富士山と桜、浮世絵風", "ぼやけた"),
    ("قطة تجلس على النافذة، لوحة زيتية", "ضبابي"),
    ("line one\nline two: with colon, and comma\n\n  indented line", "neg one\nneg: two"),
    ("", ""),
    ("plain latin prompt", ""),
]


@pytest.mark.parametrize("prompt, negative", PROMPTS)
def test_png_round_trip(tmp_path, prompt, negative):
    text = format_infotext(prompt, negative, PARAMS)
    image = Image.new("RGB", (8, 8), (10, 200, 30))
    target = write_png(image, tmp_path / "out.png", text)
    assert target == tmp_path / "out.png"
    with Image.open(target) as reopened:
        reopened.load()
        assert reopened.size == (8, 8) and reopened.getpixel((0, 0)) == (10, 200, 30)
        assert read_infotext(reopened) == text
    assert read_infotext(target) == text
    assert read_infotext(str(target)) == text
    assert parse_infotext(read_infotext(target)) == (prompt, negative, PARSED)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_chunk_type_follows_encoding(tmp_path):
    latin = write_png(Image.new("L", (4, 4)), tmp_path / "latin.png", "café\nSteps: 1, Seed: 1, Size: 4x4")
    chinese = write_png(Image.new("L", (4, 4)), tmp_path / "zh.png", "猫\nSteps: 1, Seed: 1, Size: 4x4")
    assert b"tEXtparameters\x00caf\xe9" in latin.read_bytes()
    assert b"iTXtparameters" in chinese.read_bytes()
    assert "猫".encode() in chinese.read_bytes()


def test_read_infotext_without_parameters(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(path)
    assert read_infotext(path) is None
    with pytest.raises(InvalidInputError, match="no such file"):
        read_infotext(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInputError, match="not a readable image"):
        read_infotext(tmp_path / "junk.png")


def _interrupting_save(exc):
    def save(fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n partial data")
        fp.flush()
        raise exc

    return save


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError("disk full")])
def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch, exc):
    image = Image.new("RGB", (8, 8))
    monkeypatch.setattr(image, "save", _interrupting_save(exc))
    with pytest.raises(type(exc)):
        write_png(image, tmp_path / "x.png", "p\nSteps: 1, Seed: 1, Size: 8x8")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_overwrite_keeps_old_file(tmp_path, monkeypatch):
    target = write_png(Image.new("RGB", (8, 8)), tmp_path / "x.png", "old\nSteps: 1, Seed: 1, Size: 8x8")
    before = target.read_bytes()
    image = Image.new("RGB", (8, 8), (255, 0, 0))
    monkeypatch.setattr(image, "save", _interrupting_save(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        write_png(image, target, "new\nSteps: 1, Seed: 1, Size: 8x8")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_temp_file_is_hidden_in_same_folder(tmp_path, monkeypatch):
    seen = []

    def save(fp, *args, **kwargs):
        seen.extend(tmp_path.iterdir())  # the temp file exists while saving
        raise KeyboardInterrupt

    image = Image.new("RGB", (4, 4))
    monkeypatch.setattr(image, "save", save)
    with pytest.raises(KeyboardInterrupt):
        write_png(image, tmp_path / "img.png", "x")
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
    assert not tmp.exists()


def test_write_png_rejects_other_formats(tmp_path):
    with pytest.raises(InvalidInputError, match="only PNG output is supported"):
        write_png(Image.new("RGB", (4, 4)), tmp_path / "x.jpg", "x")


# ---------------------------------------------------------------- output_paths


def test_single_png_file(tmp_path):
    assert output_paths(tmp_path / "sub" / "cat.png", 1, seed=5) == [tmp_path / "sub" / "cat.png"]
    assert (tmp_path / "sub").is_dir()
    assert output_paths(str(tmp_path / "Cat.PNG"), 1, seed=5) == [tmp_path / "Cat.PNG"]


def test_png_file_with_several_images(tmp_path):
    assert output_paths(tmp_path / "cat.png", 3, seed=5) == [tmp_path / f"cat-{i}.png" for i in range(3)]


def test_folder_numbering_starts_at_zero(tmp_path):
    out = tmp_path / "new"
    assert output_paths(out, 2, seed=1234) == [out / "00000-1234.png", out / "00001-1235.png"]
    assert out.is_dir()


def test_folder_numbering_continues_after_existing_files(tmp_path):
    for name in ["00000-1.png", "00007-99.png", "00003-5.png", "notes.txt", "1234-x.png", "x00050-1.png"]:
        (tmp_path / name).write_bytes(b"")
    assert output_paths(tmp_path, 2, seed=42) == [tmp_path / "00008-42.png", tmp_path / "00009-43.png"]
    (tmp_path / "100000-7.png").write_bytes(b"")
    assert output_paths(tmp_path, 1, seed=0) == [tmp_path / "100001-0.png"]


def test_prefix_has_its_own_numbering(tmp_path):
    (tmp_path / "00009-1.png").write_bytes(b"")
    (tmp_path / "cat-00002-1.png").write_bytes(b"")
    assert output_paths(tmp_path, 1, seed=3, prefix="cat-") == [tmp_path / "cat-00003-3.png"]


def test_folder_with_trailing_slash_and_dot_in_name(tmp_path):
    out = str(tmp_path / "run.v2") + "/"
    assert output_paths(out, 1, seed=1) == [tmp_path / "run.v2" / "00000-1.png"]
    assert output_paths(tmp_path / "run.v2", 1, seed=1) == [tmp_path / "run.v2" / "00000-1.png"]


@pytest.mark.parametrize("out", ["x.jpg", "x.webp", "images.tar.gz", "run.v2"])
def test_non_png_extension_rejected(tmp_path, out):
    with pytest.raises(InvalidInputError, match="only PNG output is supported"):
        output_paths(tmp_path / out, 1, seed=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("prefix", ["../", "..\\", "/etc/", "a/b", "C:", "x\0y", "..", f"..{os.sep}evil-"])
def test_prefix_path_escape_rejected(tmp_path, prefix):
    with pytest.raises(InvalidInputError, match="prefix"):
        output_paths(tmp_path, 1, seed=1, prefix=prefix)


def test_nul_in_out_and_bad_counts(tmp_path):
    with pytest.raises(InvalidInputError, match="NUL"):
        output_paths(str(tmp_path) + "/a\0b.png", 1, seed=1)
    with pytest.raises(InvalidInputError, match="count"):
        output_paths(tmp_path, 0, seed=1)
    with pytest.raises(InvalidInputError, match="seed"):
        output_paths(tmp_path, 1, seed=-1)


def test_paths_stay_inside_folder(tmp_path):
    out = tmp_path / "a" / ".." / "b"
    for p in output_paths(out, 3, seed=7, prefix="..x-"):
        assert Path(os.path.abspath(p)).parent == Path(os.path.abspath(out))
