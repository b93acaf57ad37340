"""Side-by-side training-step speed of ImageNet EfficientNet-Lite0 at 64 px (issue 17): variants of
the same step built in one process and timed alternately, medians of `--pairs` rounds of 2 steps.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/lite0_speed.py --variants foreach,fused,fused+pkgpad [--threads 2] [--pairs 7]

A variant is '+'-joined words: `fused` (fused AdamW; else foreach), `contig` (NCHW; else channels-last),
`pkgpad` (the package's F.pad before each convolution instead of tuneforge's same padding),
`bneval` (BatchNorm on running statistics while training), `b128` (batch 128; else 64), `compile`
(torch.compile, default mode; its compile time is printed as the warm-up). The step is tuneforge's:
uint8 batch -> flip + crop augmentation -> model -> label-smoothed cross-entropy -> AdamW.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from tuneforge.core.models import create_model
from tuneforge.core.strategies.supervised import Supervised


def make_step(variant: str):
    torch.manual_seed(0)
    batch = 128 if "b128" in variant else 64
    x, y = torch.randint(0, 255, (batch, 3, 64, 64), dtype=torch.uint8), torch.randint(0, 10, (batch,))
    model = create_model("efficientnet_lite0", 10, 64, pretrained=True)
    if "pkgpad" in variant:
        from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding
        for m in model.modules():
            if type(m).__name__ == "_SamePaddingConv":
                m.__class__ = Conv2dDynamicSamePadding
    if "contig" not in variant:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    model.train()
    if "bneval" in variant:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    kind = {"fused": True} if "fused" in variant else {"foreach": True}
    opt = torch.optim.AdamW(model.parameters(), 1e-3, **kind)
    run = torch.compile(model) if "compile" in variant else model
    strategy, gen = Supervised("flip,crop=0.125", 0.1), torch.Generator().manual_seed(0)

    def step() -> int:
        opt.zero_grad(set_to_none=True)
        strategy.train_step(run, (x, y), gen)["loss"].backward()
        opt.step()
        return batch
    t0 = time.perf_counter()
    step(), step()
    print(f"{variant}: warm-up {time.perf_counter() - t0:.1f}s", flush=True)
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="foreach,fused,fused+pkgpad")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--pairs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = {v: make_step(v) for v in args.variants.split(",")}
    rates: dict[str, list[float]] = {v: [] for v in steps}
    for _ in range(args.pairs):
        for v, step in steps.items():
            t0 = time.perf_counter()
            n = step() + step()
            rates[v].append(n / (time.perf_counter() - t0))
    print(f"load {os.getloadavg()}, {args.threads} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    for v, r in rates.items():
        print(f"{v}: median {statistics.median(r):.1f} images/s ({', '.join(f'{a:.1f}' for a in r)})")


if __name__ == "__main__":
    main()
