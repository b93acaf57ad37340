"""The prediction server: FastAPI app around a Predictor and a MicroBatcher.

Routes: POST /v1/predict, GET /v1/info, /healthz, /readyz, /metrics, the try-it page at /,
OpenAPI at /openapi.json and /docs (served from a local copy of Swagger UI, no CDN).
The model is loaded on a background thread after the socket is bound: /healthz answers at
once, /readyz says 503 until the model is there. Models are only read from the local bundle
given at start-up; nothing is ever fetched from a URL."""
from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ...errors import DataError
from ..predictor import Predictor
from ...tasks.registry import describe
from .batching import MicroBatcher, Overloaded
from .limits import BodySizeLimit
from .metrics import ServerMetrics

log = logging.getLogger("tuneforge.serve")


@dataclass
class ServeSettings:
    """Every `tuneforge serve` flag; the defaults are the measured ones (BENCHMARKS.md)."""
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    backend: str = "auto"
    threads: int = 0
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    timeout_ms: float = 5000.0
    max_body_mb: float = 10.0
    busy_wait: bool = False


class Label(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    label: str
    top: list[Label]
    latency_ms: float
    model: str


class _Error(BaseModel):
    detail: str


ERRORS = {c: {"model": _Error, "description": d} for c, d in {
    400: "malformed request (no image or text, bad JSON)", 401: "missing or wrong bearer token (--token)",
    413: "body over the size limit", 415: "neither multipart/form-data nor JSON", 422: "the upload is not a readable image",
    503: "model not loaded yet, or overloaded (see Retry-After)", 504: "ran past the per-request timeout"}.items()}

PREDICT_BODY = {"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary", "description": "an image (JPEG, PNG, ...)"},
        "text": {"type": "string", "description": "text, for text and multimodal models"}}}},
    "application/json": {"schema": {"type": "object", "properties": {
        "text": {"type": "string"},
        "values": {"type": "array", "description": "a numeric sequence, for sequence models"}}}}}}}


INLINE_DECODE_BYTES = 64 * 1024


