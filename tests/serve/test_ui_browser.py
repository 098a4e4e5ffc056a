"""The web UI at ``/``: static files, and a real headless Chromium generating images.

The browser test serves the bundled AltDiffusion-mini (the default, as ``altdiffusion serve``
has it) and a tiny random model. With the mini model, the form as the page fills it (the
model's 64x64, CFG 3, 20 Euler a steps) and one of its example prompts make 4 images that the
mini world's checker accepts; then the tiny model is chosen, and the form and the examples
follow it. The test needs ``/usr/bin/chromium`` (``apt-get install chromium``) and the
``playwright`` Python package (no browser download: it drives the system Chromium); it is
skipped, saying which is missing, otherwise. A screenshot goes to ``test-artifacts/ui.png``
(``ALTDIFFUSION_UPDATE_DOCS_SCREENSHOT=1`` copies it to the README's docs/ui.png).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from altdiffusion.mini.checker import passes  # noqa: E402
from altdiffusion.mini.examples import example_prompts, example_scene  # noqa: E402
from altdiffusion.models.tiny import write_tiny_altdiffusion  # noqa: E402
from altdiffusion.serve import ServeConfig, create_app  # noqa: E402
from tests.serve.running import RunningServer  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PROMPT = "穿着唐装的老人在古建筑前，国画风格"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return write_tiny_altdiffusion(tmp_path_factory.mktemp("ui-model") / "tiny", "m9", safety_checker=False)


@pytest.fixture(scope="module")
def base_url(tiny_model):
    models = {"mini": "mini", "tiny": tiny_model}
    running = RunningServer(create_app(ServeConfig(models, default="mini", safety_checker=False)))
    try:
        yield running.url
    finally:
        running.stop()


# ------------------------------------------------------------------- static files


def test_page_and_assets_are_served_offline(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        html = page.text
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            assert f"static/{name}" in html
            r = c.get(f"/static/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
            assert "http://" not in r.text and "https://" not in r.text, f"{name} refers to an external URL"
        assert "http://" not in html and "https://" not in html
        js = c.get("/static/app.js").text
        for endpoint in ("txt2img", "img2img", "progress", "interrupt", "png-info", "samplers"):
            assert f'"{endpoint}' in js, endpoint
        examples = {m["model_name"]: m["examples"] for m in c.get("/sdapi/v1/sd-models").json()}
        assert any("唐装" in e["prompt"] for e in examples["tiny"])  # published checkpoints: real-world scenes
        assert any("圆形" in e["prompt"] for e in examples["mini"])  # the mini model: scenes of its world
        # Only files directly in static/ by name: no traversal, no other folders.
        for path in (
            "/static/../app.py",
            "/static/..%2fapp.py",
            "/static/%2e%2e%2fui.py",
            "/static/ui.py",
            "/static/",
            "/static/..%2f..%2f..%2fpyproject.toml",
            "/static/%2fetc%2fpasswd",
            "/app.py",
        ):
            r = c.get(path)
            assert r.status_code == 404, path
            assert "import" not in r.text and "root:" not in r.text, path
        assert "/" not in c.get("/openapi.json").json()["paths"]  # the UI stays out of the API schema


def test_basic_auth_protects_the_page(tiny_model):
    app = create_app(ServeConfig({"tiny": tiny_model}, default="tiny", api_auth="ann:pw", safety_checker=False))
    running = RunningServer(app)
    try:
        with httpx.Client(base_url=running.url, timeout=30) as c:
            for path in ("/", "/static/app.js"):
                assert c.get(path).status_code == 401, path
                assert c.get(path, auth=("ann", "pw")).status_code == 200, path
    finally:
        running.stop()


def test_ui_can_be_turned_off(tiny_model):
    running = RunningServer(
        create_app(ServeConfig({"tiny": tiny_model}, default="tiny", safety_checker=False, ui=False))
    )
    try:
        with httpx.Client(base_url=running.url, timeout=30) as c:
            assert c.get("/").status_code == 404
            assert c.get("/sdapi/v1/samplers").status_code == 200
    finally:
        running.stop()


def test_missing_ui_files_leave_the_api_working(tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from altdiffusion.serve.ui import add_ui, static_files

    (tmp_path / "app.js").write_text("x")
    (tmp_path / "notes.txt").write_text("not served")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "style.css").write_text("nested: not served")
    assert set(static_files(tmp_path)) == {"app.js"}
    app = FastAPI()
    add_ui(app, tmp_path)
    with TestClient(app) as c:
        r = c.get("/")
        assert r.status_code == 404 and "not installed" in r.json()["detail"]
        assert c.get("/static/app.js").text == "x"
        assert c.get("/static/notes.txt").status_code == 404
        assert c.get("/static/sub/style.css").status_code == 404


# ------------------------------------------------------------------------ browser


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _playwright():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is missing (pip install playwright)")
    return sync_playwright


def _generate_with_the_mini_models_defaults(page) -> None:
    """The page as a new user finds it: the mini model's settings and examples; one click and Generate."""
    settings = [page.input_value(f"#{field}") for field in ("width", "height", "cfg", "sampler", "steps")]
    assert settings == ["64", "64", "3", "Euler a", "20"]  # the mini model's, not A1111's 512x512, CFG 7
    langs = page.eval_on_selector_all("#examples button", "bs => bs.map(b => b.dataset.lang)")
    assert sorted(langs) == sorted(["zh", "en", "es", "fr", "ru", "ja", "ko", "ar", "it"])
    lang, prompt = example_prompts()[0]
    page.fill("#cfg", "9")  # an example brings back the model's settings too
    page.click(f"#examples button[data-lang='{lang}']")
    assert page.input_value("#prompt") == prompt and page.input_value("#cfg") == "3"
    page.fill("#batch", "4")
    page.fill("#seed", "100")  # a fixed seed keeps the check repeatable; -1 draws as well
    page.click("#generate")
    page.wait_for_function("() => document.querySelectorAll('#gallery img').length >= 4", timeout=120_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    sources = page.eval_on_selector_all("#gallery img", "imgs => imgs.map(i => i.src)")
    images = [Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB") for src in sources]
    assert [im.size for im in images] == [(64, 64)] * 4
    assert [passes(im, example_scene(lang)) for im in images] == [True] * 4
    assert "Steps: 20, Sampler: Euler a, CFG scale: 3, Seed: 100" in page.inner_text("#infotext")
    assert "Done in" in page.inner_text("#status") and "Warning" not in page.inner_text("#status")
    page.screenshot(path=str(ARTIFACTS / "ui.png"), full_page=True)


def _size_warning_and_switching_models(page) -> None:
    """A size far from native is flagged on the page; another model brings its own settings and examples."""
    assert page.is_hidden("#size-warning")
    page.fill("#width", "512")
    assert "native size 64x64" in page.inner_text("#size-warning")
    page.fill("#width", "64")
    assert page.is_hidden("#size-warning")
    page.select_option("#model", label="tiny")
    page.wait_for_selector("#status.ok >> text=Loaded")
    assert page.input_value("#cfg") == "7" and page.input_value("#sampler") == "Euler"
    langs = page.eval_on_selector_all("#examples button", "bs => bs.map(b => b.dataset.lang)")
    assert set(langs) >= {"zh", "en", "zh+en", "es", "fr", "ru", "ja", "ko", "ar", "it"}
    page.click("#examples button[data-lang='ar']")  # a published checkpoint's examples: real-world scenes
    assert page.input_value("#prompt").startswith("قافلة")


def test_generate_in_headless_chromium(base_url):
    sync_playwright = _playwright()
    ARTIFACTS.mkdir(exist_ok=True)
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda req: requests.append(req.url))
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.set_default_timeout(60_000)
            page.goto(base_url + "/")
            page.wait_for_selector("body[data-ready='true']")
            samplers = page.eval_on_selector_all("#sampler option", "opts => opts.map(o => o.value)")
            assert "Euler a" in samplers and "DDIM" in samplers
            _generate_with_the_mini_models_defaults(page)

            # PNG info: upload the generated PNG as a file.            # PNG info: upload the generated PNG as a file.
            src = page.get_attribute("#gallery figure:first-child img", "src")
            png = base64.b64decode(src.split(",", 1)[1])
            assert Image.open(io.BytesIO(png)).size == (64, 64)
            prompt = example_prompts()[0][1]
            page.click("#tab-pnginfo")
            page.set_input_files("#pnginfo-file", files=[{"name": "gen.png", "mimeType": "image/png", "buffer": png}])
            page.wait_for_function("() => document.querySelector('#pnginfo-text').textContent.length > 0")
            text = page.inner_text("#pnginfo-text")
            assert prompt in text and "Steps: 20" in text and "Size: 64x64" in text
            assert prompt in page.inner_text("#pnginfo-table")
            assert "Size-1" not in page.inner_text("#pnginfo-table")
            page.screenshot(path=str(ARTIFACTS / "ui-pnginfo.png"), full_page=True)
            page.click("#pnginfo-send")  # parameters back into the txt2img form
            assert page.get_attribute("#tab-txt2img", "aria-selected") == "true"
            assert page.input_value("#prompt") == prompt
            assert (page.input_value("#seed"), page.input_value("#steps"), page.input_value("#width")) == (
                "100",
                "20",
                "64",
            )
            _size_warning_and_switching_models(page)
            page.fill("#prompt", PROMPT)
            page.fill("#negative", "模糊")
            page.fill("#steps", "2")
            page.fill("#seed", "7")
            page.fill("#batch", "2")
            page.click("#generate")
            page.wait_for_function("() => document.querySelectorAll('#gallery img').length >= 6")
            assert "seed 7" in page.inner_text("#gallery") and "seed 8" in page.inner_text("#gallery")
            assert PROMPT in page.inner_text("#infotext") and "Model: tiny" in page.inner_text("#infotext")

            # img2img: a gallery image as the init image, an uploaded mask, a denoising strength.
            page.click("#tab-txt2img")
            page.click("#gallery figure:first-child button[title^='use as the init image']")
            assert page.get_attribute("#tab-img2img", "aria-selected") == "true"
            page.wait_for_selector("#init-preview", state="visible")
            page.set_input_files(
                "#mask-image",
                files=[{"name": "mask.png", "mimeType": "image/png", "buffer": _png(Image.new("L", (64, 64), 255))}],
            )
            page.wait_for_selector("#mask-preview", state="visible")
            page.locator("#denoise").evaluate("el => { el.value = '0.6'; el.dispatchEvent(new Event('input')); }")
            assert page.inner_text("#denoise-out") == "0.60"
            page.fill("#batch", "1")
            page.click("#generate")
            page.wait_for_function("() => document.querySelectorAll('#gallery img').length >= 7")
            page.wait_for_function("() => document.querySelector('#gallery img').naturalWidth > 0")
            assert page.eval_on_selector("#gallery img", "i => [i.naturalWidth, i.naturalHeight]") == [64, 64]
            text = page.inner_text("#infotext")
            assert "Denoising strength: 0.6" in text and "Mask blur" in text, text

            # Hires fix and a variation seed from the txt2img form.
            page.click("#tab-txt2img")
            page.check("#enable-hr")
            page.fill("#hr-scale", "1.5")
            page.click("#variation-box summary")
            page.fill("#subseed", "5")
            page.fill("#subseed-strength", "0.3")
            page.click("#generate")
            page.wait_for_function("() => document.querySelectorAll('#gallery img').length >= 8")
            page.wait_for_function("() => document.querySelector('#gallery img').naturalWidth > 0")
            assert page.eval_on_selector("#gallery img", "i => [i.naturalWidth, i.naturalHeight]") == [96, 96]
            text = page.inner_text("#infotext")
            assert "Hires upscale: 1.5" in text and "Variation seed: 5" in text and "RNG: CPU" in text, text
            page.uncheck("#enable-hr")
            page.fill("#subseed-strength", "0")

            # Progress with step previews, then Interrupt: a partial image comes back.
            page.click("#tab-txt2img")
            page.fill("#steps", "80")
            page.click("#generate")
            page.wait_for_selector("#preview", state="visible")
            page.wait_for_function("() => parseFloat(document.querySelector('#progress-bar').style.width) > 0")
            page.click("#interrupt")
            page.wait_for_selector("#status.warn >> text=Interrupted")
            assert "(partial)" in page.inner_text("#gallery figure:first-child figcaption")
            assert page.is_hidden("#progress")

            # The server's refusal is shown on the page: more steps than it allows.
            page.click("#tab-txt2img")
            page.fill("#steps", "1000")
            page.click("#generate")
            page.wait_for_selector("#status.error")
            assert "steps" in page.inner_text("#status") and "at most" in page.inner_text("#status")
            assert not errors or all("422" in e for e in errors), errors
        finally:
            browser.close()
    assert requests and all(url.startswith(base_url) or url.startswith("data:") for url in requests), requests
    if os.environ.get("ALTDIFFUSION_UPDATE_DOCS_SCREENSHOT"):  # refresh the README's screenshot
        docs = Path(__file__).resolve().parents[2] / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copy(ARTIFACTS / "ui.png", docs / "ui.png")
