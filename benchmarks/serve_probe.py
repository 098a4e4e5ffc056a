"""Probe figures of issue 19 against ``python -m altdiffusion.serve --model mini`` in a child process.

1. Memory: RSS before, at its peak during, and after one img2img request carrying 40 lossless WebP
   4096x4096 init images (a 40 KB body), then 16 concurrent png-info calls of one such image, then
   after a legitimate big job (two 4096x4096 init images).
2. Connections: with the server's open-file limit at 1024 (``ulimit -n 1024``), 1,100 idle sockets;
   whether a normal request is answered during the flood and after it, how many sockets were
   refused at once, and how large the server's log grew.

Run it once from main's code and once from this branch's to compare (the server child imports
whatever ``PYTHONPATH`` points at)::

    PYTHONPATH=/work/main/src python benchmarks/serve_probe.py --out before.json
    PYTHONPATH=$PWD/src       python benchmarks/serve_probe.py --out after.json
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import resource
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image
from procinfo import print_and_save

from altdiffusion.serve.process import ServerProcess

API = "/sdapi/v1"
SMALL = {"width": 64, "height": 64, "steps": 2}
GIB = 2**30


def webp_4096() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (4096, 4096)).save(buf, format="WEBP", lossless=True)
    return base64.b64encode(buf.getvalue()).decode()


class PeakRSS:
    """The server's largest RSS while the ``with`` block runs (sampled every 20 ms)."""

    def __init__(self, server: ServerProcess) -> None:
        self.server, self.peak, self.done = server, 0, threading.Event()

    def _sample(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.server.rss_bytes())
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def settled_rss(server: ServerProcess, seconds: float = 3.0) -> float:
    time.sleep(seconds)
    return server.rss_bytes() / GIB


def probe_memory(server: ServerProcess, client: httpx.Client) -> dict:
    image = webp_4096()
    out: dict = {"webp_base64_bytes": len(image)}
    client.post(f"{API}/txt2img", json={"prompt": "warm up", **SMALL})
    out["rss_idle_gib"] = settled_rss(server)
    body = {"init_images": [image] * 40, **SMALL}
    out["request_body_bytes"] = len(json.dumps(body))
    with PeakRSS(server) as peak:
        r = client.post(f"{API}/img2img", json=body)
    out["40_images"] = {
        "status": r.status_code,
        "answer": r.text[:300],
        "peak_rss_gib": peak.peak / GIB,
        "rss_after_gib": settled_rss(server),
    }
    with PeakRSS(server) as peak, ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: client.post(f"{API}/png-info", json={"image": image}).status_code, range(16)))
    out["16_png_info"] = {"statuses": sorted(set(codes)), "peak_rss_gib": peak.peak / GIB}
    out["rss_before_big_job_gib"] = settled_rss(server)
    with PeakRSS(server) as peak:
        r = client.post(f"{API}/img2img", json={"init_images": [image] * 2, **SMALL})
    out["big_job_2_images"] = {
        "status": r.status_code,
        "peak_rss_gib": peak.peak / GIB,
        "rss_after_gib": settled_rss(server),
    }
    return out


def answered(url: str, timeout: float = 5.0) -> str:
    try:
        return str(httpx.get(f"{url}{API}/progress", timeout=timeout).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def probe_idle_sockets(server: ServerProcess, count: int = 1100) -> dict:
    host, port = server.url.removeprefix("http://").split(":")
    log_before = len(server.log())
    socks, failed = [], 0
    for _ in range(count):
        try:
            socks.append(socket.create_connection((host, int(port)), timeout=2))
        except OSError:
            failed += 1
    time.sleep(3)
    out: dict = {"sockets": count, "connect_failed": failed, "during_flood": answered(server.url)}
    refused = 0
    for sock in socks:
        sock.settimeout(0.001)
        with contextlib.suppress(OSError):
            refused += sock.recv(64).startswith(b"HTTP/1.1 503")
    out["refused_with_503"] = refused
    time.sleep(12)  # past the default 10 s header timeout
    out["after_15_s"] = answered(server.url)
    still_open = 0
    for sock in socks:
        sock.settimeout(0.001)
        try:
            sock.recv(64)  # b"" or a 503/408 answer: the server closed it
        except TimeoutError:
            still_open += 1
        except OSError:
            pass
        sock.close()
    out["still_open_after_15_s"] = still_open
    time.sleep(1)
    out["after_closing"] = answered(server.url)
    log = server.log()[log_before:]
    out["log_bytes"] = len(log.encode())
    out["too_many_open_files_lines"] = log.count("Too many open files")
    out["traceback_lines"] = log.count("Traceback")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # the server child inherits ulimit -n 1024
    server = ServerProcess({"mini": "mini"}, start_timeout=600).start()
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))  # the probe itself needs > 1,100
    try:
        figures = {}
        if not args.skip_memory:
            with httpx.Client(base_url=server.url, timeout=600) as client:
                figures["memory"] = probe_memory(server, client)
        figures["idle_sockets"] = probe_idle_sockets(server)
        figures["server_alive"] = server.alive()
    finally:
        server.stop()
    print_and_save(figures, args.out)


if __name__ == "__main__":
    main()
