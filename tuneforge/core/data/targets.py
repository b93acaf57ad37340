"""Numeric targets (regression heads) from data read as classes: the readers of text tables keep
a label column's distinct strings as `classes` and index them; a regression reads the same rows
and turns every label into its number, refusing a label that is not one by the column's name."""
from __future__ import annotations

import dataclasses
import math

import torch

from ...errors import DataError


def numeric_targets(split, column: str, where: str = ""):
    """`split` (a TextSet-like dataclass with `labels` indexing `classes`) with float targets and
    no classes."""
    values = []
    for c in split.classes:
        try:
            v = float(c)
        except ValueError:
            raise DataError(f"{where or split.path}: column {column!r} holds {c!r}, not a number "
                            f"(--task regression needs a numeric --label-column)") from None
        if not math.isfinite(v):
            raise DataError(f"{where or split.path}: column {column!r} holds {c!r}, not a finite number")
        values.append(v)
    table = torch.tensor(values, dtype=torch.float32)
    return dataclasses.replace(split, labels=table[split.labels], classes=None)


def standardize_targets(splits: dict) -> tuple[float, float]:
    """Scale every split's targets with train's mean and std (in place); returns them, for the
    bundle (predictions are scaled back at inference)."""
    ym, ys = float(splits["train"].labels.mean()), float(splits["train"].labels.std().clamp_min(1e-6))
    for s in splits.values():
        s.labels = (s.labels - ym) / ys
    return ym, ys
