#!/usr/bin/env python
"""Serving benchmark: throughput and latency of the A1111-compatible API under concurrent load.

A server child process (``python -m altdiffusion.serve``, see
:class:`altdiffusion.serve.process.ServerProcess`) serves the tiny random m9 model on a
loopback port. For each concurrency level ``c``, ``c`` client threads send txt2img requests
(each thread one at a time, a new request as soon as its previous one answers) until
``--requests`` requests have been sent in all. The server runs one job at a time, so
throughput should stay flat as ``c`` grows while latency grows with the queue; its queue
(``--max-queue``, default 16) is larger than the highest concurrency, so no request is
refused (429s are counted anyway).

Measured per level: requests/s (completed 200s over the level's wall time), latency
p50/p90/p99/max of the 200s (client-side, from sending the request to having the whole
JSON), the status codes, the server's RSS after the level and its CPU seconds per request.

Usage::

    python benchmarks/serving.py                                   # c = 1, 4, 8; 16 requests each
    python benchmarks/serving.py --concurrency 1,2,4,8,16 --requests 32 --steps 4

Results: ``benchmarks/results/serving-<date>.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent
API = "/sdapi/v1"


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run_level(server, concurrency: int, requests: int, body: dict) -> dict:
    lock = threading.Lock()
    sent = 0
    latencies: list[float] = []
    codes: Counter = Counter()

    def client() -> None:
        nonlocal sent
        with httpx.Client(base_url=server.url, timeout=600) as c:
            while True:
                with lock:
                    if sent >= requests:
                        return
                    i = sent
                    sent += 1
                start = time.perf_counter()
                try:
                    r = c.post(f"{API}/txt2img", json={**body, "prompt": f"{body['prompt']} {i}", "seed": i})
                    r.json()
                    code = r.status_code
                except httpx.HTTPError as exc:
                    code = type(exc).__name__
                elapsed = time.perf_counter() - start
                with lock:
                    codes[code] += 1
                    if code == 200:
                        latencies.append(elapsed)

    cpu0 = server.cpu_seconds()
    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    cpu = server.cpu_seconds() - cpu0
    ok = codes.get(200, 0)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "ok": ok,
        "status_codes": {str(k): v for k, v in sorted(codes.items(), key=str)},
        "wall_s": round(wall, 3),
        "requests_per_s": round(ok / wall, 3) if wall else None,
        "latency_s": {
            "mean": round(statistics.fmean(latencies), 4) if latencies else None,
            "p50": round(percentile(latencies, 50), 4),
            "p90": round(percentile(latencies, 90), 4),
            "p99": round(percentile(latencies, 99), 4),
            "max": round(max(latencies), 4) if latencies else None,
        },
        "server_cpu_s_per_request": round(cpu / max(ok, 1), 4),
        "server_rss_mib_after": round(server.rss_bytes() / 2**20, 1),
    }


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        f"Serving, tiny m9 model, txt2img {cfg['width']}x{cfg['height']}, {cfg['steps']} steps, "
        f"{cfg['sampler']}, {cfg['requests']} requests per level, max_queue {cfg['max_queue']} "
        f"({result['machine']['cpus']} CPUs, torch {result['machine']['torch']}, {result['date']})",
        "",
        "| concurrency | req/s | p50 (s) | p90 (s) | p99 (s) | max (s) | status codes | server CPU s/req | server RSS (MiB) |",
        "|---:|---:|---:|---:|---:|---:|:--|---:|---:|",
    ]
    for lv in result["levels"]:
        lat = lv["latency_s"]
        codes = ", ".join(f"{k}: {v}" for k, v in lv["status_codes"].items())
        lines.append(
            f"| {lv['concurrency']} | {lv['requests_per_s']:.2f} | {lat['p50']:.3f} | {lat['p90']:.3f} | "
            f"{lat['p99']:.3f} | {lat['max']:.3f} | {codes} | {lv['server_cpu_s_per_request']:.3f} | "
            f"{lv['server_rss_mib_after']:.0f} |"
        )
    lines.append("")
    lines.append(
        f"Server RSS: {result['server_rss_mib']['after_warmup']:.0f} MiB after warm-up, "
        f"{result['server_rss_mib']['end']:.0f} MiB at the end; server start {result['server_start_s']:.1f} s."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,4,8", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=16, help="requests per concurrency level")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3, help="requests before measuring")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON path (default benchmarks/results/serving-<date>.json)"
    )
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]

    import torch

    from altdiffusion.models.tiny import write_tiny_altdiffusion
    from altdiffusion.serve.process import ServerProcess

    body = {
        "prompt": "穿着唐装的老人, ink painting 国画",
        "negative_prompt": "blurry",
        "steps": args.steps,
        "width": args.size,
        "height": args.size,
        "sampler_name": args.sampler,
        "cfg_scale": 7.0,
    }
    load_start = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        folder = write_tiny_altdiffusion(Path(tmp) / "tiny", "m9", safety_checker=False)
        t0 = time.perf_counter()
        with ServerProcess({"tiny": folder}, max_queue=args.max_queue) as server:
            start_s = time.perf_counter() - t0
            with httpx.Client(base_url=server.url, timeout=600) as c:
                for i in range(args.warmup):
                    c.post(f"{API}/txt2img", json={**body, "seed": i}).raise_for_status()
            rss_warm = server.rss_bytes()
            results = []
            for level in levels:
                results.append(run_level(server, level, args.requests, body))
                print(f"concurrency {level}: {results[-1]['requests_per_s']} req/s", file=sys.stderr)
            rss_end = server.rss_bytes()

    today = dt.date.today().isoformat()
    result = {
        "benchmark": "serving",
        "date": today,
        "config": {
            "model": "tiny m9 (altdiffusion.models.tiny)",
            "steps": args.steps,
            "width": args.size,
            "height": args.size,
            "sampler": args.sampler,
            "requests": args.requests,
            "max_queue": args.max_queue,
            "warmup": args.warmup,
            "client": "httpx, one thread per client, loopback",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "loadavg_at_start": load_start,
            "loadavg_at_end": list(os.getloadavg()),
        },
        "server_start_s": round(start_s, 2),
        "server_rss_mib": {"after_warmup": round(rss_warm / 2**20, 1), "end": round(rss_end / 2**20, 1)},
        "levels": results,
    }
    out = args.out or ROOT / "results" / f"serving-{today}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(markdown(result))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
