"""Raw training throughput of `seed-cnn` (batch 256, data in memory) in the variants the CPU
fast path can choose from, of the models the recipes train (`--models NAME@SIZE[:FROZEN]`, fp32
channels-last; FROZEN stages cached, so only the rest trains), plus the machine's measured matmul
peak, so achieved GFLOP/s can be read against the physical limit.

    .venv/bin/python benchmarks/throughput.py [--seconds 8] [--out benchmarks/results/throughput.json]

Each variant runs `--seconds` of full training steps (forward, backward, Adam step) after a
warm-up; the figure is the median images/s of 1-second windows.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from tuneforge.core.models import create_model
from tuneforge.core.models.base import StageTail


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0, k = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        a @ b
        k += 1
    return 2 * n ** 3 * k / (time.perf_counter() - t0) / 1e9


def train_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """3x the forward FLOPs (forward + two backward products of the same size). Counted from the
    forward only: FlopCounterMode over-counts the backward of grouped (depthwise) convolutions
    (EfficientNet's came out 14x its forward)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return 3 * counter.get_total_flops()


def bench(variant: str, batch: int, seconds: float, spec: str = "seed-cnn@32") -> dict:
    torch.manual_seed(0)
    name, _, rest = spec.partition("@")
    size, _, frozen = rest.partition(":")
    size, frozen = int(size or 32), int(frozen or 0)
    model = create_model(name, 10, size, pretrained=False)
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))
    if "cl" in variant:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    if frozen:  # what --freeze K trains: the rest of the net on cached stage outputs
        model.freeze(frozen)
        with torch.no_grad():
            x = model.backbone.forward_stages(model.prepare(x), 0, frozen).contiguous()
        model = StageTail(model, frozen)
    flops = train_flops(model, x, y) / batch
    bf16 = "bf16" in variant
    step_model = torch.compile(model) if "compile" in variant else model
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3, foreach=True)

    def step() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(step_model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    rates, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 1.0:
            step()
            n += batch
        rates.append(n / (time.perf_counter() - t0))
    ips = statistics.median(rates)
    return {"model": spec, "variant": variant, "batch": batch, "images_per_s": round(ips, 1),
            "train_mflop_per_image": round(flops / 1e6, 2), "achieved_gflop_s": round(ips * flops / 1e9, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--variants", nargs="*", default=["fp32", "fp32-cl", "bf16-cl", "fp32-cl-compile"])
    ap.add_argument("--models", nargs="*", default=["fast-cnn@32", "efficientnet_lite0@64", "efficientnet_lite0@64:4"],
                    help="recipe models, measured fp32 channels-last at batch 128")
    ap.add_argument("--out", default="benchmarks/results/throughput.json")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    doc = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
           "loadavg_before": os.getloadavg()[0],
           "peak_gflop_s": {"fp32": round(matmul_peak(torch.float32), 1), "bf16": round(matmul_peak(torch.bfloat16, 1024), 1)},
           "results": []}
    runs = [(v, args.batch, "seed-cnn@32") for v in args.variants] + [("fp32-cl", 128, m) for m in args.models]
    for v, batch, spec in runs:
        try:
            doc["results"].append(bench(v, batch, args.seconds, spec))
        except Exception as e:  # a variant the platform cannot run (e.g. no compiler) is reported, not fatal
            doc["results"].append({"model": spec, "variant": v, "error": f"{e.__class__.__name__}: {str(e)[:200]}"})
        print(json.dumps(doc["results"][-1]), flush=True)
    doc["loadavg_after"] = os.getloadavg()[0]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print(json.dumps({k: v for k, v in doc.items() if k != "results"}))


if __name__ == "__main__":
    main()
