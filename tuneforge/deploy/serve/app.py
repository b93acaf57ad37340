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
import io
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from PIL import Image
from pydantic import BaseModel

from ...core.data.images import TooManyPixels
from ...errors import ConfigError, DataError
from ..predictor import Predictor, open_predictor
from ...tasks.registry import describe
from .batching import MicroBatcher, Overloaded
from .limits import BodySizeLimit, BodyTooLarge
from .metrics import ServerMetrics

log = logging.getLogger("tuneforge.serve")


@dataclass
class ServeSettings:
    """Every `tuneforge serve` flag; the defaults are the measured ones (BENCHMARKS.md)."""
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    token_file: str | None = None
    backend: str = "auto"
    threads: int = 0
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256
    timeout_ms: float = 5000.0
    max_body_mb: float = 10.0
    max_pixels: int = 40_000_000
    decode_threads: int = 0
    busy_wait: bool = False
    device: str = "auto"  # where the model runs (core/device.py)


TOKEN_ENV = "TUNEFORGE_TOKEN"


def resolve_token(token: str | None, token_file: str | None) -> str | None:
    """The bearer token from --token, else --token-file, else $TUNEFORGE_TOKEN (the last two
    keep it out of `ps` and shell history); None: no token required."""
    if token and token_file:
        raise ConfigError("give --token or --token-file, not both")
    if token_file:
        path = Path(token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"--token-file: cannot read {path} ({e.strerror or e})") from None
        if not token:
            raise ConfigError(f"--token-file: {path} is empty")
        if path.stat().st_mode & 0o077:
            log.warning("%s can be read by other users; chmod 600 it", path)
        return token
    return token or os.environ.get(TOKEN_ENV, "").strip() or None


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
    400: "malformed request (no image or text, bad or too deeply nested JSON, more than one file)",
    401: "missing or wrong bearer token (--token, --token-file or $TUNEFORGE_TOKEN)",
    408: "the request body did not arrive within the per-request timeout (--timeout-ms)",
    413: "body over the size limit (--max-body-mb), or an image of more pixels than --max-pixels",
    415: "neither multipart/form-data nor JSON", 422: "the upload is not a readable image, or the input does not fit the model",
    503: "model not loaded yet or overloaded (both with Retry-After), or the model could not be loaded (no Retry-After)",
    504: "ran past the per-request timeout (--timeout-ms), counted from the request's arrival"}.items()}
AUTH_ERRORS = {c: ERRORS[c] for c in (401, 503)}

PREDICT_BODY = {"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "format": "binary", "description": "an image (JPEG, PNG, ...)"},
        "text": {"type": "string", "description": "text, for text and multimodal models"}}}},
    "application/json": {"schema": {"type": "object", "properties": {
        "text": {"type": "string"},
        "values": {"type": "array", "description": "a numeric sequence, for sequence models"}}}}}}}



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


class _Refused(Exception):
    """A request the server will not use, with the status and message to answer."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class _Raw:
    """What a request carried, still undecoded: an image's bytes, a text, or a JSON body."""
    image: bytes | None = None
    text: str | None = None
    json: bytes | None = None


async def _read_inputs(request: Request) -> _Raw:
    """The request's inputs, read but not decoded (decoding is the pool's work); _Refused with
    the 4xx saying what is wrong. BodyTooLarge passes through: the size limit answers 413."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            # One file per request: the pixel limit per image is then the limit per request.
            form = await request.form(max_files=1, max_fields=8)
        except BodyTooLarge:
            raise
        except Exception as e:  # broken multipart framing: the client's fault, said plainly
            detail = str(getattr(e, "detail", e))
            if "Too many files" in detail:  # two uploads: answering for one of them would hide the other
                raise _Refused(400, "one file per request: send each image in its own request "
                                    "(multipart field 'file')") from None
            raise _Refused(400, f"malformed multipart body ({detail})") from None
        upload, text = form.get("file"), form.get("text")
        if upload is not None and not hasattr(upload, "read"):
            raise _Refused(400, "field 'file' must be a file upload, not a text field")
        image = await upload.read() if upload is not None else None
        if image is not None and not image:
            raise _Refused(400, "field 'file' is empty")
        text = text if isinstance(text, str) and text.strip() else None
        if image is None and text is None:
            raise _Refused(400, "no input: send an image as multipart field 'file' and/or text as field 'text'")
        return _Raw(image, text)
    if ctype.startswith("application/json"):
        return _Raw(json=await request.body())
    raise _Refused(415, "send multipart/form-data (field 'file' for an image, 'text' for text) or JSON {\"text\": ...}")


def _check_pixels(data: bytes, limit: int) -> None:
    """Refuse (413) an image whose header announces more than `limit` pixels, whatever the
    model's kind of input; PIL reads only the header here."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Image.DecompressionBombError as e:  # PIL's own ceiling (2x its warning size)
        raise _Refused(413, f"image refused: {e}; this server's limit is {limit / 1e6:g} megapixels (serve --max-pixels)")
    except Exception:  # not an image PIL identifies: the Task's prepare says so by name
        return
    if w * h > limit:
        raise _Refused(413, f"image of {w}x{h} = {w * h / 1e6:.1f} megapixels is over this server's limit of "
                            f"{limit / 1e6:g} megapixels (serve --max-pixels); send a smaller image")