class _CountRequests:
    """Requests by route and status, as plain ASGI middleware (Starlette's BaseHTTPMiddleware
    costs a task and a stream per request, which shows at a few hundred requests/s)."""

    def __init__(self, app, metrics: ServerMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500

        async def tracked(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        finally:
            route = scope.get("route")
            self.metrics.requests.labels(getattr(route, "path", "other"), str(status)).inc()


def _err(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _read_inputs(request: Request) -> tuple[bytes | None, Any, Any] | JSONResponse:
    """(image bytes, text, values) from multipart or JSON, or the 4xx response saying what is wrong."""
    ctype = request.headers.get("content-type", "")
    values = None
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form()
        except Exception as e:  # broken multipart framing: the client's fault, said plainly
            return _err(400, f"malformed multipart body ({e})")
        upload, text = form.get("file"), form.get("text")
        image = await upload.read() if upload is not None and hasattr(upload, "read") else None
        if upload is not None and not hasattr(upload, "read"):
            return _err(400, "field 'file' must be a file upload, not a text field")
        if image is not None and not image:
            return _err(400, "field 'file' is empty")
        text = text if isinstance(text, str) and text.strip() else None
    elif ctype.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError as e:
            return _err(400, f"malformed JSON ({e})")
        if isinstance(body, dict) and isinstance(body.get("values"), list) and body["values"]:
            image, text, values = None, None, body["values"]  # a numeric sequence
        elif not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"].strip():
            return _err(400, 'JSON body must be {"text": "..."} (or {"values": [...]} for a sequence model); '
                             "send images as multipart field 'file'")
        else:
            image, text = None, body["text"]
    else:
        return _err(415, "send multipart/form-data (field 'file' for an image, 'text' for text) or JSON {\"text\": ...}")
    if image is None and text is None and values is None:
        return _err(400, "no input: send an image as multipart field 'file' and/or text as field 'text'")
    return image, text, values


def create_app(bundle: str | Path, settings: ServeSettings | None = None,
               loader: Callable[[], Predictor] | None = None) -> FastAPI:
    """The app for one bundle. `loader` builds the Predictor (default: from `bundle` with the
    settings' backend and threads); it runs on a background thread at start-up."""
    s = settings or ServeSettings()
    metrics = ServerMetrics()
    state: dict[str, Any] = {"predictor": None, "error": None}
    # ONNX Runtime's threads spin-wait between operators by default; here they would take the
    # cores from the event loop that parses the next requests (c=32, median of 5 rounds:
    # 183 requests/s spinning vs 257 not; BENCHMARKS.md, "Current server").
    load = loader or (lambda: Predictor(bundle, threads=s.threads, backend=s.backend, busy_wait=s.busy_wait))

    def run_batch(items: list) -> list[dict]:
        # All classes, sorted; each request then keeps its own top_k.
        p: Predictor = state["predictor"]
        return p.top_k(items, len(p.classes))

    batcher: MicroBatcher = MicroBatcher(run_batch, s.max_batch_size, s.max_wait_ms, s.max_queue, metrics.on_batch)

    def load_model() -> None:
        try:
            t0 = time.perf_counter()
            state["predictor"] = load()
            # Everything alive now (torch, the model, FastAPI) lives as long as the process:
            # move it out of the collector's sight. Otherwise each full collection walks those
            # millions of objects and stalls every request in flight (one ~350 ms stall per
            # ~10 s at c=32: the whole p99; BENCHMARKS.md, "Load test").
            gc.collect()
            gc.freeze()
            metrics.ready.set(1)
            log.info("model ready: %s (%s backend) in %.1fs", bundle, state["predictor"].backend, time.perf_counter() - t0)
        except Exception as e:  # reported by /readyz; the process stays up to say so
            state["error"] = f"{e.__class__.__name__}: {e}"
            log.error("could not load %s: %s", bundle, state["error"])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        threading.Thread(target=load_model, name="tuneforge-load", daemon=True).start()
        yield
        await batcher.stop()

    app = FastAPI(title="tuneforge prediction server", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=f"Serves the bundle {Path(bundle).name}. POST an image to /v1/predict.")
    app.add_middleware(BodySizeLimit, max_bytes=int(s.max_body_mb * 2**20))
    app.state.batcher, app.state.metrics, app.state.model = batcher, metrics, state

    app.add_middleware(_CountRequests, metrics=metrics)

    def authorized(request: Request) -> bool:
        if not s.token:
            return True
        got = request.headers.get("authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {s.token}".encode())

    unauthorized = lambda: _err(401, "missing or wrong bearer token: send 'Authorization: Bearer TOKEN'",
                                {"WWW-Authenticate": "Bearer"})

    @app.post("/v1/predict", response_model=Prediction, responses=ERRORS, openapi_extra=PREDICT_BODY)
    async def predict(request: Request, top_k: int = Query(5, ge=1, le=1000, description="labels to return")):
        """Top-k labels with probabilities for one image (multipart `file`), one text (JSON
        `{"text": ...}` or multipart `text`) or both, for the model's kind of input."""
        if not authorized(request):
            return unauthorized()
        predictor: Predictor | None = state["predictor"]
        if predictor is None:
            return _err(503, state["error"] or "model is loading; retry shortly", {"Retry-After": "1"})
        t0 = time.perf_counter()
        batcher.arriving += 1
        submitted = False
        try:
            inputs = await _read_inputs(request)
            if isinstance(inputs, JSONResponse):
                return inputs
            try:
                # Small uploads (a thumbnail, a CIFAR JPEG) decode in well under a millisecond:
                # inline, a thread hop would cost more. Large ones decode off the event loop.
                small = inputs[0] is None or len(inputs[0]) < INLINE_DECODE_BYTES
                item = predictor.prepare(*inputs) if small else await run_in_threadpool(predictor.prepare, *inputs)
            except DataError as e:
                return _err(422, str(e))
            batcher.arriving -= 1
            submitted = True
            try:
                ranked = await batcher.submit(item, s.timeout_ms / 1000)
            except Overloaded as e:
                metrics.shed.inc()
                return _err(503, f"overloaded: {e}; retry later", {"Retry-After": "1"})
            except (asyncio.TimeoutError, TimeoutError):
                metrics.timeouts.inc()
                return _err(504, f"prediction took longer than the server's timeout of {s.timeout_ms:g} ms")
        finally:
            if not submitted:
                batcher.arriving -= 1
            metrics.pending.set(batcher.pending)
        took = time.perf_counter() - t0
        metrics.latency.observe(took)
        # A JSONResponse skips re-validating the answer against `Prediction` (documented only).
        # A classifier's answer is its top k; other tasks answer what Task.results gives (a value,
        # an embedding) beside the same latency and model fields.
        answer = {**ranked, "top": ranked["top"][:top_k]} if "top" in ranked else ranked
        return JSONResponse({**answer, "latency_ms": round(took * 1000, 2), "model": predictor.name})

    @app.get("/v1/info")
    async def info(request: Request):
        """The model's name, classes and kind of input (the page uses this)."""
        p: Predictor | None = state["predictor"]
        if p is None:
            return _err(503, state["error"] or "model is loading", {"Retry-After": "1"})
        return {"model": p.name, "classes": p.classes, "backend": p.backend, **describe(p.task),
                "auth": bool(s.token), "metrics": p.config.get("metrics", {})}

    @app.get("/healthz")
    async def healthz():
        """The process is up (it may still be loading the model)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """200 once the model is loaded and can answer, 503 before (or if loading failed)."""
        if state["predictor"] is None:
            return _err(503, state["error"] or "model is loading", {"Retry-After": "1"})
        return {"status": "ready", "backend": state["predictor"].backend}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus(request: Request):
        """Prometheus text format: requests by route and status, latency and batch-size histograms."""
        if not authorized(request):
            return unauthorized()
        metrics.pending.set(batcher.pending)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(resources.files(__package__).joinpath("static/index.html").read_text())

    _offline_docs(app)
    return app


def _offline_docs(app: FastAPI) -> None:
    """/docs from the swagger-ui-bundle package's files: the docs work without the internet."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # /openapi.json is still there
        return
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles
    app.mount("/docs-static", StaticFiles(directory=swagger_ui_path), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="tuneforge API",
                                   swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-static/swagger-ui.css",
                                   swagger_favicon_url="/docs-static/favicon-32x32.png")


def run(bundle: str | Path, settings: ServeSettings) -> None:
    """Serve until Ctrl-C (uvicorn, one process: the model lives once in memory)."""
    import uvicorn
    app = create_app(bundle, settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=False,
                timeout_graceful_shutdown=5)
