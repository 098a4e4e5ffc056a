#!/usr/bin/env python
"""The mini world's UNet-shape experiments (README, mini section): can a wider or deeper UNet,
trained from random weights on AltCLIP-mini's conditioning, bind two things to their places?

    python benchmarks/mini_unet_shapes.py init --out exp          # data + one start folder per shape
    altdiffusion train finetune --model exp/deep --data exp/data/*.tar --output-dir exp/run-deep ...
    python benchmarks/mini_unet_shapes.py score exp/run-deep/model --languages en,zh

``init`` writes the build's 20,000 training samples (``world.write_shards``, seed 0, as
``mini build`` writes them) and, for each shape, a copy of the bundled AltDiffusion-mini whose
UNet is replaced by a freshly initialised one (seed 0). ``score`` prints, as JSON, one-thing and
two-thing accuracy on the report's first 64 scenes of each (one image each) and the seconds per
64x64 image at 20 steps on this process's threads, against the bundled model timed in neighbouring
calls (15 pairs after a warm-up call; the median paired ratio is the figure to compare).
"""

import argparse
import copy
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from altdiffusion.errors import AltDiffusionError
from altdiffusion.hub import bundled_model_dir
from altdiffusion.mini import world
from altdiffusion.mini.architecture import UNET
from altdiffusion.mini.build import RECIPE
from altdiffusion.mini.evaluate import (
    accuracy,
    generate_verdicts,
    generation_scenes,
    load_mini_pipeline,
    two_thing_scenes,
)
from altdiffusion.mini.scenes import LANGUAGES

# Each shape is the shipped UNet config with these keys changed.
SHAPES = {
    "shipped": {},
    # cross-attention at 16x16 too: the first down block and the last up block
    "attn16": {"down_block_types": ["CrossAttnDownBlock2D"] * 3, "up_block_types": ["CrossAttnUpBlock2D"] * 3},
    # two transformer layers in every cross-attention block (8x8, 4x4 and the middle)
    "deep": {"transformer_layers_per_block": 2},
}


def init(out: Path, seed: int) -> None:
    from diffusers import UNet2DConditionModel

    world.write_shards(out / "data", RECIPE["data"]["train"], seed, split="train")
    for name, changes in SHAPES.items():
        folder, partial = out / name, out / f".{name}.partial"  # renamed into place once complete
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(bundled_model_dir("diffusion"), partial, ignore=shutil.ignore_patterns("unet"))
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config({**copy.deepcopy(UNET), **changes})
        unet.save_pretrained(str(partial / "unet"), safe_serialization=True)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
        print(f"{folder}: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M UNet parameters")


def time_against_bundled(pipe, bundled, prompt: str, rounds: int = 15) -> dict:
    """Seconds per image of ``pipe`` and of the bundled model, timed in neighbouring calls (in
    alternating order), and the median of the paired ratios: this machine's speed drifts by a
    quarter within seconds, so only neighbouring calls compare fairly."""
    options = {"num_inference_steps": 20, "height": world.IMAGE_SIZE, "width": world.IMAGE_SIZE, "progress": False}
    pipe(prompt, **options)
    bundled(prompt, **options)
    times = {"model": [], "bundled": []}
    for seed in range(rounds):
        order = [("model", pipe), ("bundled", bundled)]
        for name, each in order if seed % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            each(prompt, seed=seed, **options)
            times[name].append(time.perf_counter() - start)
    ratios = [m / b for m, b in zip(times["model"], times["bundled"])]
    return {
        "seconds_per_image": {name: round(statistics.median(t), 3) for name, t in times.items()},
        "time_vs_bundled": round(statistics.median(ratios), 2),
    }


def score(model: str, languages: list[str]) -> dict:
    pipe = load_mini_pipeline(model)
    result = {"model": model, "threads": torch.get_num_threads()}
    for lang in languages:
        one, _, one_failures = generate_verdicts(pipe, generation_scenes(0, 64), lang, 1)
        two, _, two_failures = generate_verdicts(pipe, two_thing_scenes(0, 64), lang, 1)
        result[lang] = {
            "one_thing": round(100 * accuracy(one), 1),
            "two_thing": round(100 * accuracy(two), 1),
            "one_thing_failures": one_failures,
            "two_thing_failures": two_failures,
        }
    bundled = load_mini_pipeline(bundled_model_dir("diffusion"))
    result.update(time_against_bundled(pipe, bundled, "a red circle left of a green triangle"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("init", help="write the training data and one start folder per UNet shape")
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--seed", type=int, default=0)
    measure = commands.add_parser("score", help="accuracy on the report's first 64 scenes, seconds per image")
    measure.add_argument("model")
    measure.add_argument("--languages", default="en,zh")
    args = parser.parse_args()
    if args.command == "init":
        init(args.out, args.seed)
        return
    languages = args.languages.split(",")
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if unknown:
        parser.error(f"--languages: {', '.join(unknown)} not among the mini world's {', '.join(LANGUAGES)}")
    try:
        print(json.dumps(score(args.model, languages)))
    except AltDiffusionError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
