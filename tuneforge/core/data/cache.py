"""The content-keyed feature cache: what frozen encoders compute, stored under the cache folder.

Frozen encoders compute the same outputs every run: the first run pays, later runs (other label
levels, other heads, other fusions, retrieval over a folder seen before) read the files. An
entry is named by a digest of everything its value depends on (encoder weights, input size,
the inputs' contents). Two shapes of entry:

  memoised(cache_dir, name, compute)   one safetensors file per computed set (multimodal's
                                       encoder outputs, align's text features)
  ItemCache(cache_dir, namespace)      one .npy file per item and view (align's image features),
                                       so a subset or superset of a folder seen before costs only
                                       its new items

Writes are atomic (temp file + rename), and a damaged or foreign entry is recomputed, never
trusted. `cache_dir=""` turns caching off."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .images import default_cache_dir
from .mapped import choose_store

log = logging.getLogger("tuneforge")


def feature_cache_dir(cache_dir: str | None) -> Path | None:
    """The feature cache folder; None when caching is off (`--cache-dir ""`)."""
    if cache_dir == "":
        return None
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / "features"


def digest(*chunks: str | bytes, length: int = 32) -> str:
    """The hex sha256 of the chunks in order (strings as UTF-8), cut to `length`: an entry's name."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(c.encode("utf-8") if isinstance(c, str) else c)
    return h.hexdigest()[:length]


def memoised(cache_dir: str | None, name: str, compute: Callable[[], dict[str, torch.Tensor]],
             store: str = "auto") -> dict[str, torch.Tensor]:
    """compute(), read from / written to the entry FEATURES/`name`.safetensors. An entry read
    back is mapped from its file (safetensors maps it copy-on-write: RssFile, not RssAnon), so
    features larger than memory are paged in as batches use them; with `store` 'disk' (or
    'auto' for an entry over mapped.choose_store's share of memory) a freshly computed entry is
    also returned mapped from the file just written, so the computed copy can be freed."""
    root = feature_cache_dir(cache_dir)
    path = root / f"{name}.safetensors" if root is not None else None
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
        else:
            if choose_store(sum(v.numel() * v.element_size() for v in out.values()), store) == "disk":
                return load_file(str(path))
    return out


class ItemCache:
    """Per-item arrays under FEATURES/`namespace`/: the file of item `key` (its content digest)
    and view `view` is KEY[:2]/KEY.npy for view 0 and KEY.VIEW.npy otherwise. A failed write
    turns the cache off for the rest of the run (a full disk should not fail every item)."""

    def __init__(self, cache_dir: str | None, namespace: str):
        root = feature_cache_dir(cache_dir)
        self.root = root / namespace if root is not None else None

    def _path(self, key: str, view: str) -> Path:
        return self.root / key[:2] / f"{key}{'.' + view if view else ''}.npy"

    def load(self, key: str, views: tuple[str, ...]) -> np.ndarray | None:
        """The item's views stacked (V, ...), or None when any is missing or unreadable."""
        if self.root is None:
            return None
        try:
            if all(self._path(key, v).is_file() for v in views):
                return np.stack([np.load(self._path(key, v), allow_pickle=False) for v in views])
        except (OSError, ValueError):
            pass  # a damaged entry is recomputed, never trusted
        return None

    def save(self, key: str, views: tuple[str, ...], value: np.ndarray) -> None:
        """Store value[i] as view views[i] of the item."""
        if self.root is None:
            return
        for v, arr in zip(views, value):
            path = self._path(key, v)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, arr)
                os.replace(tmp, path)  # atomic: no half-written entry
            except OSError as e:
                log.warning("could not write feature cache in %s (%s)", self.root, e)
                self.root = None
                return