def _prepare(predictor: Predictor, raw: _Raw, max_pixels: int) -> dict:
    """Parse, check and decode one request's inputs into model inputs. Runs on the decode pool,
    never on the event loop: JSON parsing, image decoding and tokenising all take time
    proportional to what a client sends."""
    image, text, values = raw.image, raw.text, None
    if raw.json is not None:
        try:
            body = json.loads(raw.json)
        except RecursionError:  # '[[[[...' 100,000 deep: the parser's own recursion limit
            raise _Refused(400, "malformed JSON (nested too deeply)") from None
        except ValueError as e:
            raise _Refused(400, f"malformed JSON ({e})") from None
        if isinstance(body, dict) and isinstance(body.get("values"), list) and body["values"]:
            values = body["values"]  # a numeric sequence
        elif not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"].strip():
            raise _Refused(400, 'JSON body must be {"text": "..."} (or {"values": [...]} for a sequence model); '
                                "send images as multipart field 'file'")
        else:
            text = body["text"]
    if image is not None:
        _check_pixels(image, max_pixels)
    try:
        return predictor.prepare(image, text, values)
    except TooManyPixels as e:
        raise _Refused(413, f"{e} (serve --max-pixels)") from None
    except DataError as e:
        raise _Refused(422, str(e)) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        # odd JSON values (nested lists, huge numbers) reaching numpy: the input's fault
        log.info("unusable input: %s: %s", e.__class__.__name__, e)
        raise _Refused(422, f"cannot use the input ({e.__class__.__name__}: {e})") from None


