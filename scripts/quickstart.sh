#!/usr/bin/env bash
# Set up and generate images from a Chinese prompt, offline, with the bundled AltDiffusion-mini
# (trained by `altdiffusion mini build` on the mini world: shapes, colours, sizes, positions).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
altdiffusion generate "${1:-一个红色的大圆形，位于画面中央，白色背景。}" --model "${MODEL:-mini}" \
  --steps 20 --guidance 3 --seed 42 --batch 4 --out outputs/
