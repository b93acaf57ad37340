"""Multi-label tables (`fit --multi-label`; of texts, or of image paths: `read_multilabel_images`):
each row's set of labels as a 0/1 row of a (N, C) float tensor, in one of two layouts users already have:

- one label column holding several labels: "billing|refund" in CSV/TSV/JSONL, or a JSON list
  (`["billing", "refund"]`) in JSONL or a JSON file holding an array of records (NLU++'s folds);
- one 0/1 column per label (`--label-columns billing,refund,...`), the layout of Jigsaw toxic
  comments and most spreadsheet exports.

An empty label set is a row that carries none of the labels (NLU++ has such utterances): it is
kept, and counted in the log, since "none of these" is an answer a multi-label model must learn.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import DataError
from .tables import table_folder
from .text import TextSet, _sorted_labels, at, read_rows

log = logging.getLogger("tuneforge")

SEPARATOR = "|"


def json_records(path: Path, encoding: str) -> list[tuple[int, Any]] | None:
    """A JSON file holding an array of records, as (record number from 1, record); None when the
    file is not one (JSONL and tables are read by `read_rows`)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return None
    with open(path, encoding="utf-8-sig" if encoding == "utf-8" else encoding) as f:
        head = f.read(1 << 12).lstrip()
        if not head.startswith("["):
            return None
        f.seek(0)
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {e.lineno}: not valid JSON ({e.msg})") from None
    return list(enumerate(doc, 1))


