"""Numeric targets (regression heads) from data read as classes: the readers of text tables keep
a label column's distinct strings as `classes` and index them; a regression reads the same rows
and turns every label into its number, refusing a label that is not one by the column's name."""
from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import torch

from ...errors import DataError
from .tables import table_folder
from .text import read_rows

log = logging.getLogger("tuneforge")

IMAGE_COLUMNS = ("file", "path", "image")  # the column of image paths in an image-regression table


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


def read_image_table(path: str | Path, label_column: str, encoding: str = "utf-8", skip_bad_rows: bool = False
               ) -> tuple[list[Path], np.ndarray]:
    """Image paths (relative to the table's folder) and their numbers; a missing file or a label
    that is not a number is an error naming its line (or skipped, with --skip-bad-rows)."""
    rows, nos, _ = read_rows(path, None, encoding, skip_bad_rows)
    if not rows:
        raise DataError(f"{path}: the table has no rows")
    column = next((c for c in IMAGE_COLUMNS if c in rows[0]), None)
    if column is None or label_column not in rows[0]:
        raise DataError(f"{path}: needs an image column ({', '.join(IMAGE_COLUMNS)}) and the --label-column "
                        f"{label_column!r} (columns: {', '.join(rows[0])})")
    base, files, values = table_folder(Path(path)), [], []
    for row, no in zip(rows, nos):
        f = Path(row[column])
        f = f if f.is_absolute() else base / f
        try:
            v = float(row[label_column])
            if not f.is_file():
                raise FileNotFoundError(f)
        except (ValueError, FileNotFoundError) as e:
            why = f"no image file {f}" if isinstance(e, FileNotFoundError) else \
                f"column {label_column!r} holds {row[label_column]!r}, not a number"
            if not skip_bad_rows:
                raise DataError(f"{path} line {no}: {why} (fix the file, or give --skip-bad-rows)") from None
            log.warning("%s line %d: %s; skipped", path, no, why)
            continue
        files.append(f)
        values.append(v)
    return files, np.asarray(values, np.float64)
