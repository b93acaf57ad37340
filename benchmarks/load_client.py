"""A small asyncio load generator for `tuneforge serve`: N closed-loop connections (keep-alive,
HTTP/1.1, raw sockets) each POSTing real images to /v1/predict as fast as answers come back.

Raw asyncio streams rather than an HTTP client library: on a 2-core machine the client shares
the CPU with the server, and a heavy client would measure itself. Usage:
    python benchmarks/load_client.py --port 8000 --images DIR --concurrency 32 --seconds 15
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

BOUNDARY = "tuneforgeloadtestboundary"


def multipart_request(host: str, port: int, image: bytes, name: str = "image.jpg") -> bytes:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST /v1/predict?top_k=3 HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("server closed the connection")
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.lower() == "content-length":
            length = int(v)
    return status, await reader.readexactly(length)


async def _worker(host: str, port: int, requests: list[bytes], offset: int, stop_at: float, warm_until: float,
                  out: dict) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(requests[i % len(requests)])
            await writer.drain()
            try:
                status, _ = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                out["errors"] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            t1 = time.perf_counter()
            i += 1
            if t0 >= warm_until:  # requests started during warm-up are not counted
                out["latencies"].append(t1 - t0)
                out["status"][status] = out["status"].get(status, 0) + 1
    finally:
        writer.close()


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


async def run_load(host: str, port: int, images: list[bytes], concurrency: int, seconds: float,
                   warmup: float = 2.0) -> dict:
    """Closed-loop load: requests/s over the measured window and latency percentiles (ms)."""
    requests = [multipart_request(host, port, im) for im in images]
    out: dict = {"latencies": [], "status": {}, "errors": 0}
    start = time.perf_counter()
    warm_until, stop_at = start + warmup, start + warmup + seconds
    await asyncio.gather(*[_worker(host, port, requests, k * 7, stop_at, warm_until, out) for k in range(concurrency)])
    lat = out["latencies"]
    ok = out["status"].get(200, 0)
    return {"concurrency": concurrency, "seconds": seconds, "requests": len(lat), "ok": ok,
            "failed": len(lat) - ok + out["errors"], "status": {str(k): v for k, v in out["status"].items()},
            "rps": round(ok / seconds, 1), "p50_ms": round(1000 * _pct(lat, 50), 1),
            "p95_ms": round(1000 * _pct(lat, 95), 1), "p99_ms": round(1000 * _pct(lat, 99), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--images", required=True, help="folder of JPEGs to send (recursively, first 256)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=15)
    a = ap.parse_args()
    images = [p.read_bytes() for p in sorted(Path(a.images).rglob("*.jpg"))[:256]]
    for c in a.concurrency:
        print(json.dumps(asyncio.run(run_load(a.host, a.port, images, c, a.seconds))))


if __name__ == "__main__":
    main()
