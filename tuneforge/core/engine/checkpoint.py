"""Checkpoint files: written atomically (temp file + fsync + rename, core/fs.py) so a crash,
SIGKILL or full disk mid-write never leaves a corrupt last.pt, only the previous one; read back
with weights_only=True (no arbitrary unpickling)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...errors import BundleError
from ..fs import atomic_write


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save, atomically; a full or read-only disk is a StorageError naming `path`."""
    # a Python file object, not a path: torch's own C++ writer reports a full disk as
    # "basic_ios::clear: iostream error", while through a file the OSError (errno and all) surfaces
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: Path) -> dict:
    if not path.is_file():
        raise BundleError(f"{path}: no checkpoint here (a run writes checkpoints/last.pt after its first epoch)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BundleError(f"{path}: unreadable checkpoint ({e.__class__.__name__}: {e})") from e
