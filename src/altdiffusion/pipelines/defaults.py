"""What a model runs with when a caller leaves a setting out, and the example prompts it draws well.

One source for the pipeline, the CLI, the server's API and its web UI:

    size      native: the UNet's ``sample_size`` x the VAE's factor (2 ** (len(block_out_channels) - 1)),
              512x512 for Stable Diffusion 1.x checkpoints, 64x64 for the bundled AltDiffusion-mini
    cfg_scale, steps, sampler_name
              recorded in ``model_index.json`` under ``_altdiffusion.recommended`` when the model's
              builder knows better (the bundled mini records CFG 3 = ``altdiffusion.mini.GUIDANCE``,
              the 20 PLMS steps its report measured), else A1111's: CFG 7, 20 steps (its web UI's) and
              Euler (its API's sampler, which every checkpoint runs)
    examples  ``recommended.examples == "mini-world"``: one-thing scenes of the mini world in its
              nine languages (altdiffusion.mini.examples); else real-world scenes for published checkpoints

Reading a folder's defaults opens a few small JSON files, so ``sd-models`` can list every
configured model's defaults without loading any of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

A1111_CFG_SCALE = 7.0
A1111_STEPS = 20
A1111_SAMPLER = "Euler"
FAR_FROM_NATIVE = 2.0  # a side more than 2x (or under 1/2) the native one draws badly

# Scenes a Stable Diffusion 1.x-sized multilingual checkpoint draws well, in its languages.
PUBLISHED_EXAMPLES = (
    ("zh", "穿着红色唐装的老人在四合院古建筑前微笑，暖光，高清摄影"),
    ("zh", "一幅水墨国画：山水之间的亭台楼阁，云雾缭绕，留白"),
    ("zh", "工笔国画风格的牡丹与蝴蝶，细腻，淡彩"),
    ("zh", "故宫古建筑的飞檐斗拱，红墙黄瓦，雪后初晴"),
    ("zh", "身穿唐装的小女孩在春节庙会上提着灯笼"),
    ("zh+en", "一只戴着墨镜的柴犬, cyberpunk style, neon lights, 4k"),
    ("zh+en", "长城上的日出, cinematic lighting, ultra detailed"),
    ("en", "a watercolor painting of a lighthouse at dawn, soft light"),
    ("es", "Un castillo medieval en lo alto de una colina al atardecer, pintura al óleo"),
    ("fr", "Un café parisien sous la pluie, style impressionniste"),
    ("ru", "Зимний лес в снегу, утренний свет, масляная живопись"),
    ("ja", "桜の木の下に佇む着物の女性、浮世絵風"),
    ("ko", "한복을 입은 소녀가 궁궐 앞에 서 있는 모습, 수채화"),
    ("ar", "قافلة جمال في الصحراء عند غروب الشمس، لوحة زيتية"),
    ("it", "Una gondola a Venezia al tramonto, pittura ad acquerello"),
)


@dataclass(frozen=True)
class ModelDefaults:
    """The settings a run of one model uses for what its caller does not give."""

    width: int
    height: int
    cfg_scale: float
    sampler_name: str  # A1111 name
    steps: int
    examples: tuple[tuple[str, str], ...] = ()  # (language, prompt)

    def settings(self) -> dict[str, Any]:
        """The defaults under the A1111 request's field names."""
        return {
            "width": self.width,
            "height": self.height,
            "cfg_scale": self.cfg_scale,
            "sampler_name": self.sampler_name,
            "steps": self.steps,
        }

    def size_warning(self, width: int, height: int) -> str | None:
        """A one-line warning when ``width`` x ``height`` is far from the native size, else None."""
        if min(width, height) < 8 or width % 8 or height % 8:
            return None  # a size the pipeline refuses: its one error line says what is wrong
        ratios = (width / self.width, height / self.height)
        if all(1 / FAR_FROM_NATIVE <= r <= FAR_FROM_NATIVE for r in ratios):
            return None
        native = f"{self.width}x{self.height}"
        return (
            f"{width}x{height} is far from this model's native size {native}: it was trained at {native} "
            f"and draws best there (far from it, shapes repeat or break up)"
        )


def model_defaults(
    sample_size: int | tuple[int, int], vae_factor: int, recommended: Mapping[str, Any]
) -> ModelDefaults:
    """Defaults from a model's UNet sample size, VAE factor and recorded recommendations."""
    height, width = (sample_size, sample_size) if isinstance(sample_size, int) else tuple(sample_size)
    return ModelDefaults(
        width=int(width) * vae_factor,
        height=int(height) * vae_factor,
        cfg_scale=float(recommended.get("cfg_scale", A1111_CFG_SCALE)),
        sampler_name=str(recommended.get("sampler_name") or A1111_SAMPLER),
        steps=int(recommended.get("steps", A1111_STEPS)),
        examples=examples_for(recommended.get("examples")),
    )


def folder_defaults(folder: str | Path) -> ModelDefaults:
    """The defaults of a model folder in the diffusers layout, from its configs (nothing is loaded)."""
    folder = Path(folder)
    unet = _json(folder / "unet" / "config.json")
    vae = _json(folder / "vae" / "config.json")
    meta = _json(folder / "model_index.json").get("_altdiffusion", {})
    vae_factor = 2 ** (len(vae.get("block_out_channels", (0, 0, 0, 0))) - 1)
    return model_defaults(unet.get("sample_size", 64), vae_factor, meta.get("recommended", {}))


def examples_for(kind: object) -> tuple[tuple[str, str], ...]:
    if kind == "mini-world":
        from altdiffusion.mini.examples import example_prompts

        return example_prompts()
    return PUBLISHED_EXAMPLES


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a missing config gives the A1111 defaults; loading the model reports what is wrong
