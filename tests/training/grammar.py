"""A tiny English-Chinese parallel grammar for training tests (attribute scenes)."""

import itertools
import random

COLORS = {
    "red": "红色",
    "green": "绿色",
    "blue": "蓝色",
    "yellow": "黄色",
    "black": "黑色",
    "white": "白色",
    "purple": "紫色",
    "orange": "橙色",
}
SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星星", "heart": "爱心"}
SIZES = {"small": "小", "big": "大"}
PLACES = {"left": "左边", "right": "右边", "top": "上面", "bottom": "下面", "center": "中间"}


def scenes():
    return list(itertools.product(SIZES, COLORS, SHAPES, PLACES))


def english(size, color, shape, place, variant=0):
    if variant:
        return f"there is a {size} {color} {shape} at the {place}"
    return f"a {size} {color} {shape} on the {place}"


def chinese(size, color, shape, place, variant=0):
    if variant:
        return f"一个{SIZES[size]}的{COLORS[color]}{SHAPES[shape]}在{PLACES[place]}"
    return f"{PLACES[place]}有一个{SIZES[size]}的{COLORS[color]}{SHAPES[shape]}"


def corpus():
    return [f(*s, variant=v) for s in scenes() for f in (english, chinese) for v in (0, 1)]


def split(seed=0, held_out=0.15):
    all_scenes = scenes()
    random.Random(seed).shuffle(all_scenes)
    n = int(len(all_scenes) * held_out)
    return all_scenes[n:], all_scenes[:n]


def write_tsv(path, scene_list):
    with open(path, "w", encoding="utf-8") as fh:
        for s in scene_list:
            for v in (0, 1):
                fh.write(f"{english(*s, variant=v)}\t{chinese(*s, variant=v)}\n")
    return path


RGB = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "black": (10, 10, 10),
    "white": (250, 250, 250),
    "purple": (140, 40, 170),
    "orange": (250, 140, 20),
}


def render(size, color, shape, place, px=32):
    """A grey canvas with one shape: a crude but exact picture of the scene."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (px, px), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    r = px * (0.22 if size == "big" else 0.12)
    cx, cy = {
        "left": (0.25, 0.5),
        "right": (0.75, 0.5),
        "top": (0.5, 0.25),
        "bottom": (0.5, 0.75),
        "center": (0.5, 0.5),
    }[place]
    cx, cy = cx * px, cy * px
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = RGB[color]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "star":
        draw.polygon([(cx, cy - r), (cx + r / 3, cy), (cx, cy + r), (cx - r / 3, cy)], fill=fill)
        draw.polygon([(cx - r, cy), (cx, cy - r / 3), (cx + r, cy), (cx, cy + r / 3)], fill=fill)
    else:  # heart: two circles and a triangle
        draw.ellipse((cx - r, cy - r, cx, cy), fill=fill)
        draw.ellipse((cx, cy - r, cx + r, cy), fill=fill)
        draw.polygon([(cx - r, cy - r / 2), (cx + r, cy - r / 2), (cx, cy + r)], fill=fill)
    return image


def write_shards(folder, scene_list, per_shard=200, corrupt=0):
    """Webdataset shards (img2dataset layout) with en+zh captions in json; ``corrupt`` bad images first."""
    import io
    import json
    from pathlib import Path

    import webdataset as wds

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    samples = [("corrupt", None)] * corrupt + [("ok", s) for s in scene_list]
    for start in range(0, len(samples), per_shard):
        shard = start // per_shard
        with wds.TarWriter(str(folder / f"{shard:05d}.tar")) as writer:
            for i, (kind, scene) in enumerate(samples[start : start + per_shard]):
                key = f"{shard:05d}{i:04d}"
                if kind == "corrupt":
                    writer.write(
                        {
                            "__key__": key,
                            "jpg": b"\xff\xd8\xff\xe0 not really a jpeg",
                            "json": json.dumps({"captions": {"en": "broken", "zh": "坏的"}}),
                        }
                    )
                    continue
                buf = io.BytesIO()
                render(*scene).save(buf, format="PNG")
                caps = {"en": english(*scene), "zh": chinese(*scene)}
                writer.write(
                    {"__key__": key, "png": buf.getvalue(), "json": json.dumps({"captions": caps}, ensure_ascii=False)}
                )
    return folder
