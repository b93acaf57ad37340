"""Data-parallel training across processes, as torchrun launches them (`torchrun --nproc-per-node N
-m tuneforge fit ...`, or `tuneforge fit --nproc N`, which re-launches itself through torchrun).

torchrun gives every process RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address in its
environment; the process group is started from them on first use (gloo on CPU, NCCL on CUDA).
Without WORLD_SIZE > 1 every helper here is a no-op that returns its input, so one-process
runs take exactly the code paths they always took.

Rules the rest of tuneforge follows: rank 0 alone decides (run folder, --lr auto, stopping,
search parameters: `on_main`, `shared`) and writes; every rank trains on its shard of the
seeded epoch order (core/data/order.py `shard`); the epoch's metric sums are all-reduced."""
from __future__ import annotations

import atexit
import logging
import os
import pickle
import signal
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ...errors import ConfigError

log = logging.getLogger("tuneforge")


def world() -> int:
    """Processes training together (torchrun's WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return int(os.environ.get("RANK", "0") or 0) if world() > 1 else 0


def is_main() -> bool:
    """Whether this process decides and writes (rank 0; the only process without torchrun)."""
    return rank() == 0


def backend() -> str:
    return "nccl" if torch.cuda.is_available() and os.environ.get("TUNEFORGE_DIST_BACKEND") != "gloo" else "gloo"


def init() -> bool:
    """Join torchrun's process group (once); False when this is a one-process run."""
    if world() <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        if backend() == "nccl":
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend())
        atexit.register(_shutdown)
        if not is_main():  # one console, rank 0's: the others say only what goes wrong
            logging.getLogger("tuneforge").setLevel(logging.ERROR)
    return True


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK): which GPU it takes."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if world() > 1 else 0


def local_world() -> int:
    """Processes on this machine (torchrun's LOCAL_WORLD_SIZE): how many share its cores."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1) if world() > 1 else 1


def broadcast_object(obj: Any = None) -> Any:
    """Rank 0's `obj` on every rank (any picklable object)."""
    if not init():
        return obj
    box = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(fn: Callable[[], Any], share: Callable[[Any], Any] = lambda value: value) -> Any:
    """fn() run on rank 0 only. Rank 0 gets its result; every other rank gets `share(result)`, or
    the same exception raised, so a refusal on rank 0 ends every rank with its message instead
    of leaving them waiting for a decision that never comes."""
    if not init():
        return fn()
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except BaseException as e:  # KeyboardInterrupt too: the other ranks must not wait for it
            error = e
    sent = broadcast_object(("error", _picklable(error)) if error is not None else ("ok", share(result) if is_main() else None))
    if error is not None:
        raise error
    if sent[0] == "error":
        raise sent[1]
    return result if is_main() else sent[1]


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def shared(value: Any) -> Any:
    """Rank 0's value of a decision every rank must take alike (stop after this epoch, a trial's
    parameters, a prune)."""
    return broadcast_object(value) if world() > 1 else value


def all_reduce_sums(*values: float) -> tuple[float, ...]:
    """The sums over every rank of each of `values` (numbers or 0-d tensors), as floats."""
    if not init():
        return tuple(float(v) for v in values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return tuple(t.cpu().tolist())


def average_gradients(model: nn.Module) -> None:
    """Gradients averaged over the ranks in one flat all-reduce: the data-parallel step for
    strategies that reach into their model (student/teacher, projections, EMA copies) instead of
    calling it, which DistributedDataParallel's forward cannot wrap. A parameter that got no
    gradient on some rank counts as zero there, so every rank steps the same parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params or not init():
        return
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32).to(params[0].device)
    dist.all_reduce(has, op=dist.ReduceOp.MAX)
    grads = []
    for p, h in zip(params, has.tolist()):
        if h and p.grad is None:
            p.grad = torch.zeros_like(p)
        if h:
            grads.append(p.grad)
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def wrap(model: nn.Module, forwards_model: bool, sync_bn: bool) -> tuple[nn.Module, Callable[[], None] | None]:
    """The module the engine's training steps call and the gradient synchronisation to run after
    each backward: DistributedDataParallel (gradients all-reduced in buckets during backward) for
    strategies whose step is `model(...)`, else the model itself and `average_gradients`.
    `sync_bn`: BatchNorm layers normalise by the statistics of the whole global batch."""
    if sync_bn:
        if not torch.cuda.is_available():
            raise ConfigError("--sync-bn: PyTorch's SyncBatchNorm runs on CUDA only; on CPU each process "
                              "normalises by its own part of the batch (drop --sync-bn)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not forwards_model:
        return model, lambda: average_gradients(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ids = [device.index] if device.type == "cuda" else None
    # static_graph: the parameters a step uses (all, or all but a head some kind leaves unused) are
    # found in the first step and stay the same, without a graph traversal every step
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, static_graph=True), None


@contextmanager
def stop_on_interrupt(request_stop: Callable[[str], None]) -> Iterator[None]:
    """In a multi-process run, Ctrl-C (SIGINT, which torchrun passes to every process) and SIGTERM
    ask for a stop after the current epoch instead of raising mid-step: rank 0's request is shared
    with every rank at the epoch's end (Engine.fit), so all stop after the same epoch and its
    checkpoint. A second Ctrl-C raises as usual."""
    if world() <= 1:
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        log.warning("stopping after this epoch (its checkpoint is kept); Ctrl-C again to abort now")
        request_stop("interrupted")
        for s, h in previous.items():
            signal.signal(s, h)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
