"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates"; fastai's lr_find): train
for a short while with the learning rate growing exponentially from tiny to huge, watch the
smoothed training loss, stop once it explodes, and suggest the rate where the loss falls
fastest. It runs on copies of the model and strategy and restores torch's RNG, so the fit that
follows starts from exactly the state it would have had without the test.

    result = range_test(model, strategy, loader, lambda m, lr: build_optimizer(m, "adamw", lr))
    result["suggested"], result["lrs"], result["losses"]
"""
from __future__ import annotations

import copy
import itertools
import json
import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..fs import atomic_write_text

log = logging.getLogger("tuneforge")


def range_test(model: nn.Module, strategy, loader, make_optimizer: Callable[[nn.Module, float], torch.optim.Optimizer],
               start_lr: float = 1e-7, end_lr: float = 10.0, num_steps: int = 100, seed: int = 0,
               grad_clip: float | None = None, smoothing: float = 0.98, diverge: float = 4.0) -> dict:
    """Train copies of `model` and `strategy` for up to `num_steps` batches of `loader`
    (`loader.epoch(e)`, as many epochs as it takes), the learning rate going from `start_lr` to
    `end_lr` geometrically. Stops when the smoothed loss exceeds `diverge` times its minimum or is
    not finite. Returns {"lrs", "losses" (smoothed), "raw_losses", "suggested", "steepest", "min_lr"}."""
    model, strategy = copy.deepcopy(model), copy.deepcopy(strategy)  # the real fit's state is never touched
    optimizer = make_optimizer(model, start_lr)
    # groups may carry their own rate (fusion: a slower encoder); keep their ratio to the base rate
    ratios = [g["lr"] / start_lr for g in optimizer.param_groups]
    gen = torch.Generator().manual_seed(seed)
    rng = torch.get_rng_state()
    after_step = getattr(strategy, "after_step", None)
    lrs: list[float] = []
    raw: list[float] = []
    smooth: list[float] = []
    avg, best = 0.0, math.inf
    model.train()
    try:
        torch.manual_seed(seed)
        batches = (b for e in itertools.count() for b in loader.epoch(e))
        for step, batch in zip(range(num_steps), batches):
            lr = start_lr * (end_lr / start_lr) ** (step / (num_steps - 1))
            for g, r in zip(optimizer.param_groups, ratios):
                g["lr"] = lr * r
            out = strategy.train_step(model, batch, gen)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            if after_step is not None:
                after_step(model)
            loss = float(out["loss"].item())
            if not math.isfinite(loss):
                break
            # exponential moving average with bias correction (the first steps are not pulled to 0)
            avg = smoothing * avg + (1 - smoothing) * loss
            value = avg / (1 - smoothing ** (step + 1))
            lrs.append(lr)
            raw.append(loss)
            smooth.append(value)
            best = min(best, value)
            if step > 5 and value > diverge * best:
                break  # exploded: the rates beyond tell nothing
    finally:
        torch.set_rng_state(rng)
    if len(lrs) < 3:
        raise RuntimeError("the learning-rate range test diverged within its first steps; lower --start-lr")
    steepest, min_lr = suggest(lrs, smooth)
    return {"lrs": lrs, "losses": smooth, "raw_losses": raw, "suggested": steepest, "steepest": steepest,
            "min_lr": min_lr}


def suggest(lrs: list[float], losses: list[float]) -> tuple[float, float]:
    """(the rate of the steepest descent of the smoothed loss against log(lr), before its
    minimum; the rate of the minimum / 10). The first tenth of the curve is skipped: the moving
    average is still settling there. When the curve has no descent to speak of, min/10 is both."""
    x, y = np.log10(np.asarray(lrs)), np.asarray(losses)
    lowest = int(np.argmin(y))
    min_lr = float(lrs[lowest]) / 10
    skip = max(1, len(y) // 10)
    if lowest - skip < 3:
        return max(min_lr, lrs[0]), max(min_lr, lrs[0])
    grad = np.gradient(y[:lowest + 1], x[:lowest + 1])
    i = skip + int(np.argmin(grad[skip:lowest + 1]))
    return float(lrs[i]), max(min_lr, lrs[0])


def plot(result: dict, path: Path) -> Path:
    """loss against learning rate (log scale), the suggestion marked; a PNG at `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(result["lrs"], result["raw_losses"], color="0.8", lw=1, label="loss")
    ax.plot(result["lrs"], result["losses"], lw=2, label="smoothed loss")
    ax.axvline(result["suggested"], color="C3", ls="--", label=f"suggested {result['suggested']:.2g}")
    ax.set_xscale("log")
    # the smoothed curve decides: the raw losses' spikes near divergence would flatten it
    low, first = min(result["losses"]), result["losses"][0]
    ax.set_ylim(low - 0.1 * abs(low), max(result["losses"]) + 0.25 * abs(first - low) + 1e-3)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)  # atomic, as every run file
    return path


def save(result: dict, path: Path) -> None:
    """lr_find.json: the curve and the suggestion."""
    atomic_write_text(path, json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in result.items()}, indent=1))
