"""Stratified, seeded splits and subsamples; the manifest that records them in the run folder."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ...errors import DataError
from ..fs import atomic_write_text


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held_out): `fraction` of every class held out, at least one image of any
    class that has two or more, so every class is seen by validation."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * len(idx)))
        if fraction > 0 and len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        held.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))


def subsample_per_class(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of at most n items per class, chosen with `seed`."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:n] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def fingerprint(*parts: Any) -> str:
    """A short content hash of arrays, tensors, bytes and strings (the data a split holds), so a
    resumed run knows its data is the data it started on, not only files of the same names."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        if hasattr(p, "numpy"):  # a tensor
            p = p.detach().contiguous().numpy()
        if isinstance(p, np.ndarray):
            h.update(f"{p.dtype}{p.shape}".encode())
            h.update(memoryview(np.ascontiguousarray(p)).cast("B"))
        elif isinstance(p, (bytes, bytearray)):
            h.update(p)
        elif isinstance(p, str):
            h.update(p.encode("utf-8", "surrogatepass") + b"\0")
        elif isinstance(p, Iterable):
            h.update(fingerprint(*p).encode())
        else:
            h.update(repr(p).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def write_manifest(path: Path, classes: list[str], splits: dict[str, list[str]], seed: int, *,
                   resume: bool = False, **extra) -> None:
    """split.json: the classes, seed and the files (or lines) of every split, written atomically.
    `resume`: the run folder is being continued, and its split.json must describe the same
    data: any difference is a DataError naming it, and nothing is written."""
    doc = {"classes": classes, "seed": seed, **extra, **{k: v for k, v in splits.items()}}
    text = json.dumps(doc, indent=1)
    if resume and path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable ({e}); cannot check that --resume continues on the same data") from e
        new = json.loads(text)  # tuples -> lists, as read back
        # a key the old file lacks (a run of an older tuneforge) cannot be compared
        # the fingerprint last: a file gone or new is named, not only "other contents"
        differ = sorted((k for k in new if k in old and old[k] != new[k]), key=lambda k: k == "fingerprint")
        if differ:
            k = differ[0]
            detail = ""
            if isinstance(old[k], list) and isinstance(new[k], list):
                was, now = {json.dumps(x) for x in old[k]}, {json.dumps(x) for x in new[k]}  # sets: 50k files
                gone = [x for x in old[k] if json.dumps(x) not in now]
                added = [x for x in new[k] if json.dumps(x) not in was]
                detail = f": {len(old[k])} entries then, {len(new[k])} now" + (
                    f", e.g. {gone[0]!r} is gone" if gone else f", e.g. {added[0]!r} is new" if added else ", in another order")
            elif k == "fingerprint":
                detail = ": the same file names hold other contents"
            raise DataError(f"--resume: the data of {path.parent} changed since the run started ({k!r} of split.json "
                            f"differs{detail}); a resumed run must train on the data it started on. Restore the data "
                            f"or start a new run")
        return  # the same data: split.json stays as written
    atomic_write_text(path, text)
