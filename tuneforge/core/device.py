"""Where tensors live and in which precision they are computed, the same code for every device:
`--device auto|cpu|cuda|cuda:N|mps` resolved once (`resolve_device`), batches moved with
`to_device` (pinned memory and non-blocking copies on CUDA, nothing at all on CPU), the autocast
context of `--precision` for the device's type and the gradient scaler fp16 needs.

CPU is the device the tests run on, so nothing here branches on CUDA except where the copy is
made asynchronous: the same calls run on every device."""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")  # plus cuda:N


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device `--device NAME` means: "auto" is the first CUDA GPU when there is one,
    else Apple's MPS, else the CPU. A device that is not here is refused naming --device."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise ConfigError("--device mps: Apple's Metal (MPS) backend is not available here; use --device cpu or auto")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise ConfigError(f"--device {name}: not a device; use cuda or cuda:N with N a GPU's number")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}, "
                              f"CUDA build: {torch.version.cuda or 'none'}); use --device cpu or auto")
        if index and int(index) >= count:
            raise ConfigError(f"--device {name}: this machine has {count} CUDA GPU(s), numbered 0 to {count - 1}")
        return torch.device(name)
    raise ConfigError(f"--device {name!r} is not allowed; choose auto, cpu, cuda, cuda:N or mps")


def precision_warning(precision: str, device: torch.device) -> str | None:
    """What to tell about `precision` on `device`, or None. fp16 on the CPU is allowed (torch
    autocasts and scales it there too, which is how the tests exercise the GPU's fp16 path) but is
    slow: bf16 is the CPU's half precision."""
    if precision == "fp16" and device.type == "cpu":
        return ("--precision fp16 on the CPU: supported by torch but slow (fp16 is a GPU format); "
                "use --precision bf16 on CPUs with native bf16, or fp32")
    return None


def to_device(batch: Any, device: torch.device) -> Any:
    """`batch` on `device`: tensors, and tuples, lists and dicts of them (nested); anything else
    as it is. On CUDA a CPU tensor is copied from pinned (page-locked) memory without waiting
    (the copy overlaps the work queued before it); on the CPU the batch is returned untouched."""
    if isinstance(batch, torch.Tensor):
        if batch.device == device:
            return batch
        if device.type == "cuda" and batch.device.type == "cpu":
            return batch.pin_memory().to(device, non_blocking=True)
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of `precision` on the device's type (fp32: none)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16's loss scaler (its gradients underflow without one); bf16 and fp32 need none. Its state
    is part of a checkpoint, so a resumed fp16 run keeps its scale."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def channels_last(device: torch.device, requested: bool) -> bool:
    """Whether convolutions run in NHWC: faster on the CPU (oneDNN) and on CUDA's tensor cores with
    half precision alike; on MPS it is slower, so it is off there."""
    return requested and device.type != "mps"


def threads(device: torch.device, requested: int, cores: int) -> int:
    """torch's intra-op threads: on the CPU the compute threads (`--threads`, 0: one per core); on a
    GPU the CPU only feeds the device, so a few threads (fewer than cores) leave the others to
    decoding and the data path, unless --threads says otherwise."""
    if requested:
        return requested
    return cores if device.type == "cpu" else max(1, min(4, cores))


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device` (timings of an asynchronous device); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
