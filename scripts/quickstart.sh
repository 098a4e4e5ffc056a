#!/usr/bin/env bash
# Set up and generate images from a Chinese prompt, offline, with the bundled AltDiffusion-mini
# (trained by `altdiffusion mini build` on the mini world: shapes, colours, sizes, positions).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
# Size, CFG, sampler and steps are the model's own (64x64, CFG 3, 20 PLMS steps for the mini model).
altdiffusion generate "${1:-一个红色的大圆形，位于画面中央，白色背景。}" --model "${MODEL:-mini}" \
  --seed 42 --batch 4 --out outputs/
