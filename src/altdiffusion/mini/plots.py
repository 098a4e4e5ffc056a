"""Pictures for the mini report, drawn with PIL (no plotting library is a dependency): the sample
sheets (one row per language) and the from-scratch baseline's curve against AltCLIP-mini."""

from __future__ import annotations

from PIL import Image, ImageDraw

from altdiffusion.mini import world


def sample_grid(samples: dict[str, list[Image.Image]]) -> Image.Image:
    """One row per language, the same scene and seed in each column."""
    size, label = world.IMAGE_SIZE, 28
    cols = max(len(v) for v in samples.values())
    grid = Image.new("RGB", (label + cols * size, len(samples) * size), "white")
    draw = ImageDraw.Draw(grid)
    for r, (lang, images) in enumerate(samples.items()):
        draw.text((4, r * size + size // 2 - 5), lang, fill="black")
        for c, image in enumerate(images):
            grid.paste(image, (label + c * size, r * size))
    return grid


def scratch_curve_plot(compute: dict, width: int = 640, height: int = 400) -> Image.Image:
    """Chinese text->image R@1 of the from-scratch baseline over its CPU seconds (blue line), the
    target (AltCLIP-mini's R@1, dashed) and AltCLIP-mini's cost without and with the teacher (red)."""
    curve = [(0.0, 0.0)] + [(p["cpu_s"], p["zh_r1"]) for p in compute["scratch_curve"]]
    alt, teacher = compute["altclip_cpu_s"], compute.get("teacher_cpu_s") or 0.0
    x_max = max(curve[-1][0], alt + teacher) * 1.05
    left, right, top, bottom = 60, 20, 30, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def at(x: float, y: float) -> tuple[float, float]:
        return left + x / x_max * (width - left - right), height - bottom - y * (height - top - bottom)

    draw.rectangle([at(0, 1), at(x_max, 0)], outline="black")
    for k in range(6):  # R@1 ticks every 20 points
        y = k / 5
        draw.line([at(0, y), (at(0, y)[0] - 5, at(0, y)[1])], fill="black")
        draw.text((8, at(0, y)[1] - 6), f"{100 * y:.0f}%", fill="black")
    step = _tick_step(x_max)
    for k in range(int(x_max // step) + 1):
        x = k * step
        draw.line([at(x, 0), (at(x, 0)[0], at(x, 0)[1] + 5)], fill="black")
        draw.text((at(x, 0)[0] - 12, height - bottom + 8), f"{x:.0f}", fill="black")
    draw.text((width // 2 - 40, height - 20), "CPU seconds", fill="black")
    target = compute["target_zh_r1"]
    for x in range(0, int(x_max), max(1, int(x_max / 60))):  # dashed target line
        draw.line([at(x, target), at(min(x + x_max / 120, x_max), target)], fill="gray")
    draw.text((at(0, target)[0] + 6, at(0, target)[1] + 4), f"target: AltCLIP-mini's {100 * target:.1f}%", fill="gray")
    for row, (cost, name) in enumerate(((alt, "AltCLIP-mini"), (alt + teacher, "AltCLIP-mini + teacher"))):
        x = at(cost, 0)[0]
        draw.line([(x, at(0, 1)[1]), (x, at(0, 0)[1])], fill="red")
        label_x = x + 4 if x + 4 + 7 * len(name) < width else x - 4 - 6 * len(name)  # keep it inside the image
        draw.text((label_x, top + 24 + 14 * row), name, fill="red")
    draw.line([at(x, y) for x, y in curve], fill="blue", width=2)
    for x, y in curve[1:]:
        cx, cy = at(x, y)
        draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill="blue")
    draw.text((left + 6, 8), "multilingual CLIP from scratch: Chinese text->image R@1", fill="blue")
    return image


def _tick_step(span: float) -> float:
    for step in (100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000):
        if span / step <= 10:
            return step
    return span / 10
