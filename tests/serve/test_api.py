"""The A1111-compatible HTTP API, against a real uvicorn server on a loopback port.

Two tiny random m9 models ("tiny", "tiny2") are written once; 64x64 images with a few steps
take well under a second on a CPU.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from altdiffusion.models.tiny import write_tiny_altdiffusion  # noqa: E402
from altdiffusion.pipelines.infotext import parse_infotext  # noqa: E402
from altdiffusion.serve import ServeConfig, create_app  # noqa: E402
from tests.serve.running import RunningServer  # noqa: E402

API = "/sdapi/v1"
SMALL = {"width": 64, "height": 64, "steps": 2}
BODY_LIMIT = 1_000_000


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-models")
    return {
        "tiny": write_tiny_altdiffusion(root / "tiny", "m9", safety_checker=False),
        "tiny2": write_tiny_altdiffusion(root / "tiny2", "m9", seed=1, safety_checker=False),
    }


@pytest.fixture(scope="module")
def base_url(model_dirs):
    app = create_app(
        ServeConfig(model_dirs, default="tiny", max_queue=4, max_body_bytes=BODY_LIMIT, safety_checker=False)
    )
    running = RunningServer(app)
    try:
        with httpx.Client(base_url=running.url, timeout=60) as client:  # warm up (first call is slow)
            assert client.post(f"{API}/txt2img", json={"prompt": "warm up", **SMALL}).status_code == 200
        yield running.url
    finally:
        running.stop()


@pytest.fixture
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


def b64_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def open_b64(data: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(data)))
    image.load()
    return image


def assert_served(client) -> None:
    """The server still answers a normal request."""
    r = client.post(f"{API}/txt2img", json={"prompt": "still alive", **SMALL})
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 1


# ------------------------------------------------------------------------- txt2img


def test_txt2img_png_carries_parameters_of_the_request(client):
    req = {
        "prompt": "a photo of a cat",
        "negative_prompt": "blurry",
        "seed": 1234,
        "sampler_name": "Euler a",
        "cfg_scale": 6.5,
        "batch_size": 2,
        **SMALL,
    }
    r = client.post(f"{API}/txt2img", json=req)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    assert len(body["images"]) == 2
    for i, data in enumerate(body["images"]):
        image = open_b64(data)
        assert image.format == "PNG" and image.size == (64, 64)
        prompt, negative, params = parse_infotext(image.text["parameters"])
        assert (prompt, negative) == ("a photo of a cat", "blurry")
        assert params["Steps"] == "2" and params["Sampler"] == "Euler a" and params["CFG scale"] == "6.5"
        assert params["Seed"] == str(1234 + i) and params["Size"] == "64x64" and params["Model"] == "tiny"
    echo = body["parameters"]
    assert echo["prompt"] == "a photo of a cat" and echo["seed"] == 1234 and echo["steps"] == 2
    info = json.loads(body["info"])
    for key in (
        "prompt",
        "all_prompts",
        "negative_prompt",
        "all_negative_prompts",
        "seed",
        "all_seeds",
        "width",
        "height",
        "sampler_name",
        "cfg_scale",
        "steps",
        "batch_size",
        "sd_model_name",
        "sd_model_hash",
        "infotexts",
        "clip_skip",
        "denoising_strength",
    ):
        assert key in info, key
    assert info["all_seeds"] == [1234, 1235] and info["seed"] == 1234
    assert info["all_prompts"] == ["a photo of a cat"] * 2
    assert info["sampler_name"] == "Euler a" and info["sd_model_name"] == "tiny"
    assert info["infotexts"][0] == open_b64(body["images"][0]).text["parameters"]
    assert info["interrupted"] is False and info["partial"] == [False, False]

    again = client.post(f"{API}/txt2img", json={**req, "batch_size": 1}).json()  # same seed, same picture
    single, batched = (np.asarray(open_b64(x["images"][0]), dtype=int) for x in (again, body))
    # Batched kernels differ from single ones in the last float bits: at most one 8-bit level
    # (the pipeline's own batch test has the same bound).
    assert np.abs(single - batched).max() <= 1
    assert open_b64(again["images"][0]).text["parameters"] == open_b64(body["images"][0]).text["parameters"]


def test_txt2img_defaults_a1111_extras_and_unknown_fields(client):
    req = {
        "prompt": "a red car",
        "seed": 10,
        "n_iter": 2,
        "styles": ["x"],
        "subseed": 5,
        "subseed_strength": 0.2,
        "restore_faces": False,
        "tiling": False,
        "override_settings": {"CLIP_stop_at_last_layers": 2},
        "alwayson_scripts": {},
        "sampler_index": "Euler",
        "send_images": True,
        "save_images": False,
        "some_unknown_field": {"nested": 1},
        **SMALL,
    }
    r = client.post(f"{API}/txt2img", json=req)
    assert r.status_code == 200, r.text
    body = r.json()
    info = json.loads(body["info"])
    assert info["sampler_name"] == "Euler"  # A1111's API default
    # A1111: with a variation seed every image keeps the seed and the subseed counts up
    assert info["all_seeds"] == [10, 10] and info["all_subseeds"] == [5, 6] and len(body["images"]) == 2
    assert info["cfg_scale"] == 7.0
    assert "some_unknown_field" not in body["parameters"]

    r = client.post(
        f"{API}/txt2img",
        json={"prompt": "x", "send_images": False, "scheduler": "Karras", "sampler_name": "DPM++ 2M", **SMALL},
    )
    assert r.status_code == 200, r.text
    assert r.json()["images"] == []
    infotext = json.loads(r.json()["info"])["infotexts"][0]
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in infotext


# ------------------------------------------------------------------------- img2img


def test_img2img_with_base64_init_image_and_mask(client):
    init = Image.new("RGB", (64, 64), (200, 30, 30))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))  # repaint the centre only
    req = {
        "prompt": "a dog",
        "init_images": [b64_png(init)],
        "mask": "data:image/png;base64," + b64_png(mask),
        "denoising_strength": 0.5,
        "seed": 7,
        **SMALL,
        "steps": 4,
    }
    r = client.post(f"{API}/img2img", json=req)
    assert r.status_code == 200, r.text
    body = r.json()
    out = open_b64(body["images"][0]).convert("RGB")
    assert out.size == (64, 64)
    assert out.getpixel((0, 0)) == (200, 30, 30) and out.getpixel((63, 63)) == (200, 30, 30)  # outside the mask
    _, _, params = parse_infotext(open_b64(body["images"][0]).text["parameters"])
    assert params["Denoising strength"] == "0.5" and params["Mask blur"] == "4" and params["Seed"] == "7"
    info = json.loads(body["info"])
    assert info["denoising_strength"] == 0.5
    assert body["parameters"]["init_images"] is None  # not echoed unless include_init_images

    # raw base64 init image, no mask, default strength 0.75; echo on request
    r = client.post(f"{API}/img2img", json={"init_images": [b64_png(init)], "include_init_images": True, **SMALL})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["denoising_strength"] == 0.75
    assert r.json()["parameters"]["init_images"] == [b64_png(init)]


# ------------------------------------------------------------------ models, options


def test_sd_models_and_options_switch_models(client, model_dirs):
    models = client.get(f"{API}/sd-models").json()
    assert [m["model_name"] for m in models] == ["tiny", "tiny2"]
    for m in models:
        assert set(m) >= {"title", "model_name", "hash", "sha256", "filename", "config"}
        assert len(m["sha256"]) == 64 and m["hash"] == m["sha256"][:10]
        assert m["title"] == f"{m['model_name']} [{m['hash']}]"
        assert m["filename"] == m["model_name"]  # no filesystem path leaks out
        assert str(model_dirs["tiny"]) not in json.dumps(m)
    tiny, tiny2 = models
    assert client.get(f"{API}/options").json()["sd_model_checkpoint"] == tiny["title"]
    req = {"prompt": "a cat", "seed": 3, **SMALL}
    first = client.post(f"{API}/txt2img", json=req).json()
    try:
        r = client.post(f"{API}/options", json={"sd_model_checkpoint": tiny2["title"]})
        assert r.status_code == 200, r.text
        assert client.get(f"{API}/options").json()["sd_model_checkpoint"] == tiny2["title"]
        second = client.post(f"{API}/txt2img", json=req).json()
        info = json.loads(second["info"])
        assert info["sd_model_name"] == "tiny2" and info["sd_model_hash"] == tiny2["hash"]
        assert second["images"][0] != first["images"][0]

        r = client.post(f"{API}/options", json={"sd_model_checkpoint": "nope [0123456789]"})
        assert r.status_code == 400
        assert "not found" in r.json()["detail"]
        r = client.post(f"{API}/options", json={"sd_model_checkpoint": "/etc/passwd"})
        assert r.status_code == 400
        assert client.get(f"{API}/options").json()["sd_model_checkpoint"] == tiny2["title"]
        assert client.post(f"{API}/options", json={"sd_model_checkpoint": 5}).status_code == 422
        assert client.post(f"{API}/options", json={"samples_format": "png"}).status_code == 200  # ignored
    finally:
        assert client.post(f"{API}/options", json={"sd_model_checkpoint": "tiny"}).status_code == 200  # by name
    assert client.get(f"{API}/options").json()["sd_model_checkpoint"] == tiny["title"]
    assert client.post(f"{API}/txt2img", json=req).json()["images"][0] == first["images"][0]
    assert client.post(f"{API}/refresh-checkpoints").status_code == 200
    assert client.get(f"{API}/sd-models").json() == models
    assert client.post(f"{API}/unload-checkpoint").status_code == 200
    assert client.post(f"{API}/txt2img", json=req).json()["images"][0] == first["images"][0]  # loads again
    assert client.post(f"{API}/unload-checkpoint").status_code == 200
    assert client.post(f"{API}/reload-checkpoint").status_code == 200
    assert client.get(f"{API}/options").json()["sd_model_checkpoint"] == tiny["title"]


def test_samplers_schedulers_memory_png_info(client):
    samplers = client.get(f"{API}/samplers").json()
    names = [s["name"] for s in samplers]
    assert {"Euler", "Euler a", "DPM++ 2M", "DDIM"} <= set(names)
    for s in samplers:
        assert set(s) == {"name", "aliases", "options"} and isinstance(s["aliases"], list)
    assert "k_euler_a" in next(s for s in samplers if s["name"] == "Euler a")["aliases"]

    schedulers = client.get(f"{API}/schedulers").json()
    assert {s["label"] for s in schedulers} >= {"Automatic", "Karras"}
    karras = next(s for s in schedulers if s["label"] == "Karras")
    assert karras["name"] == "karras" and karras["default_rho"] == 7.0
    assert set(karras) >= {"name", "label", "aliases", "default_rho", "need_inner_model"}

    memory = client.get(f"{API}/memory").json()
    assert set(memory["ram"]) == {"free", "used", "total"} and memory["ram"]["total"] > 0
    assert "cuda" in memory

    image = client.post(
        f"{API}/txt2img", json={"prompt": "a cat", "negative_prompt": "ugly", "seed": 42, **SMALL}
    ).json()["images"][0]
    info = client.post(f"{API}/png-info", json={"image": "data:image/png;base64," + image}).json()
    assert info["info"].startswith("a cat\nNegative prompt: ugly\nSteps: 2")
    assert info["items"]["parameters"] == info["info"]
    p = info["parameters"]
    assert p["Prompt"] == "a cat" and p["Negative prompt"] == "ugly" and p["Seed"] == "42"
    assert p["Size-1"] == "64" and p["Size-2"] == "64"
    plain = client.post(f"{API}/png-info", json={"image": b64_png(Image.new("RGB", (8, 8)))}).json()
    assert plain == {"info": "", "items": {}, "parameters": {}}


def test_openapi_and_docs(client):
    schema = client.get("/openapi.json").json()
    for path in (
        "txt2img",
        "img2img",
        "options",
        "sd-models",
        "samplers",
        "schedulers",
        "progress",
        "interrupt",
        "skip",
        "png-info",
        "memory",
        "refresh-checkpoints",
        "unload-checkpoint",
        "reload-checkpoint",
    ):
        assert f"{API}/{path}" in schema["paths"], path
    assert client.get("/docs").status_code == 200


# --------------------------------------------------------------- progress, interrupt


def _start(base_url, req, results):
    def run():
        with httpx.Client(base_url=base_url, timeout=120) as c:
            results.append(c.post(f"{API}/txt2img", json=req))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_for_progress(client, *, job_no=0, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = client.get(f"{API}/progress", params={"skip_current_image": "false"}).json()
        if (
            0 < p["progress"] < 1
            and p["current_image"]
            and p["state"]["job_no"] == job_no
            and p["state"]["sampling_step"] < 20
        ):
            return p
        time.sleep(0.03)
    raise AssertionError("never saw the job in progress")


def test_progress_preview_then_interrupt_returns_partial_image(client, base_url):
    idle = client.get(f"{API}/progress").json()
    assert idle["progress"] == 0 and idle["current_image"] is None and idle["state"]["job"] == ""
    results: list[httpx.Response] = []
    thread = _start(base_url, {"prompt": "a long job", "seed": 1, **SMALL, "steps": 30}, results)
    try:
        p = _wait_for_progress(client)
        assert set(p) >= {"progress", "eta_relative", "state", "current_image", "textinfo"}
        assert set(p["state"]) == {
            "skipped",
            "interrupted",
            "job",
            "job_count",
            "job_timestamp",
            "job_no",
            "sampling_step",
            "sampling_steps",
        }
        assert p["state"]["job"] == "txt2img" and p["state"]["sampling_steps"] == 30 and p["state"]["job_count"] == 1
        assert open_b64(p["current_image"]).size == (64, 64)
        assert p["eta_relative"] >= 0
        assert client.get(f"{API}/progress", params={"skip_current_image": "true"}).json()["current_image"] is None
        assert client.post(f"{API}/interrupt").status_code == 200
    finally:
        thread.join(60)
    r = results[0]
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["interrupted"] is True
    assert info["partial"] == [True] and 0 < info["sampling_steps_done"][0] < 30
    assert open_b64(r.json()["images"][0]).size == (64, 64)
    assert client.get(f"{API}/progress").json()["state"]["job"] == ""


def test_skip_stops_only_the_current_iteration(client, base_url):
    results: list[httpx.Response] = []
    thread = _start(base_url, {"prompt": "two iterations", "seed": 1, "n_iter": 2, **SMALL, "steps": 30}, results)
    try:
        p = _wait_for_progress(client)
        assert p["state"]["job_count"] == 2 and p["progress"] < 0.5
        assert client.post(f"{API}/skip").status_code == 200
    finally:
        thread.join(60)
    r = results[0]
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["interrupted"] is False and info["skipped_iterations"] == 1
    assert info["partial"] == [True, False] and info["sampling_steps_done"][1] == 30
    assert info["image_seeds"] == [1, 2] and len(r.json()["images"]) == 2


def test_client_timeout_leaves_no_stuck_job(client, base_url):
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{base_url}{API}/txt2img", json={"prompt": "abandoned", **SMALL, "steps": 30}, timeout=0.5)
    start = time.monotonic()
    assert_served(client)
    assert time.monotonic() - start < 20
    deadline = time.monotonic() + 10
    while client.get(f"{API}/progress").json()["state"]["job"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.get(f"{API}/progress").json()["state"]["job"] == ""


# ------------------------------------------------------------------------ bad input


def test_bad_input_is_rejected_with_clear_errors(client):
    post = client.post
    r = post(f"{API}/txt2img", content=b'{"prompt": "x",', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "RequestValidationError"

    r = post(f"{API}/txt2img", json={"prompt": "x", "width": 100000, "height": 64, "steps": 2})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "width"] and "pixels" in r.json()["detail"][0]["msg"]

    r = post(f"{API}/txt2img", json={"prompt": "x", "steps": -3})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "steps"]
    r = post(f"{API}/txt2img", json={"prompt": "x", "steps": 100000})
    assert r.status_code == 422 and "at most" in r.json()["detail"][0]["msg"]
    r = post(f"{API}/txt2img", json={"prompt": "x", "batch_size": 8, "n_iter": 8, **SMALL})
    assert r.status_code == 422 and "batch_size" in r.json()["detail"][0]["msg"]
    r = post(f"{API}/txt2img", json={**SMALL, "prompt": "x", "width": 65})
    assert r.status_code == 422
    r = post(f"{API}/txt2img", json={"prompt": "x", "sampler_name": "Nonsense", **SMALL})
    assert r.status_code == 422 and "unknown sampler" in r.json()["detail"][0]["msg"]
    r = post(f"{API}/txt2img", json={"prompt": "x", "enable_hr": True, "hr_scale": 100, **SMALL})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "hr_scale"]
    r = post(f"{API}/txt2img", json={"prompt": 5, **SMALL})
    assert r.status_code == 422

    for bad in ("this is not base64!!", "data:image/png;base64,AAAA", base64.b64encode(b"not an image").decode()):
        r = post(f"{API}/img2img", json={"init_images": [bad], **SMALL})
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["loc"] == ["body", "init_images", 0]
    for url in ("http://127.0.0.1/x.png", "https://example.invalid/x.png", "file:///etc/passwd"):
        r = post(f"{API}/img2img", json={"init_images": [url], **SMALL})
        assert r.status_code == 422 and "URL" in r.json()["detail"][0]["msg"]
    r = post(f"{API}/img2img", json={"init_images": [], **SMALL})
    assert r.status_code == 422
    r = post(f"{API}/img2img", json={"init_images": [b64_png(Image.new("RGB", (64, 64)))], "mask": "%%%", **SMALL})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "mask"]
    assert post(f"{API}/png-info", json={"image": "not base64 ***"}).status_code == 422
    assert client.get("/sdapi/v1/no-such-endpoint").status_code == 404
    assert_served(client)


def test_oversized_body_is_413(client, base_url):
    big = "A" * (BODY_LIMIT + 1000)
    r = client.post(f"{API}/img2img", json={"init_images": [big], **SMALL})
    assert r.status_code == 413
    assert r.json()["error"] == "PayloadTooLarge"

    def chunks():  # no Content-Length: the server has to count
        payload = json.dumps({"init_images": [big], **SMALL}).encode()
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    try:
        r = httpx.post(
            f"{base_url}{API}/img2img", content=chunks(), headers={"content-type": "application/json"}, timeout=30
        )
    except httpx.TransportError:  # the server may close before the client finished sending
        pass
    else:
        assert r.status_code == 413
    assert_served(client)


# --------------------------------------------------------------------------- auth


def test_basic_auth_on_every_endpoint(model_dirs):
    app = create_app(
        ServeConfig({"tiny": model_dirs["tiny"]}, default="tiny", api_auth="alice:s3cret:x", safety_checker=False)
    )
    running = RunningServer(app)
    try:
        with httpx.Client(base_url=running.url, timeout=60) as c:
            for path in (f"{API}/sd-models", f"{API}/options", "/openapi.json", "/docs"):
                r = c.get(path)
                assert r.status_code == 401, path
                assert r.headers["www-authenticate"].startswith("Basic")
            for auth in (("alice", "wrong"), ("bob", "s3cret:x"), ("alice", "s3cret"), ("", "")):
                assert c.get(f"{API}/sd-models", auth=auth).status_code == 401, auth
            r = c.get(f"{API}/sd-models", headers={"Authorization": "Basic %%%"})
            assert r.status_code == 401
            r = c.post(f"{API}/txt2img", json={"prompt": "x", **SMALL}, auth=("alice", "nope"))
            assert r.status_code == 401
            good = ("alice", "s3cret:x")
            assert c.get(f"{API}/sd-models", auth=good).status_code == 200
            r = c.post(f"{API}/txt2img", json={"prompt": "x", **SMALL}, auth=good)
            assert r.status_code == 200 and len(r.json()["images"]) == 1
    finally:
        running.stop()


# --------------------------------------------------------------------------- load


def test_bounded_queue_under_concurrent_load(base_url):
    barrier = threading.Barrier(16)

    def one(i):
        with httpx.Client(base_url=base_url, timeout=120) as c:
            barrier.wait()
            return c.post(f"{API}/txt2img", json={"prompt": f"load {i}", "seed": i, **SMALL})

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(one, range(16)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert 200 in codes and 429 in codes, codes
    for r in responses:
        if r.status_code == 429:
            body = r.json()
            assert body["error"] == "QueueFull" and "queue full" in body["detail"]
            assert r.headers["retry-after"] == "1"
        else:
            assert len(r.json()["images"]) == 1
    with httpx.Client(base_url=base_url, timeout=60) as c:
        assert_served(c)


def test_override_settings_model_for_one_job(client):
    models = {m["model_name"]: m for m in client.get(f"{API}/sd-models").json()}
    req = {
        "prompt": "a cat",
        "seed": 3,
        **SMALL,
        "override_settings": {"sd_model_checkpoint": models["tiny2"]["title"]},
    }
    r = client.post(f"{API}/txt2img", json=req)
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["sd_model_name"] == "tiny2"
    assert client.get(f"{API}/options").json()["sd_model_checkpoint"] == models["tiny"]["title"]  # restored
    r = client.post(f"{API}/txt2img", json={**req, "override_settings": {"sd_model_checkpoint": "../tiny2"}})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "override_settings", "sd_model_checkpoint"]


def test_legacy_sampler_index_and_module_entry_point(client, monkeypatch):
    r = client.post(f"{API}/txt2img", json={"sampler_index": "k_euler_a", **SMALL})
    assert json.loads(r.json()["info"])["sampler_name"] == "Euler a"
    r = client.post(f"{API}/txt2img", json={"sampler_index": "k_euler_a", "sampler_name": "DDIM", **SMALL})
    assert json.loads(r.json()["info"])["sampler_name"] == "DDIM"

    from altdiffusion.serve import server as server_module

    calls = []  # main() -> run(ServeConfig): the configuration it would serve
    monkeypatch.setattr(server_module, "run", calls.append)
    assert server_module.main(["--model", "a=/models/x", "--model", "mini", "--api-auth", "u:p", "--port", "7861"]) == 0
    (config,) = calls
    assert (config.models, config.host, config.port) == ({"a": "/models/x", "mini": "mini"}, "127.0.0.1", 7861)
    assert config.api_auth == "u:p" and config.max_queue == 8
