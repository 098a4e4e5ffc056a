"""Defects a probe of the server found (issue 19), each against a real uvicorn server on a loopback
port, served with the same connection limits and timeouts as ``altdiffusion serve``.

Small limits keep it fast: 1 s to send headers, 2 s for a body, 24 connections, one queued job.
"""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
import weakref

import httpx
import psutil
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from altdiffusion.models.tiny import write_tiny_altdiffusion
from altdiffusion.serve import ServeConfig, create_app
from altdiffusion.serve.runner import Worker
from tests.serve.running import RunningServer

API = "/sdapi/v1"
SMALL = {"width": 64, "height": 64, "steps": 2}
LIMITS = dict(
    max_queue=1, header_timeout=1, body_timeout=2, keep_alive_timeout=1, max_connections=24, safety_checker=False
)
RSS_BOUND = 200 * 2**20  # 40 decoded 4096x4096 images would be 2.5 GiB


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_altdiffusion(tmp_path_factory.mktemp("hardening") / "tiny", "m9", safety_checker=False)


@pytest.fixture(scope="module")
def config(model):
    return ServeConfig({"tiny": model}, **LIMITS)


@pytest.fixture(scope="module")
def server(config):
    running = RunningServer(create_app(config), config)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _b64(image: Image.Image, fmt: str, **options) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def huge_webp() -> str:
    """A 4096x4096 lossless WebP: a few hundred bytes of base64, 64 MiB once decoded."""
    return _b64(Image.new("RGB", (4096, 4096)), "WEBP", lossless=True)


def _rss() -> int:
    return psutil.Process().memory_info().rss


# ---------------------------------------------------------------- 1: memory per request


def test_many_tiny_but_huge_images_are_refused_from_their_headers(client, config, huge_webp):
    before = _rss()
    r = client.post(f"{API}/img2img", json={"init_images": [huge_webp] * 40, **SMALL})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "init_images"] and "--max-images" in error["msg"] and "40" in error["msg"]
    r = client.post(f"{API}/img2img", json={"init_images": [huge_webp] * 3, **SMALL})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "init_images", 2] and "--max-input-pixels" in error["msg"]
    for _ in range(16):  # png-info reads the header and its text chunks, never the pixels
        assert client.post(f"{API}/png-info", json={"image": huge_webp}).status_code == 200
    assert _rss() - before < RSS_BOUND


