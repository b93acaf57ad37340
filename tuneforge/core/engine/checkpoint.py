"""Checkpoint files: written atomically (temp file + rename) so a crash or Ctrl-C mid-write
never leaves a corrupt last.pt; read back with weights_only=True (no arbitrary unpickling)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ...errors import BundleError


def atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise BundleError(f"{path}: no checkpoint here (a run writes checkpoints/last.pt after its first epoch)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BundleError(f"{path}: unreadable checkpoint ({e.__class__.__name__}: {e})") from e