def create_app(bundle: str | Path, settings: ServeSettings | None = None,
               loader: Callable[[], Predictor] | None = None) -> FastAPI:
    """The app for one bundle. `loader` builds the Predictor (default: from `bundle` with the
    settings' backend and threads); it runs on a background thread at start-up."""
    s = settings or ServeSettings()
    token = resolve_token(s.token, s.token_file)
    metrics = ServerMetrics()
    state: dict[str, Any] = {"predictor": None, "error": None}
    # ONNX Runtime's threads spin-wait between operators by default; here they would take the
    # cores from the event loop that parses the next requests (c=32, median of 5 rounds:
    # 183 requests/s spinning vs 257 not; BENCHMARKS.md, "Current server").
    load = loader or (lambda: open_predictor(bundle, threads=s.threads, backend=s.backend, busy_wait=s.busy_wait,
                                             max_pixels=s.max_pixels, device=s.device))
    # Decoding and tokenising run here, a few threads, never on the event loop (a 12000x12000
    # PNG decoded there held /healthz 5 s) nor on the 40 threads of the default pool (four
    # such decodes at once took 4 GB). At most this many uploads are decoded at once.
    pool = ThreadPoolExecutor(s.decode_threads or min(4, os.cpu_count() or 1), thread_name_prefix="tuneforge-decode")
    preparing = 0

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
        except Exception as e:  # said by /readyz and /v1/predict; the process stays up to say so
            # The reason names server paths: it goes to the log, clients get a plain message.
            state["error"] = f"{e.__class__.__name__}: {e}"
            log.error("could not load the model %s: %s", bundle, state["error"])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        threading.Thread(target=load_model, name="tuneforge-load", daemon=True).start()
        yield
        await batcher.stop()
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="tuneforge prediction server", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=f"Serves the bundle {Path(bundle).name}. POST an image to /v1/predict.")
    app.add_middleware(BodySizeLimit, max_bytes=int(s.max_body_mb * 2**20))
    app.state.batcher, app.state.metrics, app.state.model = batcher, metrics, state

    app.add_middleware(_CountRequests, metrics=metrics)

    def authorized(request: Request) -> bool:
        if not token:
            return True
        # RFC 7235: the scheme is case-insensitive ("bearer" is as good as "Bearer")
        scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())

    unauthorized = lambda: _err(401, "missing or wrong bearer token: send 'Authorization: Bearer TOKEN'",
                                {"WWW-Authenticate": "Bearer"})

    def not_ready() -> JSONResponse:
        if state["error"]:
            # No Retry-After: retrying cannot help until the server is restarted with a good bundle.
            return _err(503, "the model could not be loaded; the server's log says why")
        return _err(503, "model is loading; retry shortly", {"Retry-After": "1"})

    timeout = s.timeout_ms / 1000

    def timed_out() -> JSONResponse:
        metrics.timeouts.inc()
        return _err(504, f"prediction took longer than the server's timeout of {s.timeout_ms:g} ms")

    @app.post("/v1/predict", response_model=Prediction, responses=ERRORS, openapi_extra=PREDICT_BODY)
    async def predict(request: Request, top_k: int = Query(5, ge=1, le=1000, description="labels to return")):
        """Top-k labels with probabilities for one image (multipart `file`), one text (JSON
        `{"text": ...}` or multipart `text`) or both, for the model's kind of input."""
        nonlocal preparing
        if not authorized(request):
            return unauthorized()
        predictor: Predictor | None = state["predictor"]
        if predictor is None:
            return not_ready()
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        # The timeout counts from arrival: reading the body, waiting for a decode thread,
        # decoding and waiting for a batch all spend it (under overload the queue alone took 6-8 s
        # when the 5 s started at the batch queue).
        deadline = loop.time() + timeout
        left = lambda: max(0.0, deadline - loop.time())
        batcher.arriving += 1
        submitted = False
        try:
            try:
                raw = await asyncio.wait_for(_read_inputs(request), left())
            except (asyncio.TimeoutError, TimeoutError):
                return _err(408, f"the request body did not arrive within the server's timeout of {s.timeout_ms:g} ms")
            if preparing >= s.max_queue:
                metrics.shed.inc()
                return _err(503, f"overloaded: {preparing} requests waiting to be decoded (limit {s.max_queue}); "
                                 "retry later", {"Retry-After": "1"})
            preparing += 1
            try:
                item = await asyncio.wait_for(loop.run_in_executor(pool, _prepare, predictor, raw, s.max_pixels), left())
            except (asyncio.TimeoutError, TimeoutError):
                return timed_out()
            finally:
                preparing -= 1
            batcher.arriving -= 1
            submitted = True
            if left() <= 0:
                return timed_out()
            try:
                ranked = await batcher.submit(item, left())
            except Overloaded as e:
                metrics.shed.inc()
                return _err(503, f"overloaded: {e}; retry later", {"Retry-After": "1"})
            except (asyncio.TimeoutError, TimeoutError):
                return timed_out()
        except _Refused as e:
            return _err(e.status, e.detail)
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

    @app.get("/v1/info", responses=AUTH_ERRORS)
    async def info(request: Request):
        """The model's name, classes, kind of input and test metrics (the page uses this);
        behind the token like /v1/predict, when there is one."""
        if not authorized(request):
            return unauthorized()
        p: Predictor | None = state["predictor"]
        if p is None:
            return not_ready()
        return {"model": p.name, "classes": p.classes, "backend": p.backend, **describe(p.task),
                "auth": bool(token), "metrics": p.config.get("metrics", {})}

    @app.get("/healthz")
    async def healthz():
        """The process is up (it may still be loading the model)."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: ERRORS[503]})
    async def readyz():
        """200 once the model is loaded and can answer, 503 before (or if loading failed)."""
        if state["predictor"] is None:
            return not_ready()
        return {"status": "ready", "backend": state["predictor"].backend}

    @app.get("/metrics", response_class=PlainTextResponse, responses={401: ERRORS[401]})
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
