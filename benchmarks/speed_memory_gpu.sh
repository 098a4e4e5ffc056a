#!/usr/bin/env bash
# benchmarks/speed_memory.py on the GPU device machine in one call, its results under $OUT:
#
#   bash benchmarks/device_wheels.sh      # here, once: the wheels the device lacks, into .whl
#   run(command="bash benchmarks/speed_memory_gpu.sh", carry=[".whl"], timeout_s=600)
#
# brings back speed_memory.json (rewritten after every mode: a call cut short keeps what it
# measured) and log (the run's output, the Markdown table at its end). Extra arguments go to
# speed_memory.py (`--smoke` checks this script on a CPU). BUDGET_S (default 450) is the budget
# for starting measurements; the speed mode starts only with 240 s of it left, since it compiles.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
. benchmarks/device_env.sh
nvidia-smi -L 2>/dev/null
set -o pipefail
python3 benchmarks/speed_memory.py --budget-s "${BUDGET_S:-450}" --out "$OUT/speed_memory.json" "$@" 2>&1 | tee "$OUT/log"
