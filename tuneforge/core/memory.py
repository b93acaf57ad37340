"""A training step's peak memory, estimated before the first step, and the split that fits.

A fit that does not fit the machine is killed by the kernel without a word (a semi-supervised
efficientnet_lite0 fit at 224 px, 64 labelled + 448 unlabeled images a step, reached 24 GB). So
before training, `plan_memory` measures rather than guesses: one forward pass of the real
strategy on a probe of the first batch (2 labelled rows and their share of unlabeled rows),
under `torch.autograd.graph.saved_tensors_hooks`, sums the bytes autograd keeps for the
backward pass (the activations; weights and buffers left out: they are already in memory),
scales that to the whole batch, and adds what the optimizer step allocates (gradients, AdamW's
two moments, the foreach temporaries). The process's memory now (model, decoded data, libraries)
is already in use; the rest must fit into what the system (and its cgroup limit) still has.

If it does not, the step is split into k micro-batches (gradient accumulation, `Engine`),
the smallest k that fits; if even one labelled row a micro-batch would not fit, the fit is
refused naming the estimate, the memory and the flags that shrink it. Either way one console
line gives the estimate, and report.json keeps it ("memory")."""
from __future__ import annotations

import contextlib
import copy
import logging

import torch
from torch import nn

from ..errors import ConfigError
from .engine.loop import rows, split_batch
from .host import available_bytes, rss_bytes  # noqa: F401 (rss_bytes: part of this module's interface)

log = logging.getLogger("tuneforge")

GB = 1024 ** 3
# Measured with ru_maxrss on efficientnet_lite0 steps (224 px batch 8, 96 px batch 32, FixMatch
# at 64 px 4 + 28): a real step's peak RSS grows by 1.31-1.35x the bytes autograd saves (the
# backward pass holds gradients of activations next to the activations, and the allocator keeps
# freed blocks); 1.6 keeps the estimate on the safe side.
ACTIVATION_FACTOR = 1.6
# Bytes per trainable parameter byte that the step adds: its gradient, the optimizer's state
# (AdamW/Adam: two moments; SGD: the momentum buffer) and the foreach update's temporaries.
OPTIMIZER_COPIES = {"adamw": 4, "adam": 4, "sgd": 3}
HEADROOM = 0.85  # of the available memory a step may plan to use: page cache, other processes, noise
SHRINK_FLAGS = "--batch-size, --image-size, --semi-mu (semi-supervised), --freeze (fewer trained layers)"


def _storage(t: torch.Tensor) -> tuple[int, int]:
    try:
        s = t.untyped_storage()
        return s.data_ptr(), s.nbytes()
    except (RuntimeError, NotImplementedError):  # tensors without a plain storage (mkldnn, wrappers)
        return id(t), t.numel() * t.element_size()


def saved_bytes(model: nn.Module, strategy, batch, precision: str = "fp32") -> tuple[int, int, int]:
    """One forward pass of `strategy.train_step` on `batch`, without backward: (bytes autograd
    saved for the backward pass, rows that went through `model`'s forward with gradients,
    rows without). Weights and buffers are not counted. The model's buffers (BatchNorm
    statistics, step counters) and the strategy (pseudo-label counts) are left as they were."""
    fixed = {_storage(t)[0] for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr, nbytes = _storage(t)
        if ptr not in fixed:
            seen[ptr] = max(seen.get(ptr, 0), nbytes)
        return t

    counts = [0, 0]

    def count(_module, args) -> None:
        x = args[0] if args else None
        if isinstance(x, dict):  # token batches
            x = next(iter(x.values()), None)
        counts[0 if torch.is_grad_enabled() else 1] += len(x) if isinstance(x, torch.Tensor) and x.ndim else 0

    buffers = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()
               if not isinstance(v, nn.Parameter)}
    strategy = copy.deepcopy(strategy)
    was = model.training
    rng = torch.get_rng_state()
    model.train()
    # the modules that take the inputs: the model itself, or a SemiModel's student
    entry = getattr(model, "student", model)
    handle = entry.register_forward_pre_hook(count)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _autocast(precision):
            out = strategy.train_step(model, batch, torch.Generator().manual_seed(0))
        del out
    finally:
        handle.remove()
        model.train(was)
        torch.set_rng_state(rng)
        model.load_state_dict(buffers, strict=False)
    return sum(seen.values()), counts[0], counts[1]


def _autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def _describe(batch, grad_rows: int, nograd_rows: int) -> str:
    """'64 labelled + 448 unlabeled at 224px, 512 rows with gradients + 448 without'."""
    inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
    n = rows(batch)
    if isinstance(inputs, (tuple, list)) and len(inputs) == 2 and all(isinstance(x, torch.Tensor) for x in inputs):
        what = f"{n} labelled + {len(inputs[1])} unlabeled"
        first = inputs[0]
    else:
        what = f"batch {n}"
        first = inputs if isinstance(inputs, torch.Tensor) else None
    if isinstance(first, torch.Tensor) and first.ndim == 4 and first.shape[1] == 3:
        what += f" at {first.shape[-1]}px"
    passes = f"{grad_rows} through the network with gradients" + (f", {nograd_rows} without" if nograd_rows else "")
    return f"{what}; {passes}"


