"""Optimizers and per-step learning-rate schedules."""
from __future__ import annotations

import math

import torch
from torch import nn

from ...errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: decaying biases and norm scales just fights the data."""
    decay, no_decay = [], []
    scaled: dict[tuple[float, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = getattr(p, "lr_scale", 1.0)  # per-module learning rates (e.g. fusion: per-modality)
        if scale != 1.0:
            scaled.setdefault((scale, p.ndim <= 1), []).append(p)
        else:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    for (scale, nd), ps in sorted(scaled.items()):
        groups.append({"params": ps, "weight_decay": 0.0 if nd else weight_decay, "lr_scale": scale})
    return groups


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9) -> torch.optim.Optimizer:
    groups = param_groups(model, weight_decay)
    for g in groups:  # a group with an lr_scale gets its own lr; the schedule scales every group alike
        g["lr"] = lr * g.pop("lr_scale", 1.0)
    # foreach kernels update all tensors of a group in a few calls instead of one per tensor; the
    # fused CPU kernel does the whole Adam update in one pass over each tensor: a Lite0 training
    # step at 64 px, batch 64, 1 thread went from 27.4 to 29.5 images/s (+8%, medians of 5
    # alternating pairs, load ~11; benchmarks/lite0_speed.py). Fused needs float CPU tensors.
    fused = all(p.device.type == "cpu" and p.is_floating_point() for g in groups for p in g["params"])
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **({"fused": True} if fused else {"foreach": True}))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **({"fused": True} if fused else {"foreach": True}))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, foreach=True)
    raise ConfigError(f"--optimizer: unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base lr at `step` (0-based) of `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "onecycle":
        return max(0.0, 1.0 - progress)  # linear decay to zero after the warm-up peak
    raise ConfigError(f"--schedule: unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")


def build_schedule(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int,
                   warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    if schedule == "onecycle" and warmup_steps == 0:
        warmup_steps = int(0.25 * total_steps)  # one-cycle without a warm-up is just linear decay
    lr_factor(0, total_steps, warmup_steps, schedule)  # validates the name up front
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, schedule))