def test_images_are_decoded_when_the_job_runs(client):
    whole = base64.b64decode(_b64(Image.effect_noise((64, 64), 60).convert("RGB"), "PNG"))
    truncated = base64.b64encode(whole[: len(whole) // 2]).decode()  # a fine header, half the pixels
    r = client.post(f"{API}/img2img", json={"init_images": [truncated], **SMALL})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "init_images", 0] and "cannot be decoded" in error["msg"]


def test_memory_returns_near_idle_after_a_big_job(client):
    big = _b64(Image.effect_noise((2048, 2048), 60).convert("RGB"), "PNG", compress_level=1)
    r = client.post(f"{API}/img2img", json={"init_images": [big], **SMALL})  # warm up
    assert r.status_code == 200
    before = _rss()
    assert client.post(f"{API}/img2img", json={"init_images": [big, big], **SMALL, "batch_size": 2}).status_code == 200
    time.sleep(0.5)
    assert _rss() - before < 64 * 2**20  # two decoded 2048x2048 images are 32 MiB, their copies more


def test_the_worker_keeps_nothing_of_its_last_job():
    class Payload:
        pass

    payload = Payload()
    held = weakref.ref(payload)
    worker = Worker(1)
    try:
        future = worker.submit(lambda future, payload=payload: "done")
        del payload
        assert future.result(10) == "done"
        del future
        time.sleep(0.5)  # the worker waits for the next job
        assert held() is None, "the worker still holds the finished job"
    finally:
        worker.stop()


# ---------------------------------------------------------------- 2: timeouts, connection cap


def _closed_after(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closed ``sock`` (at most ``limit``), and what it sent."""
    sock.settimeout(limit)
    start, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except TimeoutError:
        return limit, data
    return time.monotonic() - start, data


@pytest.mark.parametrize(
    ("sent", "within"),
    [
        (b"", 1 + 1.5),  # connects and sends nothing
        (b"GET /sdapi/v1/progress HTTP/1.1\r\nHost: 127", 1 + 1.5),  # half the headers
        (b"POST /sdapi/v1/png-info HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{", 2 + 1.5),
    ],
    ids=["idle", "half-headers", "half-body"],
)
def test_slow_clients_are_closed_within_the_timeout(server, sent, within):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(sent)
        seconds, data = _closed_after(sock, within + 5)
    assert seconds < within, f"still open after {seconds:.1f} s"
    assert data in (b"",) or data.startswith(b"HTTP/1.1 408"), data


def test_an_idle_socket_flood_is_refused_and_the_server_still_answers(server, client):
    host, port = server.url.removeprefix("http://").split(":")
    socks = [socket.create_connection((host, int(port))) for _ in range(200)]
    started = time.monotonic()
    try:
        answers = [_closed_after(sock, 6)[1] for sock in socks]  # refused at once, or closed at the timeout
    finally:
        for sock in socks:
            sock.close()
    assert time.monotonic() - started < LIMITS["header_timeout"] + 5
    refused = sum(answer.startswith(b"HTTP/1.1 503") for answer in answers)
    # 24 slots, freed again by the header timeout while the 200 connect: most are refused at once
    assert refused >= 100, refused
    assert all(answer[:12] in (b"HTTP/1.1 503", b"HTTP/1.1 408", b"") for answer in answers)
    assert any(b"TooManyConnections" in answer for answer in answers)
    assert client.get(f"{API}/progress").status_code == 200


def test_log_records_of_a_flood_are_rate_limited():
    import logging

    from altdiffusion.serve.connections import RateLimitFilter

    stream = io.StringIO()
    log = logging.getLogger("tests.flood")
    log.addHandler(logging.StreamHandler(stream))
    log.addFilter(RateLimitFilter(burst=5, period=0.3))
    log.propagate = False
    for i in range(1000):
        log.warning("socket.accept() out of system resource: %d", i)
    time.sleep(0.35)
    log.warning("socket.accept() out of system resource: %d", 1000)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6 and lines[-1].endswith("(and 995 more like it were not logged)"), lines


# ---------------------------------------------------------------- 3: a queued client that goes away


def _wait_for_job(client: httpx.Client) -> None:
    deadline = time.monotonic() + 30
    while not client.get(f"{API}/progress").json()["state"]["job"]:
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)


def test_a_queued_client_that_disconnects_frees_its_slot_at_once(server, client):
    results: dict[str, int] = {}

    def post(name: str, steps: int) -> None:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            results[name] = c.post(f"{API}/txt2img", json={**SMALL, "steps": steps, "prompt": name}).status_code

    running = threading.Thread(target=post, args=("running", 150))
    running.start()
    _wait_for_job(client)
    with httpx.Client(base_url=server.url, timeout=0.5) as gone, pytest.raises(httpx.TimeoutException):
        gone.post(f"{API}/txt2img", json={**SMALL, "prompt": "queued, then gone"})  # takes the one slot
    time.sleep(0.6)  # the server notices the disconnect within 0.25 s
    queued = threading.Thread(target=post, args=("next", 2))
    queued.start()
    queued.join(1.0)
    assert "next" not in results, f"answered {results.get('next')} while the job still ran"
    client.post(f"{API}/interrupt")
    running.join(60)
    queued.join(60)
    assert results == {"running": 200, "next": 200}


# ---------------------------------------------------------------- 5: Host and Origin


def test_foreign_origin_and_host_are_refused(client, server):
    r = client.post(
        f"{API}/interrupt", content=b"x", headers={"origin": "http://evil.example", "content-type": "text/plain"}
    )
    assert r.status_code == 403 and "evil.example" in r.json()["detail"] and "--cors-origins" in r.json()["detail"]
    r = client.get(f"{API}/progress", headers={"host": "evil.example"})
    assert r.status_code == 403 and "--allowed-hosts" in r.json()["detail"]
    assert client.post(f"{API}/skip", headers={"origin": server.url}).status_code == 200  # the UI's own page
    r = client.get(f"{API}/progress", headers={"origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers  # no CORS unless configured


def test_configured_cors_origins_and_hosts(model):
    config = ServeConfig({"tiny": model}, allowed_hosts=("studio.lan",), cors_origins=("https://app.example",))
    running = RunningServer(create_app(config), config)
    try:
        with httpx.Client(base_url=running.url, headers={"host": "studio.lan"}, timeout=30) as c:
            pre = c.options(
                f"{API}/interrupt",
                headers={"origin": "https://app.example", "access-control-request-method": "POST"},
            )
            assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://app.example"
            assert c.post(f"{API}/interrupt", headers={"origin": "https://app.example"}).status_code == 200
            assert c.post(f"{API}/interrupt", headers={"origin": "https://other.example"}).status_code == 403
            assert c.get(f"{API}/progress", headers={"host": "127.0.0.1"}).status_code == 403
    finally:
        running.stop()


# ---------------------------------------------------------------- 7: no object reprs


def test_error_bodies_carry_no_object_reprs(client):
    garbage = base64.b64encode(b"definitely not an image").decode()
    for body in [
        {"init_images": [garbage], **SMALL},
        {"init_images": [_b64(Image.new("RGB", (8, 8)), "PNG")], "mask": garbage, **SMALL},
    ]:
        r = client.post(f"{API}/img2img", json=body)
        assert r.status_code == 422 and "0x" not in r.text, r.text
        (error,) = r.json()["detail"]
        assert "unknown image format" in error["msg"] and error["loc"][1] in ("init_images", "mask")
    # png-info: base64 that is no image has no info (200, A1111's answer to schema-valid input), and says why
    r = client.post(f"{API}/png-info", json={"image": garbage})
    assert r.status_code == 200 and r.json()["info"] == "" and "0x" not in r.text
    assert "unknown image format" in r.json()["reason"]
    assert client.post(f"{API}/png-info", json={"image": "not base64 ***"}).status_code == 422


# ---------------------------------------------------------------- 8: limits, schema, methods


def test_a_job_past_its_time_budget_is_stopped_with_a_clear_error(model):
    config = ServeConfig({"tiny": model}, max_job_seconds=1, safety_checker=False)
    running = RunningServer(create_app(config), config)
    try:
        started = time.monotonic()
        r = httpx.post(f"{running.url}{API}/txt2img", json={**SMALL, "steps": 150}, timeout=120)
        assert r.status_code == 503 and r.json()["error"] == "JobTimeLimit", r.text
        assert "--max-job-seconds" in r.json()["detail"] and time.monotonic() - started < 30
    finally:
        running.stop()


def test_the_schema_states_the_limits_and_options_lists_its_methods(client, config):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    img2img = schemas["Img2ImgRequest"]["properties"]
    assert img2img["init_images"]["maxItems"] == config.max_images
    assert img2img["steps"]["maximum"] == config.max_steps
    assert schemas["Txt2ImgRequest"]["properties"]["batch_size"]["maximum"] == config.max_batch
    assert str(config.max_input_pixels) in schemas["PNGInfoRequest"]["properties"]["image"]["description"]
    r = client.options(f"{API}/options")
    assert r.status_code == 204 and set(r.headers["allow"].split(", ")) == {"GET", "OPTIONS", "POST"}
    r = client.delete(f"{API}/options")
    assert r.status_code == 405 and "POST" in r.headers["allow"] and "GET" in r.headers["allow"]
