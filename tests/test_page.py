"""The try-it page in headless Chromium (Debian's `chromium`, driven by Playwright): pick a real
CIFAR-10 JPEG, see one bar per class with the Predictor's top-1 first and the latency; the page
loads nothing from outside the server."""
from __future__ import annotations

import shutil

import pytest

from tuneforge.core.data.images import list_images
from tuneforge.deploy.predictor import Predictor
from tuneforge.deploy.serve import ServeSettings, create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_page_uploads_an_image_and_shows_the_top_k_as_bars(seed_bundle, cifar3, live_server, tmp_path):
    if CHROMIUM is None:
        pytest.fail("headless browser test needs Debian's chromium: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright
    image = list_images([cifar3 / "test" / "frog"])[0]
    want = Predictor(seed_bundle).predict_files([image], top_k=3)[0]
    base = live_server(create_app(seed_bundle, ServeSettings()))
    outside = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((base, "blob:", "data:")) else None)
        page.goto(base + "/")
        page.wait_for_selector("#image-input:not(.hidden)", timeout=20_000)  # /v1/info answered: model ready
        assert page.inner_text("#title") == "seed-cnn"
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#bars .row", timeout=20_000)
        rows = page.query_selector_all("#bars .row")
        labels = [r.get_attribute("data-label") for r in rows]
        assert labels == [t["label"] for t in want["top"]]  # 3 classes: all of them, best first
        assert float(rows[0].get_attribute("data-probability")) == pytest.approx(want["top"][0]["probability"], abs=1e-5)
        widths = [float(r.query_selector(".bar").evaluate("e => e.getBoundingClientRect().width")) for r in rows]
        assert widths[0] > 0 and widths == sorted(widths, reverse=True)  # bars drawn to scale
        assert "ms" in page.inner_text("#latency") and page.inner_text("#error") == ""
        page.set_input_files("#file", str(__file__))  # not an image: a message, no crash
        page.wait_for_function("document.getElementById('error').textContent.includes('422')", timeout=20_000)
        page.screenshot(path=str(tmp_path / "page.png"))
        browser.close()
    assert outside == []  # no CDN, no font service: the page works offline
