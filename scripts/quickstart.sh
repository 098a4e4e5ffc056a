#!/usr/bin/env bash
# Set up and generate an image from a Chinese prompt, offline.
# Until the bundled mini model ships, this writes a tiny random-weight AltDiffusion-m9
# checkpoint (published layout) and generates with it: the image is noise, the path is real.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
MODEL="${MODEL:-}"
SIZE=()
if [ -z "$MODEL" ]; then
  if python -c "from altdiffusion.hub import resolve_model; resolve_model('mini')" >/dev/null 2>&1; then
    MODEL=mini
  else
    MODEL=.tiny-model
    SIZE=(--width 64 --height 64)  # random weights: a small image shows the path as well as a large one
    [ -f "$MODEL/model_index.json" ] || altdiffusion dev tiny "$MODEL" --layout altdiffusion-m9
  fi
fi
altdiffusion generate "${1:-一只穿着唐装的猫坐在古建筑前，国画风格，细节丰富}" --model "$MODEL" \
  --steps 20 --seed 42 "${SIZE[@]}" --out outputs/
