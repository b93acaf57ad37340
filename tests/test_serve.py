"""The prediction server, over real HTTP on loopback (uvicorn in a thread), with a real trained
model: it answers what the Predictor answers, batches concurrent requests, refuses bad input
with a 4xx and a message while staying up, sheds load (503), times out (504), checks tokens
(401), and reports Prometheus metrics."""
from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

from tuneforge.cli import build_parser
from tuneforge.core.data.images import list_images
from tuneforge.deploy.predictor import Predictor
from tuneforge.deploy.serve import ServeSettings, create_app


@pytest.fixture(scope="module")
def images(cifar3) -> list[Path]:
    files = list_images([cifar3 / "test"])
    return files[::9]  # 10 real test images across the 3 classes


def _post(base: str, f: Path, **kw) -> httpx.Response:
    return httpx.post(f"{base}/v1/predict", files={"file": (f.name, f.read_bytes(), "image/jpeg")}, timeout=30, **kw)


def _wait_ready(base: str) -> None:
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "model never became ready"
        time.sleep(0.05)


def test_predictions_equal_the_predictor_and_metrics_count_them(seed_bundle, images, live_server):
    base = live_server(create_app(seed_bundle, ServeSettings(backend="torch")))
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    _wait_ready(base)
    want = Predictor(seed_bundle).predict_files(images, top_k=3)
    for f, w in zip(images, want):
        r = _post(base, f, params={"top_k": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["label"] == w["label"] and [t["label"] for t in body["top"]] == [t["label"] for t in w["top"]]
        assert body["top"][0]["probability"] == pytest.approx(w["top"][0]["probability"], abs=1e-5)
        assert body["latency_ms"] > 0 and body["model"] == "seed-cnn"
    metrics = httpx.get(f"{base}/metrics").text
    assert f'tuneforge_requests_total{{route="/v1/predict",status="200"}} {len(images)}.0' in metrics
    assert f"tuneforge_request_latency_seconds_count {len(images)}.0" in metrics
    assert "tuneforge_batch_size_bucket" in metrics
    spec = httpx.get(f"{base}/openapi.json").json()
    assert "/v1/predict" in spec["paths"] and "multipart/form-data" in str(spec["paths"]["/v1/predict"])
    docs = httpx.get(f"{base}/docs").text
    assert "/docs-static/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()  # works offline


def test_concurrent_requests_are_micro_batched_with_the_same_answers(seed_bundle, images, live_server):
    base = live_server(create_app(seed_bundle, ServeSettings(backend="onnx", max_batch_size=16, max_wait_ms=50)))
    _wait_ready(base)
    want = {str(d["path"]): d["label"] for d in Predictor(seed_bundle).predict_files(images)}

    async def burst():
        async with httpx.AsyncClient(timeout=30) as c:
            return await asyncio.gather(*[c.post(f"{base}/v1/predict", files={"file": f.read_bytes()})
                                          for f in images * 2])
    answers = asyncio.run(burst())
    assert [a.json()["label"] for a in answers] == [want[str(f)] for f in images * 2]
    metrics = httpx.get(f"{base}/metrics").text
    count = float(metrics.split("tuneforge_batch_size_count ")[1].split()[0])
    assert count < 2 * len(images)  # fewer forward passes than requests: they were batched


def test_bad_requests_get_a_4xx_with_a_message_and_the_server_stays_up(seed_bundle, images, live_server, tmp_path):
    base = live_server(create_app(seed_bundle, ServeSettings(max_body_mb=0.05)))  # 52 kB
    _wait_ready(base)
    url = f"{base}/v1/predict"
    cases = [
        (dict(files={"file": ("big.jpg", b"\xff" * 80_000, "image/jpeg")}), 413, "limit"),
        (dict(files={"file": ("notes.txt", b"these are not pixels", "text/plain")}), 422, "not an image"),
        (dict(files={"file": ("t.jpg", images[0].read_bytes()[:300], "image/jpeg")}), 422, "cannot read"),
        (dict(files={"file": ("empty.jpg", b"", "image/jpeg")}), 400, "empty"),
        (dict(files={"other": ("a.jpg", images[0].read_bytes(), "image/jpeg")}), 400, "no input"),
        (dict(files=[("file", ("a.jpg", images[0].read_bytes(), "image/jpeg")),
                     ("file", ("b.jpg", images[1].read_bytes(), "image/jpeg"))]), 400, "one file per request"),
        (dict(json={"text": "a frog on a log"}), 422, "send an image"),
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, "malformed JSON"),
        (dict(content=b"raw bytes", headers={"content-type": "application/octet-stream"}), 415, "multipart"),
        (dict(files={"file": images[0].read_bytes()}, params={"top_k": 0}), 422, "greater than or equal"),
    ]
    for kw, status, message in cases:
        r = httpx.post(url, timeout=30, **kw)
        assert r.status_code == status, (kw.keys(), r.text)
        assert message in str(r.json()["detail"]), r.text
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert _post(base, images[0]).status_code == 200  # still serving
    assert 'status="413"' in httpx.get(f"{base}/metrics").text


class SlowPredictor(Predictor):
    """The real model behind a slow forward pass, as on an overloaded machine."""

    def top_k(self, items, k=5):
        time.sleep(0.4)
        return super().top_k(items, k)


def test_timeouts_give_504_and_overload_is_shed_with_503(seed_bundle, images, live_server):
    slow = lambda: SlowPredictor(seed_bundle)
    base = live_server(create_app(seed_bundle, ServeSettings(timeout_ms=100), loader=slow))
    _wait_ready(base)
    r = _post(base, images[0])
    assert r.status_code == 504 and "timeout" in r.json()["detail"]

    base = live_server(create_app(seed_bundle, ServeSettings(max_batch_size=1, max_queue=2), loader=slow))
    _wait_ready(base)

    async def flood():
        async with httpx.AsyncClient(timeout=30) as c:
            return await asyncio.gather(*[c.post(f"{base}/v1/predict", files={"file": images[0].read_bytes()})
                                          for _ in range(6)])
    codes = sorted(r.status_code for r in asyncio.run(flood()))
    assert codes.count(200) >= 2 and codes.count(503) >= 1 and set(codes) <= {200, 503}, codes
    shed = next(r for r in asyncio.run(flood()) if r.status_code == 503)
    assert shed.headers["retry-after"] == "1" and "overloaded" in shed.json()["detail"]
    assert _post(base, images[0]).status_code == 200  # recovers once the burst is over


def test_readyz_is_503_until_the_model_is_loaded(seed_bundle, images, live_server):
    gate = threading.Event()

    def loader():
        gate.wait(20)
        return Predictor(seed_bundle)

    base = live_server(create_app(seed_bundle, loader=loader))
    assert httpx.get(f"{base}/healthz").status_code == 200
    r = httpx.get(f"{base}/readyz")
    assert r.status_code == 503 and "loading" in r.json()["detail"]
    r = _post(base, images[0])
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    gate.set()
    _wait_ready(base)
    assert _post(base, images[0]).status_code == 200


def test_bearer_token_and_loopback_default(seed_bundle, images, live_server):
    base = live_server(create_app(seed_bundle, ServeSettings(token="s3cret")))
    _wait_ready(base)
    assert _post(base, images[0]).status_code == 401
    assert _post(base, images[0], headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{base}/metrics").status_code == 401
    assert _post(base, images[0], headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert httpx.get(f"{base}/healthz").status_code == 200 and httpx.get(f"{base}/").status_code == 200
    assert ServeSettings().host == "127.0.0.1"
    assert build_parser().parse_args(["serve", "b"]).host == "127.0.0.1"
    # ONNX Runtime's threads do not spin in a server unless asked: the event loop needs the cores
    assert ServeSettings().busy_wait is False and build_parser().parse_args(["serve", "b", "--busy-wait"]).busy_wait