def _raw_rows(path: Path, need: tuple[str, ...], columns: list[str] | None, encoding: str,
              skip_bad_rows: bool) -> tuple[list[dict], list[int], list[dict], str]:
    """Rows whose label column keeps its JSON list (read_rows turns values into strings), their
    line (or record) numbers, skipped rows and the word for a row's place ("line", "record")."""
    records = json_records(path, encoding)
    if records is None and path.suffix.lower() in (".jsonl", ".ndjson", ".json") and path.is_file():
        with open(path, encoding=encoding, errors="replace") as f:
            records = [(no, line) for no, line in enumerate(f, 1) if line.strip()]
        parsed = []
        for no, line in records:
            try:
                parsed.append((no, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {no}: not valid JSON ({e.msg})") from None
        records, unit = parsed, "line"
    else:
        unit = "record"
    if records is None:
        rows, nos, skipped = read_rows(path, columns, encoding, skip_bad_rows, need=need, text=need[:1])
        return rows, nos, skipped, "line"
    rows, nos = [], []
    absent = 0
    for no, obj in records:
        if not isinstance(obj, dict):
            raise DataError(f"{path} {unit} {no}: expected a JSON object, got {type(obj).__name__}")
        missing = [c for c in need if c not in obj]
        if missing and rows and missing == [need[1]] and len(need) == 2:
            # a record without its label list carries none (NLU++ leaves "intents" out then); the
            # first record decides that the column exists at all, so a wrong --label-column still fails
            obj, absent = {**obj, need[1]: []}, absent + 1
        elif missing:
            raise DataError(f"{path} {unit} {no}: no field {missing[0]!r} (fields: {', '.join(map(str, obj))}); "
                            f"name it with --text-column / --label-column")
        rows.append(obj)
        nos.append(no)
    if absent:
        log.info("%s: %d records have no %r field: read as carrying no label", path, absent, need[1])
    return rows, nos, [], unit


def _label_set(value: Any, where: str, column: str) -> list[str]:
    """One row's labels: a JSON list, or a string of labels separated by '|'."""
    if value is None:
        return []
    if isinstance(value, list):
        labels = [str(v).strip() for v in value]
    elif isinstance(value, str):
        labels = [] if not value.strip() else [v.strip() for v in value.split(SEPARATOR)]
    else:
        raise DataError(f"{where}: column {column!r} holds {type(value).__name__} {value!r}; --multi-label reads a "
                        f"list of labels or labels separated by '{SEPARATOR}'")
    if any(not v for v in labels):
        raise DataError(f"{where}: an empty label in {value!r} (column {column!r}; labels are separated by "
                        f"'{SEPARATOR}', e.g. 'billing{SEPARATOR}refund')")
    return list(dict.fromkeys(labels))


def _binary(value: Any, where: str, column: str) -> float:
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true"):
        return 1.0
    if text in ("0", "0.0", "false", ""):
        return 0.0
    raise DataError(f"{where}: column {column!r} holds {value!r}; --label-columns columns hold 0 or 1")


def read_multilabel_file(path: str | Path, text_column: str, label_column: str, label_columns: list[str] | None = None,
                         columns: list[str] | None = None, encoding: str = "utf-8", skip_bad_rows: bool = False,
                         classes: list[str] | None = None) -> TextSet:
    """A multi-label text table as a TextSet whose `labels` are (N, C) 0/1 floats. With
    `classes` (val/test: train's labels), labels that train lacks are counted in `unknown` and
    dropped from their rows (the rows stay: their other labels still count)."""
    path = Path(path)
    need = (text_column, *(label_columns or [label_column]))
    try:
        rows, nos, skipped, unit = _raw_rows(path, need, columns, encoding, skip_bad_rows)
    except DataError as e:
        if label_columns and any(f"no column {c!r}" in str(e) or f"no field {c!r}" in str(e) for c in label_columns):
            raise DataError(f"--label-columns: {e}") from None
        raise
    texts, sets = [], []
    for row, no in zip(rows, nos):
        where = f"{path} {unit} {no}" if unit == "record" else at(path, no)
        text = row[text_column]
        texts.append("" if text is None else str(text))
        if label_columns:
            sets.append([c for c in label_columns if _binary(row[c], where, c)])
        else:
            sets.append(_label_set(row[label_column], where, label_column))
    if not texts:
        raise DataError(f"{path}: no labelled rows")
    unknown: dict[str, int] = {}
    if classes is None:
        classes = list(label_columns) if label_columns else _sorted_labels({l for s in sets for l in s})
        if not classes:
            raise DataError(f"{path}: no row carries a label in column {label_column!r} (--multi-label reads "
                            f"labels separated by '{SEPARATOR}' or a JSON list)")
    else:
        known = set(classes)
        for s in sets:
            for l in s:
                if l not in known:
                    unknown[l] = unknown.get(l, 0) + 1
        if unknown:
            log.warning("%s: %d labels the training data lacks, left out of the metrics: %s", path,
                        sum(unknown.values()), ", ".join(f"{k!r} ({v})" for k, v in sorted(unknown.items())))
    index = {c: i for i, c in enumerate(classes)}
    y = torch.zeros(len(sets), len(classes))
    for i, s in enumerate(sets):
        for l in s:
            if l in index:
                y[i, index[l]] = 1.0
    none = int((y.sum(1) == 0).sum())
    if none:
        log.info("%s: %d of %d rows carry none of the labels (kept: 'none of these' is learnt too)", path, none, len(y))
    return TextSet(texts, y, classes, str(path), list(nos), skipped, unknown)


def multilabel_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/val indices (sorted) for multi-label rows: a random `fraction` held out
    (stratifying on label sets would leave most sets of one row unsplittable)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g).tolist()
    k = max(1, int(round(fraction * len(labels))))
    return sorted(perm[k:]), sorted(perm[:k])


@dataclass
class ImageLabels:
    """A multi-label image table: image files (relative paths resolved against the table's
    folder), their (N, C) 0/1 labels, the table's line numbers and the labels train lacks."""
    files: list[Path]
    labels: torch.Tensor
    classes: list[str]
    lines: list[int]
    unknown: dict[str, int]

    def subset(self, idx) -> "ImageLabels":
        idx = list(idx)
        return ImageLabels([self.files[i] for i in idx], self.labels[idx], self.classes, [self.lines[i] for i in idx],
                           self.unknown)


def read_multilabel_images(path: str | Path, image_column: str, label_column: str, label_columns: list[str] | None = None,
                           encoding: str = "utf-8", skip_bad_rows: bool = False, classes: list[str] | None = None,
                           flag: str | None = "--image-column") -> ImageLabels:
    """A table of image paths and label sets, read in the layouts of `read_multilabel_file`
    (the image path standing where a text would); a missing image file is an error naming its
    line (skipped and counted with `skip_bad_rows`); `flag` is named when the image column is missing."""
    path = Path(path)
    try:
        table = read_multilabel_file(path, image_column, label_column, label_columns, None, encoding, skip_bad_rows, classes)
    except DataError as e:
        missing = lambda c: f"no column {c!r}" in str(e) or f"no field {c!r}" in str(e)
        if flag and missing(image_column):
            raise DataError(f"{flag}: {e}") from None
        if not label_columns and missing(label_column):
            raise DataError(f"--label-column: {e}") from None
        raise
    base, keep, files = table_folder(path), [], []
    for i, (value, no) in enumerate(zip(table.texts, table.lines)):
        f = Path(value.strip())
        f = f if f.is_absolute() else base / f
        if not value.strip() or not f.is_file():
            why = f"{at(path, no)}: no image file {f} (column {image_column!r}; paths are relative to the table's folder)"
            if not skip_bad_rows:
                raise DataError(f"{why}; fix the file, or give --skip-bad-rows")
            log.warning("%s; skipped", why)
            continue
        keep.append(i)
        files.append(f)
    if not files:
        raise DataError(f"{path}: none of the images in column {image_column!r} exists")
    return ImageLabels(files, table.labels[keep], table.classes, [table.lines[i] for i in keep], table.unknown)
