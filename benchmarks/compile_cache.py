#!/usr/bin/env python
"""Warm-up of the speed modes in a new process: with an empty kernel cache, then with the cache the
first process filled (README "Speed and memory", "Compile caches across processes").

For each mode (``speed``: compiled in the pipeline's dtype, weights frozen on the CPU; ``speed-int8``:
the int8 UNet, CPU only), two new processes in turn build the same seeded model (``m9``: full-size
random weights, as speed_memory.py builds them; ``mini``: the bundled model), enable the mode with
TORCHINDUCTOR_CACHE_DIR set to one new empty folder, and time the first call (2 steps: it compiles)
and then a call of ``--steps`` steps. Inductor's FX graph cache counters are recorded too: on the CPU,
frozen graphs bypass that cache (torch 2.13: "mkldnn tensors unpickleable"), so what a second process
reuses is the compiled C++ kernels. The int8 mode also keeps its calibrated ranges in that folder
(pipelines/int8_ranges.py): the second process reads them instead of calibrating, and says so
(``int8_ranges_read``). The 20-step image's SHA-256 is recorded too: caches must not change it.

    python benchmarks/compile_cache.py --model m9      # about 12 min on 2 CPU cores
    python benchmarks/compile_cache.py --model mini    # about 5 min

Results: ``benchmarks/results/compile-cache-<date>-<device>-<model>.json`` and a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def child(mode: str, model: str, device: str, steps: int) -> dict:
    """In this (new) process: enable ``mode``, time the compiling call and a full one (speed_memory.py's
    model, prompt, seed and CFG)."""
    import torch
    from torch._dynamo.utils import counters

    sys.path[:0] = [str(HERE), str(HERE.parent)]
    from speed_memory import build_parts, make_generate, pipeline_generate

    from altdiffusion import load_pipeline

    torch.set_grad_enabled(False)
    ranges_read = RangesRead()
    logging.getLogger("altdiffusion.pipelines.int8").addHandler(ranges_read)
    logging.getLogger("altdiffusion.pipelines.int8").setLevel(logging.INFO)
    dtype = torch.float16 if device.startswith("cuda") else torch.bfloat16
    if model == "mini":
        pipe, size = load_pipeline("mini", device, dtype), 64
        pipe.enable_speed_mode(int8=mode == "speed-int8")
        generate = pipeline_generate(pipe)
    else:
        generate = make_generate(mode, build_parts(model, smoke=False), device, dtype)
        size = 512 if device.startswith("cuda") else 256

    def call(n: int) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        image = generate(1, size, n)
        return time.perf_counter() - start, image

    (warm_up, _), (full, image) = call(2), call(steps)
    fx = {k: counters["inductor"][f"fxgraph_cache_{k}"] for k in ("hit", "miss", "bypass")}
    return {"warm_up_s": warm_up, "s_per_image": full, "size": size, "steps": steps, "fxgraph_cache": fx,
            "int8_ranges_read": ranges_read.count, "image_sha256": hashlib.sha256(image.tobytes()).hexdigest()}  # fmt: skip


class RangesRead(logging.Handler):
    """Counts the int8 UNet's reports of calibrated ranges read from the cache folder."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "calibrated ranges" in record.getMessage() and "read from" in record.getMessage()


def run_twice(mode: str, args) -> dict:
    """Two new processes on one new kernel-cache folder: empty, then filled by the first."""
    cache = tempfile.mkdtemp(prefix=f"compile-cache-{mode}-")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    rows = {}
    for run in ("empty_cache", "filled_cache"):
        command = [sys.executable, __file__, "--child", mode, "--model", args.model, "--device", args.device]
        done = subprocess.run([*command, "--steps", str(args.steps)], env=env, capture_output=True, text=True)
        result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not result:
            raise SystemExit(f"{mode} ({run}) failed:\n{done.stderr[-3000:]}")
        rows[run] = json.loads(result[-1][len("RESULT ") :])
        print(f"{mode}, {run}: warm-up {rows[run]['warm_up_s']:.1f} s", file=sys.stderr, flush=True)
    return rows


def markdown(results: dict) -> str:
    lines = ["| mode | warm-up, empty cache | warm-up, cache of a previous process | s/image | FX graph cache | "
             "int8 ranges read | same image |", "|---|---:|---:|---:|---|---:|---|"]  # fmt: skip
    for mode, rows in results["modes"].items():
        empty, filled = rows["empty_cache"], rows["filled_cache"]
        fx = ", ".join(f"{k} {v}" for k, v in filled["fxgraph_cache"].items())
        lines.append(f"| {mode} | {empty['warm_up_s']:.1f} s | {filled['warm_up_s']:.1f} s | "
                     f"{empty['s_per_image']:.3g}, {filled['s_per_image']:.3g} | {fx} | "
                     f"{empty.get('int8_ranges_read', 0)}, {filled.get('int8_ranges_read', 0)} | "
                     f"{'yes' if empty.get('image_sha256') == filled.get('image_sha256') else 'no'} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("m9", "m18", "mini"), default="m9")
    p.add_argument("--device", default="cpu")
    p.add_argument("--modes", default="speed,speed-int8", help="speed, speed-int8 (CPU only)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.model, args.device, args.steps)), flush=True)
        return
    import torch

    results = {"date": dt.datetime.now(dt.timezone.utc).isoformat(), "device": args.device,
               "torch": torch.__version__, "machine": platform.machine(), "threads": torch.get_num_threads(),
               "model": args.model, "modes": {}}  # fmt: skip
    for mode in args.modes.split(","):
        results["modes"][mode] = run_twice(mode, args)
    tag = args.device.split(":")[0]
    out = Path(args.out) if args.out else HERE / "results" / f"compile-cache-{dt.date.today()}-{tag}-{args.model}.json"
    out.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
