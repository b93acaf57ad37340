"""Training data given in memory (a pandas DataFrame, or a list of (image path, label) pairs),
written as the files the readers already take, so that an in-memory fit is a fit like any other
(the same detection of the kind of task, split.json, config.yaml, --resume):

    text:        DataFrame with a text and a label column      -> train.csv (val.csv, test.csv)
    images:      DataFrame with a path and a label column, or
                 a list of (path, label) pairs                  -> train/LABEL/N-NAME links (val/, test/)
    image+text:  DataFrame with path, text and label columns    -> train.csv, its paths made absolute
    arrays:      (images, labels) NumPy arrays, or a dict of
                 train_images, train_labels, val_*, test_*      -> arrays.npz (core/data/arrays.py)

pandas itself is never imported: a DataFrame is recognised by its `columns` and read a column at a
time (`frame[name].tolist()`), so the API works without pandas for every other kind of input.
"""
from __future__ import annotations

import csv
import math
import os
import shutil
from pathlib import Path
from typing import Any

from ...errors import ConfigError, DataError
from .arrays import is_arrays, write_npz

SPLITS = ("data", "val", "test")
# column names taken as the image path when `image_column` is not given
PATH_COLUMNS = ("path", "image", "file", "filepath", "filename", "image_path")


def is_frame(value: Any) -> bool:
    return hasattr(value, "columns") and hasattr(value, "__getitem__") and not isinstance(value, (str, dict))


def is_pairs(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(p, (list, tuple)) and len(p) == 2 for p in value)


def in_memory(value: Any) -> bool:
    """A DataFrame, a list of (path, label) pairs, or image arrays: data `materialise` writes to files."""
    return is_frame(value) or is_pairs(value) or is_arrays(value)


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):  # pandas' missing value
        return ""
    return str(v)


def _columns(frame: Any) -> list[str]:
    return [str(c) for c in frame.columns]


def _kind(frame: Any, settings: dict) -> tuple[str, str | None, str | None]:
    """("images" | "text" | "image+text", image column, text column) of a DataFrame."""
    cols = _columns(frame)
    label = settings.get("label_column") or "label"
    if label not in cols:
        raise DataError(f"data: the DataFrame has no label column {label!r} (its columns: {', '.join(cols)}); "
                        f"name it with label_column=")
    image = settings.get("image_column") or next((c for c in PATH_COLUMNS if c in cols), None)
    text = settings.get("text_column") or ("text" if "text" in cols else None)
    for name, col in (("image_column", image), ("text_column", text)):
        if col is not None and col not in cols:
            raise DataError(f"data: the DataFrame has no column {col!r} ({name}; its columns: {', '.join(cols)})")
    if image and text:
        return "image+text", image, text
    if image:
        return "images", image, None
    others = [c for c in cols if c != label]
    if text is None and len(others) == 1:
        text = others[0]
    if text is None:
        raise ConfigError(f"data: cannot tell which of the DataFrame's columns {others} holds the inputs; "
                          f"give text_column= (texts) or image_column= (image paths)")
    return "text", None, text


def _rows(frame: Any, columns: list[str]) -> list[list[str]]:
    return [list(map(_cell, row)) for row in zip(*(frame[c].tolist() for c in columns))]


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _link_images(folder: Path, pairs: list[tuple[Any, Any]], what: str) -> None:
    """folder/LABEL/N-NAME -> the image (a symbolic link; a copy where links are not allowed). The
    number keeps two images of the same name apart and the order of the list."""
    for i, (path, label) in enumerate(pairs):
        src, name = Path(os.path.abspath(os.fspath(path))), _cell(label)
        if not src.is_file():
            raise DataError(f"{what}: item {i}: no such image file: {path}")
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise DataError(f"{what}: item {i}: label {label!r} cannot name a class folder")
        dst = folder / name / f"{i:06d}-{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(src, dst)
        except OSError:  # e.g. Windows without the privilege to link
            shutil.copyfile(src, dst)


def materialise(settings: dict, folder: Path) -> dict:
    """The settings with their in-memory `data`, `val` and `test` written under `folder` and
    replaced by the paths the readers take (and, for a DataFrame, the columns named: what the
    kind of task is told from). Every in-memory split must be of the same kind as `data`."""
    out = dict(settings)
    data = settings.get("data")
    if is_arrays(data):  # (images, labels) or a dict of train_images...: one .npz (core/data/arrays.py)
        out.update(data=str(write_npz(folder / "arrays.npz", data, settings.get("val"), settings.get("test"))),
                   val=None, test=None)
        return out
    if not in_memory(data):
        raise ConfigError("val/test given as a DataFrame or a list of pairs need data= of the same form")
    kind, image, text = ("images", None, None) if is_pairs(data) else _kind(data, settings)
    label = settings.get("label_column") or "label"
    for key, split in zip(SPLITS, ("train", "val", "test")):
        value = settings.get(key)
        if value is None or not in_memory(value):
            continue
        what = key if key != "data" else "data"
        if kind == "images":
            column = _kind(value, settings)[1] if is_frame(value) else None
            if is_frame(value) and column is None:
                raise DataError(f"{what}: the DataFrame has no image path column (as data has)")
            pairs = list(value) if is_pairs(value) else list(zip(value[column].tolist(), value[label].tolist()))
            _link_images(folder / "images" / split, pairs, what)
            out[key] = None if key != "data" else str(folder / "images")  # train/ val/ test/ under one root
            continue
        if not is_frame(value):
            raise ConfigError(f"{what}: a list of (path, label) pairs is image data; {kind} data is a DataFrame")
        missing = [c for c in (image, text, label) if c and c not in _columns(value)]
        if missing:
            raise DataError(f"{what}: the DataFrame has no column {missing[0]!r} (as data has)")
        columns = [c for c in (image, text, label) if c]
        rows = _rows(value, columns)
        if kind == "image+text" and not settings.get("image_root"):
            # the table is written into the run folder: paths relative to the working folder stay valid
            rows = [[os.path.abspath(r[0]) if r[0] else "", *r[1:]] for r in rows]
        _write_csv(folder / f"{split}.csv", columns, rows)
        out[key] = str(folder / f"{split}.csv")
    if kind != "images":
        out["text_column"] = text
        if image:
            out["image_column"] = image
    return out


def relocate(value: Any, old: Path, new: Path) -> Any:
    """A setting naming a file under `old` (where materialise wrote it), renamed under `new`."""
    if isinstance(value, str) and (value == str(old) or value.startswith(str(old) + os.sep)):
        return str(new) + value[len(str(old)):]
    return value
