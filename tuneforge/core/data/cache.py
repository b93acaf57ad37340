"""Derived tensors (frozen-encoder features) memoised as safetensors files under the cache folder.

Frozen encoders compute the same outputs every run: the first run pays, later runs (other label
levels, other heads, other fusions) read the file. Writes are atomic, and a damaged or foreign
entry is recomputed, never trusted."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger("tuneforge")


def feature_cache_dir(cache_dir: str | None) -> Path | None:
    """The feature cache folder; None when caching is off (`--cache-dir ""`)."""
    if cache_dir == "":
        return None
    from .images import default_cache_dir
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / "features"


def memoised(path: Path | None, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """compute(), read from / written to the safetensors file `path` (None: no caching)."""
    if path is not None and path.is_file():
        try:
            return load_file(str(path))
        except Exception:  # noqa: BLE001  truncated or foreign file: recompute
            log.warning("feature cache entry %s is damaged; recomputing", path)
    out = compute()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{id(out)}.tmp")
            save_file({k: v.contiguous() for k, v in out.items()}, str(tmp))
            tmp.replace(path)
        except OSError as e:
            log.warning("could not write feature cache %s (%s); continuing without it", path, e)
    return out
