#!/usr/bin/env bash
# The mini recipe on a GPU machine: two builds side by side (full recipe, and half the steps),
# each followed by its report. Needs the wheels in .whl (diffusers, webdataset, ...) on a
# machine whose python3 has torch. Writes logs and reports under $OUT (default: gpu-out/).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $(ls .whl/*.whl | grep -v transformers) || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-tf .whl/transformers-*.whl
  export PYTHONPATH=/tmp/site-tf:/tmp/site:$PWD/src
  python3 -c "import transformers; print('transformers', transformers.__version__)" || export PYTHONPATH=/tmp/site:$PWD/src
fi
python3 -c "import torch, transformers, diffusers; print(torch.__version__, transformers.__version__, diffusers.__version__)"
nvidia-smi -L
variant() {  # name steps-scale build-timeout
  local t0=$(date +%s)
  timeout "$3" python3 -m altdiffusion.cli mini build --out "/tmp/mini-$1" --steps-scale "$2" --no-baseline > "$OUT/$1.log" 2>&1
  echo "build $1: rc=$? wall=$(( $(date +%s) - t0 ))s" >> "$OUT/$1.log"
  timeout 150 python3 -m altdiffusion.cli mini report --clip "/tmp/mini-$1/altclip/model" --model "/tmp/mini-$1/quality/model" \
    --build-log "/tmp/mini-$1/build.json" --scenes 24 --seeds 2 --out "$OUT/$1" >> "$OUT/$1.log" 2>&1
  cp "/tmp/mini-$1/build.json" "$OUT/$1/build.json" 2>/dev/null
}
for v in ${VARIANTS:-full:1.0:390 half:0.5:300}; do  # name:steps-scale:build-timeout
  IFS=: read -r name scale limit <<< "$v"
  variant "$name" "$scale" "$limit" &
done
wait
rm -f "$OUT"/*/report.md
tail -n 30 "$OUT"/*.log
