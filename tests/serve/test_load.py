"""The server under load, as a separate process on a loopback port (so its memory is its own).

32 concurrent txt2img requests against ``max_queue=8``: every one gets 200 with an image or
429 (queue full), never a 5xx, and at least one of each; bad requests mixed in get 4xx.
Afterwards the server's resident memory is back near its baseline and it still serves a
normal request. Bounded: 32 + 8 concurrent requests, 64x64 images with 2 steps.
"""

from __future__ import annotations

import base64
import io
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.serve.process import ServerProcess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's RSS from /proc")

API = "/sdapi/v1"
SMALL = {"width": 64, "height": 64, "steps": 2}
CONCURRENCY = 32
MAX_QUEUE = 8
RSS_MARGIN = 150 * 2**20

BAD = [  # (method, path, kwargs) -> must be 4xx
    ("POST", "txt2img", {"content": b'{"prompt": "x",', "headers": {"content-type": "application/json"}}),
    ("POST", "txt2img", {"json": {"prompt": "x", "width": 100000, "height": 64, "steps": 2}}),
    ("POST", "txt2img", {"json": {"prompt": "x", "steps": 100000}}),
    ("POST", "txt2img", {"json": {"prompt": "x", "sampler_name": "nope", **SMALL}}),
    ("POST", "img2img", {"json": {"init_images": ["not base64 !!"], **SMALL}}),
    ("POST", "img2img", {"json": {"init_images": ["file:///etc/passwd"], **SMALL}}),
    ("POST", "png-info", {"json": {"image": "\x89PNG garbage, not base64"}}),
    ("GET", "../../etc/passwd", {}),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = write_tiny_altdiffusion(tmp_path_factory.mktemp("load-model") / "tiny", "m9", safety_checker=False)
    with ServerProcess({"tiny": folder}, max_queue=MAX_QUEUE) as proc:
        yield proc


def _generate(client: httpx.Client, prompt: str, seed: int = 1) -> httpx.Response:
    return client.post(f"{API}/txt2img", json={"prompt": prompt, "seed": seed, **SMALL})


def _settled_rss(server: ServerProcess, client: httpx.Client) -> int:
    """RSS once the server is idle (no job running) and has had a moment to free memory."""
    deadline = time.monotonic() + 30
    while client.get(f"{API}/progress").json()["state"]["job"] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    samples = []
    for _ in range(3):
        time.sleep(0.2)
        samples.append(server.rss_bytes())
    return min(samples)


def _round(url: str, round_no: int) -> tuple[list[httpx.Response], list[httpx.Response]]:
    barrier = threading.Barrier(CONCURRENCY + len(BAD))

    def good(i):
        with httpx.Client(base_url=url, timeout=180) as c:
            barrier.wait()
            return _generate(c, f"负载测试 load test {round_no}-{i}", seed=i)

    def bad(spec):
        method, path, kwargs = spec
        with httpx.Client(base_url=url, timeout=60) as c:
            barrier.wait()
            return c.request(method, f"{API}/{path}", **kwargs)

    with ThreadPoolExecutor(CONCURRENCY + len(BAD)) as pool:
        goods = [pool.submit(good, i) for i in range(CONCURRENCY)]
        bads = [pool.submit(bad, spec) for spec in BAD]
        return [f.result() for f in goods], [f.result() for f in bads]


def test_concurrent_load_is_bounded_and_memory_returns(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for i in range(1):  # warm up: the first call allocates caches that stay
            assert _generate(client, f"warm up {i}", seed=i).status_code == 200
        baseline = _settled_rss(server, client)

        goods, bads = _round(server.url, 0)
        codes = [r.status_code for r in goods]
        assert set(codes) <= {200, 429}, codes
        assert 200 in codes and 429 in codes, codes
        for r in goods:
            if r.status_code == 200:
                (data,) = r.json()["images"]
                image = Image.open(io.BytesIO(base64.b64decode(data)))
                assert image.format == "PNG" and image.size == (64, 64)
            else:
                assert r.json()["error"] == "QueueFull" and r.headers["retry-after"] == "1"
        bad_codes = [r.status_code for r in bads]
        assert all(400 <= c < 500 for c in bad_codes), bad_codes
        assert server.alive()

        after = _settled_rss(server, client)
        growth = after - baseline
        assert growth < RSS_MARGIN, (
            f"RSS grew by {growth / 2**20:.0f} MiB ({baseline / 2**20:.0f} -> {after / 2**20:.0f} MiB)"
        )

        r = _generate(client, "still serving", seed=5)
        assert r.status_code == 200 and len(r.json()["images"]) == 1
        assert client.get(f"{API}/progress").json()["state"]["job"] == ""
    assert "Traceback" not in server.log(), server.log()[-3000:]
