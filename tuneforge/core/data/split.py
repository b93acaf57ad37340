"""Stratified, seeded splits and subsamples; the manifest that records them in the run folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


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


def write_manifest(path: Path, classes: list[str], splits: dict[str, list[str]], seed: int, **extra) -> None:
    doc = {"classes": classes, "seed": seed, **extra, **{k: v for k, v in splits.items()}}
    path.write_text(json.dumps(doc, indent=1))
