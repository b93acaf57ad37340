"""Hostile load on `tuneforge serve`: ordinary requests (real CIFAR-10 test images) mixed with
hostile ones (decompression bombs, 10 MB texts, deeply nested JSON, slow bodies, oversize
chunked uploads), all to 127.0.0.1, bounded in count and time.

It trains a small bundle (seed-cnn, 1 epoch on a CIFAR-10 subset) unless --run is given, starts
`tuneforge serve` on a free loopback port, sends everything at once while polling /healthz, and
prints JSON: 5xx other than 503/504 (must be 0), /healthz latency while the hostile requests
are in flight (target p99 <= 100 ms), the server's RSS growth (target <= 300 MB), and whether
every ordinary request was answered (200, or 503/504 within its timeout counted from arrival).

    PYTHONPATH=. python benchmarks/hostile_load.py --out benchmarks/results/hostile_load.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import httpx

DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
TIMEOUT_MS = 5000.0


def png_bomb(side: int = 12000, pad_to: int = 0) -> bytes:
    """A valid 1-bit PNG of side x side pixels (~18 kB; 432 MB as RGB), optionally padded with a
    private chunk past `pad_to` bytes (the old server decoded uploads over 64 kB on its thread pool)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    row = b"\0" + b"\xff" * ((side + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row * 500) for _ in range(side // 500)) + z.compress(row * (side % 500)) + z.flush()
    pad = chunk(b"teSt", b"\0" * max(0, pad_to - len(idat))) if pad_to else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)) + pad
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def train_bundle(work: Path) -> Path:
    """seed-cnn, 1 epoch on 100 training images of each CIFAR-10 class (symlinks)."""
    data = work / "cifar"
    for split, n in (("train", 100), ("test", 20)):
        for c in sorted(p.name for p in (DATASETS / "cifar10" / split).iterdir()):
            (data / split / c).mkdir(parents=True, exist_ok=True)
            for f in sorted((DATASETS / "cifar10" / split / c).iterdir())[:n]:
                os.symlink(f, data / split / c / f.name)
    run = work / "run"
    subprocess.run([sys.executable, "-m", "tuneforge", "fit", "--data", str(data), "--model", "seed-cnn", "--epochs", "1",
                    "--out", str(run), "--no-progress", "--no-tensorboard", "--cache-dir", ""], check=True,
                   stdout=subprocess.DEVNULL, timeout=600)
    return run


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # the server has exited
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def attack(base: str, images: list[bytes], n_ordinary: int, hostile_on: bool = True) -> dict:
    limits = httpx.Limits(max_connections=n_ordinary + 64, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        url = f"{base}/v1/predict"

        async def ordinary(i: int) -> dict:
            t0 = time.perf_counter()
            try:
                r = await c.post(url, files={"file": (f"{i}.jpg", images[i % len(images)], "image/jpeg")})
                status = r.status_code
            except httpx.HTTPError as e:
                status = f"{e.__class__.__name__}"
            return {"kind": "ordinary", "status": status, "s": time.perf_counter() - t0}

        async def hostile(kind: str, send) -> dict:
            t0 = time.perf_counter()
            try:
                status = (await send()).status_code
            except httpx.HTTPError as e:  # the server may close a connection it refused mid-body
                status = e.__class__.__name__
            return {"kind": kind, "status": status, "s": time.perf_counter() - t0}

        json_h = {"content-type": "application/json"}
        big_text = b'{"text": "' + b"lorem ipsum dolor " * 580_000 + b'"}'  # ~9.9 MB, under --max-body-mb 10
        deep = b'{"text": ' + b"[" * 100_000
        bomb, padded = png_bomb(), png_bomb(pad_to=70_000)

        async def trickle():  # 1 kB every 0.25 s for 8 s: past the 5 s timeout
            yield b'{"text": "'
            for _ in range(32):
                await asyncio.sleep(0.25)
                yield b"a" * 1024

        async def oversize():  # chunked (no Content-Length), past --max-body-mb
            yield b'{"text": "'
            for _ in range(12):
                yield b"a" * 2**20

        hostiles = (
            [("bomb", lambda: c.post(url, files={"file": ("b.png", bomb, "image/png")}))] * 3
            + [("bomb-padded", lambda: c.post(url, files={"file": ("p.png", padded, "image/png")}))] * 3
            + [("text-10MB", lambda: c.post(url, content=big_text, headers=json_h))] * 4
            + [("deep-json", lambda: c.post(url, content=deep, headers=json_h))] * 3
            + [("slow-body", lambda: c.post(url, content=trickle(), headers=json_h))] * 4
            + [("chunked-oversize", lambda: c.post(url, content=oversize(), headers=json_h))] * 3)

        health: list[float] = []
        done = asyncio.Event()

        async def poll_health():
            async with httpx.AsyncClient(timeout=30) as h:
                while not done.is_set():
                    t0 = time.perf_counter()
                    await h.get(f"{base}/healthz")
                    health.append(time.perf_counter() - t0)
                    await asyncio.sleep(0.02)

        poller = asyncio.create_task(poll_health())
        await asyncio.sleep(0.2)
        t0 = time.perf_counter()
        hostile_tasks = [asyncio.create_task(hostile(k, f)) for k, f in hostiles] if hostile_on else []
        ordinary_tasks = [asyncio.create_task(ordinary(i)) for i in range(n_ordinary)]
        hostile_results = await asyncio.gather(*hostile_tasks)
        ordinary_results = await asyncio.gather(*ordinary_tasks)
        elapsed = time.perf_counter() - t0
        done.set()
        await poller
    return {"ordinary": ordinary_results, "hostile": hostile_results, "health": health, "elapsed_s": elapsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="bundle or run folder to serve (default: train a small one)")
    ap.add_argument("--ordinary", type=int, default=200)
    ap.add_argument("--no-hostile", action="store_true", help="control run: the ordinary requests alone")
    ap.add_argument("--out", help="write the JSON here too")
    args = ap.parse_args()
    images_dir = DATASETS / "cifar10" / "test"
    images = [f.read_bytes() for c in sorted(images_dir.iterdir()) for f in sorted(c.iterdir())[-20:]]
    with tempfile.TemporaryDirectory(prefix="hostile-load-") as tmp:
        run = Path(args.run) if args.run else train_bundle(Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "tuneforge", "serve", str(run), "--host", "127.0.0.1",
                                   "--port", str(port), "--timeout-ms", str(TIMEOUT_MS)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"server never became ready: {server.stderr.read() if server.poll() else ''}")
                time.sleep(0.1)
            for img in images[:20]:  # warm up: first forward passes, allocator
                httpx.post(f"{base}/v1/predict", files={"file": ("w.jpg", img, "image/jpeg")}, timeout=30)
            rss0 = rss_mb(server.pid)
            peak = [rss0]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_mb(server.pid))
                    time.sleep(0.02)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            got = asyncio.run(asyncio.wait_for(attack(base, images, args.ordinary, not args.no_hostile), 120))
            stop.set()
            sampler.join()
            rss_after = rss_mb(server.pid)
            alive = httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()

    def counts(rows):
        out: dict[str, dict[str, int]] = {}
        for r in rows:
            k = out.setdefault(r["kind"], {})
            k[str(r["status"])] = k.get(str(r["status"]), 0) + 1
        return out

    rows = got["ordinary"] + got["hostile"]
    bad_5xx = [r for r in rows if isinstance(r["status"], int) and r["status"] >= 500 and r["status"] not in (503, 504)]
    limit = TIMEOUT_MS / 1000 + 0.5  # a 503/504 must come by the timeout, counted from arrival (+ client slack)
    unanswered = [r for r in got["ordinary"]
                  if not (r["status"] == 200 or (r["status"] in (503, 504) and r["s"] <= limit))]
    ordinary_s = [r["s"] for r in got["ordinary"]] or [float("nan")]
    report = {
        "command": "PYTHONPATH=. python benchmarks/hostile_load.py --out benchmarks/results/hostile_load.json",
        "ordinary_requests": len(got["ordinary"]), "hostile_requests": len(got["hostile"]),
        "status_counts": counts(rows),
        "server_errors_other_than_503_504": len(bad_5xx),
        "ordinary_all_answered": not unanswered, "ordinary_unanswered": len(unanswered),
        "ordinary_latency_s": {"p50": round(pct(ordinary_s, 0.5), 3), "p99": round(pct(ordinary_s, 0.99), 3),
                               "max": round(max(ordinary_s), 3)},
        "healthz_ms": {"samples": len(got["health"]), "p50": round(1000 * pct(got["health"], 0.5), 1),
                       "p99": round(1000 * pct(got["health"], 0.99), 1), "max": round(1000 * max(got["health"]), 1)},
        "rss_mb": {"before": round(rss0), "peak": round(peak[0]), "after": round(rss_after),
                   "growth_peak": round(peak[0] - rss0)},
        "server_alive_after": alive, "elapsed_s": round(got["elapsed_s"], 2),
        "targets": {"server_errors_other_than_503_504": 0, "healthz_p99_ms": 100, "rss_growth_mb": 300},
        "cpus": os.cpu_count(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    ok = not bad_5xx and not unanswered and alive
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