def estimate(model: nn.Module, strategy, batch, optimizer: str = "adamw", precision: str = "fp32",
             probe_rows: int = 2) -> dict:
    """The step's memory on top of what the process holds now, in bytes: "activations" (of the
    whole `batch`), "optimizer" (gradients, state, update temporaries), plus "process" (RSS now)
    and what it was measured on."""
    n = rows(batch)
    parts = max(1, n // probe_rows)
    probe = split_batch(batch, parts)[0] if parts > 1 else batch
    saved, grad_rows, nograd_rows = saved_bytes(model, strategy, probe, precision)
    scale = n / max(rows(probe), 1)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return {"activations": int(saved * scale * ACTIVATION_FACTOR),
            "optimizer": trainable * OPTIMIZER_COPIES.get(optimizer, 4),
            "process": rss_bytes(), "rows": n, "probe_rows": rows(probe),
            "batch": _describe(batch, round(grad_rows * scale), round(nograd_rows * scale))}


def data_bytes(loader) -> int:
    """The loader's tensors (decoded images, cached features, labels): already in memory."""
    found = [v for v in vars(loader).values() if isinstance(v, torch.Tensor)]
    found += [v for d in vars(loader).values() if isinstance(d, dict) for v in d.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in found)


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def choose_split(est: dict, available: int, requested: int | str = "auto") -> int:
    """Micro-batches per step: `requested` if a number, else the smallest divisor of the batch's
    rows whose micro-batch fits into HEADROOM of `available`. Raises ConfigError when even one
    row a micro-batch does not fit."""
    n = est["rows"]
    need = lambda k: est["optimizer"] + est["activations"] / k
    budget = HEADROOM * available
    if need(n) > budget:
        raise ConfigError(
            f"not enough memory to train: a step needs ~{(est['process'] + need(1)) / GB:.1f} GB "
            f"({est['batch']}), and even with a micro-batch of one row (--accumulate {n}) "
            f"~{(est['process'] + need(n)) / GB:.1f} GB, but only {(est['process'] + available) / GB:.1f} GB "
            f"are available to this process. Make the step smaller: {SHRINK_FLAGS}")
    if requested != "auto":
        return int(requested)
    return next(k for k in _divisors(n) if need(k) <= budget)


def plan_memory(run, model: nn.Module, strategy, loader) -> dict | None:
    """Estimate a training step's peak memory for `run` (its cfg: optimizer, precision,
    accumulate), choose the micro-batch split, say both on the console and keep them in
    `run.memory` (train_model builds the Engine with its split; report.json records it)."""
    cfg = run.cfg
    requested = getattr(cfg, "accumulate", "auto")
    batch = next(iter(loader.epoch(0)), None)
    if batch is None:
        return None
    est = estimate(model, strategy, batch, cfg.optimizer, getattr(cfg, "precision", "fp32"))
    available = available_bytes()
    kept = (run.resume_ckpt or {}).get("engine", {}).get("accumulate")
    k = choose_split(est, available, kept if kept else requested)
    peak = est["process"] + est["optimizer"] + est["activations"] / k
    total = est["process"] + available
    split = ""
    if k > 1:
        how = "kept from the run's checkpoint" if kept else "--accumulate" if requested != "auto" else \
            "chosen to fit; --accumulate N sets it"
        split = f"; gradient accumulation: {k} micro-batches of {est['rows'] // k} per step ({how})"
    log.info("memory: ~%.1f GB peak per step (%s) of %.1f GB available%s", peak / GB, est["batch"], total / GB, split)
    if requested == "auto" and k > 1:
        log.warning("memory: the whole step (~%.1f GB) would not fit: training in %d micro-batches instead (same "
                    "gradient; BatchNorm sees smaller batches)", (est["process"] + est["optimizer"] + est["activations"]) / GB, k)
    run.memory = {"peak_gb": round(peak / GB, 2), "available_gb": round(total / GB, 2), "accumulate": k,
                  "whole_step_gb": round((est["process"] + est["optimizer"] + est["activations"]) / GB, 2),
                  "process_gb": round(est["process"] / GB, 2), "activations_gb": round(est["activations"] / GB, 3),
                  "optimizer_gb": round(est["optimizer"] / GB, 3), "batch": est["batch"],
                  "data_gb": round(data_bytes(loader) / GB, 3), "measured_on_rows": est["probe_rows"]}
    return run.memory


def accumulation(run) -> int:
    """The micro-batches per step train_model gives the Engine: plan_memory's choice, else a
    number given with --accumulate, else 1."""
    memory = getattr(run, "memory", None)
    if memory:
        return memory["accumulate"]
    cfg = run.cfg
    requested = getattr(cfg, "accumulate", "auto")
    k = 1 if requested == "auto" else int(requested)
    if k > 1 and (cfg.verb == "align" or (cfg.verb == "pretrain" and getattr(cfg, "method", "") != "mlm")):
        # a contrastive loss compares the rows of a batch with each other: micro-batches are another loss
        raise ConfigError(f"--accumulate {k}: `tuneforge {cfg.verb}` trains a contrastive loss, whose rows are "
                          f"compared within the batch, so it cannot be split; use a smaller --batch-size instead")
    return k
