"""Deployment benchmarks (BENCHMARKS.md, section "Deployment"), one command each, on a run of
`tuneforge fit ... --model efficientnet_lite0 --image-size 64 --out runs/serve-bench`:

  python benchmarks/deploy.py export  --run runs/serve-bench --bundle runs/serve-bench-bundle
      ONNX + int8 export; the int8 accuracy change on the run's test split (CIFAR-10 test, 10k)
  python benchmarks/deploy.py speed   --bundle runs/serve-bench-bundle
      images/s of eager PyTorch vs ONNX Runtime (fp32 and int8) at batch 1 and 32, same bundle
  python benchmarks/deploy.py load    --bundle runs/serve-bench-bundle --images DIR
      `tuneforge serve` in its own process, loaded from this one over loopback at concurrency
      1, 8, 32: micro-batching (default settings) vs batch-size-1 serving, ONNX Runtime and eager
      PyTorch; --ablate adds ONNX micro-batching with --busy-wait (spinning inference threads)

Results go to benchmarks/results/deploy_*.json. Run each under `flock /tmp/tuneforge-bench.lock`."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _machine() -> dict:
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
            "load_avg": os.getloadavg(), "python": platform.python_version()}


def _save(name: str, doc: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"deploy_{name}.json").write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


def cmd_export(a) -> None:
    import tuneforge
    t0 = time.perf_counter()
    cfg = tuneforge.export(a.run, a.bundle, format="onnx", quantize="int8")
    _save("export", {**_machine(), "command": f"tuneforge export {a.run} --out {a.bundle} --format onnx --quantize int8",
                     "wall_s": round(time.perf_counter() - t0, 1), "onnx": cfg["onnx"], "int8": cfg["onnx_int8"]})


def _throughput(fn, batch: np.ndarray, seconds: float) -> float:
    for _ in range(3):
        fn(batch)  # warm-up: allocations, ONNX Runtime's first-run planning
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(batch)
        n += len(batch)
    return n / (time.perf_counter() - t0)


def cmd_speed(a) -> None:
    import torch
    from tuneforge.core.data.images import decode_files, list_images
    from tuneforge.deploy.predictor import Predictor
    torch.set_num_threads(a.threads)
    cfg = json.loads((Path(a.bundle) / "config.json").read_text())
    size = cfg["preprocessing"]["image_size"]
    files = list_images([a.images])[:32] if a.images else []
    images = decode_files(files, size)[0] if files else np.random.default_rng(0).integers(0, 256, (32, 3, size, size), np.uint8)
    out = {**_machine(), "threads": a.threads, "image_size": size, "seconds_each": a.seconds, "images_per_s": {}}
    for backend in ("torch", "onnx", "onnx-int8"):
        p = Predictor(a.bundle, threads=a.threads, backend=backend)
        for bs in (1, 32):
            out["images_per_s"][f"{backend}@{bs}"] = round(_throughput(lambda b: p.logits({"images": b}), images[:bs], a.seconds), 1)
    ips = out["images_per_s"]
    out["onnx_vs_torch"] = {f"batch {bs}": round(ips[f"onnx@{bs}"] / ips[f"torch@{bs}"], 2) for bs in (1, 32)}
    out["int8_vs_torch"] = {f"batch {bs}": round(ips[f"onnx-int8@{bs}"] / ips[f"torch@{bs}"], 2) for bs in (1, 32)}
    _save("speed", out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(bundle: str, extra: list[str]) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge", "serve", bundle, "--port", str(port), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def cmd_load(a) -> None:
    sys.path.insert(0, str(HERE))
    from load_client import run_load
    from tuneforge.core.data.images import list_images
    images = [p.read_bytes() for p in list_images([a.images])[:256]]
    configs = {"micro-batching": ["--max-batch-size", "32", "--max-wait-ms", str(a.max_wait_ms)],
               "batch-size-1": ["--max-batch-size", "1"]}
    backends = a.backend.split(",")
    levels = [int(c) for c in a.levels.split(",")]
    out = {**_machine(), "bundle": a.bundle, "backends": backends, "seconds_each": a.seconds, "repeats": a.repeat,
           "results": {}, "throughput_ratio_at_32": {}}
    # Every backend and serving mode in one run, back to back, `--repeat` times round: the
    # machine is shared and noisy (c=32 throughput varied 141-191 requests/s between identical
    # 12 s runs), so only side-by-side ratios and medians over rounds mean much.
    for _ in range(a.repeat):
        for backend in backends:
            extra = {"micro-batching, busy-wait": [*configs["micro-batching"], "--busy-wait"]} if a.ablate and backend == "onnx" else {}
            for name, flags in {**configs, **extra}.items():
                proc, port = _serve(a.bundle, [*flags, "--backend", backend])
                try:
                    got = [asyncio.run(run_load("127.0.0.1", port, images, c, a.seconds)) for c in levels]
                finally:
                    proc.terminate()
                    proc.wait(10)
                out["results"].setdefault(f"{backend}/{name}", []).append(got)
                print(backend, name, json.dumps(got), flush=True)
    if 32 in levels:
        at32 = lambda key: [run[levels.index(32)] for run in out["results"][key]]
        med = lambda xs: float(np.median(xs))
        for backend in backends:
            mb, b1 = at32(f"{backend}/micro-batching"), at32(f"{backend}/batch-size-1")
            out["throughput_ratio_at_32"][backend] = round(med([r["rps"] for r in mb]) / med([r["rps"] for r in b1]), 2)
            out.setdefault("median_at_32", {})[backend] = {
                name: {"rps": med([r["rps"] for r in rs]), "p99_ms": med([r["p99_ms"] for r in rs])}
                for name, rs in (("micro-batching", mb), ("batch-size-1", b1))}
    out["failed_total"] = sum(r["failed"] for runs in out["results"].values() for run in runs for r in run)
    _save("load" if a.repeat == 1 else "load_repeat", out)


def cmd_screenshot(a) -> None:
    """docs/serve-page.png: the page with a real prediction, in headless Debian chromium."""
    import shutil
    from playwright.sync_api import sync_playwright
    proc, port = _serve(a.bundle, [])
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 820, "height": 640})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#image-input:not(.hidden)", timeout=30_000)
            page.set_input_files("#file", a.image)
            page.wait_for_selector("#bars .row", timeout=30_000)
            page.wait_for_timeout(400)  # let the bars' width transition finish
            page.screenshot(path=a.out, full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
    print(a.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("--run", default="runs/serve-bench")
    e.add_argument("--bundle", default="runs/serve-bench-bundle")
    s = sub.add_parser("speed")
    s.add_argument("--bundle", default="runs/serve-bench-bundle")
    s.add_argument("--images", default=None, help="real images to time on (default: random pixels)")
    s.add_argument("--threads", type=int, default=os.cpu_count())
    s.add_argument("--seconds", type=float, default=8)
    l = sub.add_parser("load")
    l.add_argument("--bundle", default="runs/serve-bench-bundle")
    l.add_argument("--images", required=True, help="folder of real JPEGs to send")
    l.add_argument("--backend", default="onnx,torch", help="comma-separated Predictor backends, each run in turn")
    l.add_argument("--max-wait-ms", type=float, default=5.0)
    l.add_argument("--seconds", type=float, default=12)
    l.add_argument("--levels", default="1,8,32", help="comma-separated concurrency levels")
    l.add_argument("--repeat", type=int, default=1, help="rounds of every setting, for medians (results: deploy_load_repeat.json)")
    l.add_argument("--ablate", action="store_true",
                   help="also ONNX micro-batching with --busy-wait (spinning inference threads, the old default)")
    sc = sub.add_parser("screenshot")
    sc.add_argument("--bundle", default="runs/serve-bench-bundle")
    sc.add_argument("--image", required=True)
    sc.add_argument("--out", default=str(HERE.parent / "docs" / "serve-page.png"))
    a = ap.parse_args()
    {"export": cmd_export, "speed": cmd_speed, "load": cmd_load, "screenshot": cmd_screenshot}[a.cmd](a)


if __name__ == "__main__":
    main()
