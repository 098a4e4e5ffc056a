#!/usr/bin/env bash
# A fresh `altdiffusion mini build --install` on the GPU device machine, as one uninterrupted job
# that outlives the device tool's 10-minute calls: `start` launches build -> report -> weights.tar
# in a process session of its own (setsid: the machine keeps it running between calls while it is
# held), then follows it; `follow` follows it on from the next call. Here, first:
#
#   bash benchmarks/device_wheels.sh      # the wheels the device lacks, into .whl (device_env.sh installs them)
#   run(command="bash benchmarks/mini_build_gpu.sh start 560", carry=[".whl"], timeout_s=600)
#   run(command="bash benchmarks/mini_build_gpu.sh follow 560", timeout_s=600)  # at once: warm 30 s
#
# Each call follows for at most SECONDS (the job runs on), then copies what is done to $OUT:
# job.log (its last 3,000 lines), build.json (each stage's wall and CPU seconds and where it ran),
# report.json, report.md, samples.png, samples-two.png and, once the job is through, weights.tar:
# the installed src/altdiffusion/mini/weights, to unpack here over that folder
# (`tar -C src/altdiffusion/mini -xf weights.tar`).
#
# Environment: SMOKE=1 builds with --smoke and reports on 4 scenes (checks this script on a CPU in
# minutes; it installs over the working tree's bundled weights, so run it in a scratch clone);
# BASELINE=1 also trains the from-scratch CLIP (the report's compute ratio) before installing;
# STEPS_SCALE=N multiplies every stage's steps (`mini build --steps-scale`).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
WORK=${WORK:-/tmp/mini-gpu}
mkdir -p "$OUT"

usage() {
  echo "usage: bash benchmarks/mini_build_gpu.sh start|follow SECONDS" >&2
  exit 2
}

job() {  # what runs in the background; its exit status lands in $WORK/rc
  local build=(--out "$WORK/build" --install) report=(--out "$WORK/report")
  [ "${SMOKE:-0}" = 1 ] && build+=(--smoke) && report+=(--scenes 4 --seeds 1)
  [ "${BASELINE:-0}" = 1 ] || build+=(--no-baseline)
  [ -n "${STEPS_SCALE:-}" ] && build+=(--steps-scale "$STEPS_SCALE")
  nvidia-smi -L 2>/dev/null
  echo "[job] $(date -u +%FT%TZ) mini build ${build[*]}"
  python3 -m altdiffusion.cli mini build "${build[@]}" || return
  echo "[job] $(date -u +%FT%TZ) mini report ${report[*]}"
  python3 -m altdiffusion.cli mini report "${report[@]}" || return
  tar -C src/altdiffusion/mini -cf "$WORK/weights.tar" weights || return
  echo "[job] $(date -u +%FT%TZ) done"
}

start() {
  rm -rf "$WORK"
  mkdir -p "$WORK"
  . benchmarks/device_env.sh
  export -f job
  export WORK SMOKE BASELINE STEPS_SCALE
  setsid nohup bash -c 'job; echo $? > "$WORK/rc"' > "$WORK/job.log" 2>&1 < /dev/null &
}

follow() {  # print progress every 20 s until the job ends or $1 seconds pass, then collect
  local until=$(( $(date +%s) + $1 ))
  [ -f "$WORK/job.log" ] || { echo "no job under $WORK: run 'start' first (a fresh machine starts bare)" >&2; exit 1; }
  while [ ! -f "$WORK/rc" ] && [ "$(date +%s)" -lt "$until" ]; do
    sleep 20
    echo "$(date -u +%T) $(grep -E '^\[(mini build|job)\]' "$WORK/job.log" | tail -n 1 | cut -c1-150)"
  done
  tail -n 3000 "$WORK/job.log" > "$OUT/job.log"
  cp "$WORK/build/build.json" "$OUT/" 2>/dev/null
  for name in report.json report.md samples.png samples-two.png; do
    cp "$WORK/report/$name" "$OUT/" 2>/dev/null
  done
  if [ -f "$WORK/rc" ]; then
    echo "job finished: rc=$(cat "$WORK/rc")"
    cp "$WORK/weights.tar" "$OUT/" 2>/dev/null
  else
    echo "job still running after $1 s: call 'follow' again"
  fi
  tail -n 20 "$WORK/job.log"
}

[ $# = 2 ] || usage
case "$1" in
  start) start && follow "$2" ;;
  follow) follow "$2" ;;
  *) usage ;;
esac
