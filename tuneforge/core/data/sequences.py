"""Numeric sequences from a table, for sequence classification and regression.

Two layouts (CSV/TSV/JSONL, read and checked like text files):
- one row per sequence: `sequence_column` holds the values, as a JSON list (`[0.1, 2, 3]`, or
  `[[x, y], ...]` for several features per step) or separated by spaces, commas or semicolons;
- one row per time step: `id_column` names the sequence, `time_column` orders its steps and
  `feature_columns` (default: every other column but the label) are the values of a step;
  the label must be the same on every row of a sequence.
Values are standardised with the training set's mean and std per feature (kept in the bundle)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import torch

from ...errors import DataError
from .text import _sorted_labels, read_rows


@dataclass
class SequenceSet:
    seqs: list[torch.Tensor]          # (T_i, F) float32 each
    labels: torch.Tensor              # class indices (long) or targets (float)
    classes: list[str] | None         # None for regression
    ids: list[str] = field(default_factory=list)
    path: str = ""
    skipped: list[dict] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seqs)

    def subset(self, idx) -> "SequenceSet":
        idx = [int(i) for i in idx]
        return SequenceSet([self.seqs[i] for i in idx], self.labels[idx], self.classes,
                           [self.ids[i] for i in idx], self.path, list(self.skipped))

    @property
    def texts(self) -> list[str]:  # what the report shows for a misclassified example
        return self.ids


_SEP = re.compile(r"[\s,;]+")


def parse_values(cell: str) -> list[list[float]]:
    cell = cell.strip()
    if cell.startswith("["):
        v = json.loads(cell)
        return [[float(x) for x in (step if isinstance(step, list) else [step])] for step in v]
    return [[float(x)] for x in _SEP.split(cell) if x]


def _float(value: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{where}: {value!r} is not a number") from None


def read_sequences(path, label_column: str, regression: bool = False, sequence_column: str | None = None,
                   id_column: str | None = None, time_column: str | None = None, feature_columns: list[str] | None = None,
                   columns: list[str] | None = None, encoding: str = "utf-8", skip_bad_rows: bool = False,
                   classes: list[str] | None = None, max_length: int | None = None) -> SequenceSet:
    if not sequence_column and not id_column:
        raise DataError("numeric sequences need --sequence-column (one row per sequence) or --id-column (one row per step)")
    need = (label_column, sequence_column) if sequence_column else (label_column, id_column) + ((time_column,) if time_column else ())
    rows, nos, skipped = read_rows(path, columns, encoding, skip_bad_rows, need=need)
    seqs, raw_labels, ids = [], [], []

    def bad(no: int, reason: str) -> None:
        if not skip_bad_rows:
            raise DataError(f"{path} line {no}: {reason} (fix the file, or give --skip-bad-rows)")
        skipped.append({"path": str(path), "line": no, "reason": reason})

    if sequence_column:
        for row, no in zip(rows, nos):
            label = row[label_column].strip()
            if not label:
                bad(no, f"empty label in column {label_column!r}")
                continue
            try:
                steps = parse_values(row[sequence_column])
            except (ValueError, TypeError, json.JSONDecodeError, RecursionError):  # RecursionError: "[[[[..."
                bad(no, f"column {sequence_column!r} is not a list of numbers")
                continue
            if not steps or len({len(s) for s in steps}) != 1:
                bad(no, f"column {sequence_column!r}: empty, or steps of different widths")
                continue
            seqs.append(torch.tensor(steps, dtype=torch.float32))
            raw_labels.append(label)
            ids.append(f"{path}:{no}")
    else:
        feats = feature_columns or [c for c in rows[0] if c not in (id_column, time_column, label_column)] if rows else []
        missing = [c for c in feats if rows and c not in rows[0]]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(rows[0])})")
        groups: dict[str, list] = {}
        for row, no in zip(rows, nos):
            where = f"{path} line {no}"
            lacking = [c for c in feats if c not in row]  # JSONL records need not share the first one's fields
            if lacking:
                bad(no, f"no field {lacking[0]!r}")
                continue
            t = _float(row[time_column], where) if time_column else len(groups.get(row[id_column], []))
            groups.setdefault(row[id_column], []).append((t, [_float(row[c], where) for c in feats], row[label_column].strip(), no))
        for sid, steps in groups.items():
            labels = {s[2] for s in steps}
            if len(labels) != 1 or "" in labels:
                bad(steps[0][3], f"sequence {sid!r} has {'an empty label' if '' in labels else 'several labels: ' + ', '.join(sorted(labels))}")
                continue
            steps.sort(key=lambda s: s[0])
            seqs.append(torch.tensor([s[1] for s in steps], dtype=torch.float32))
            raw_labels.append(labels.pop())
            ids.append(str(sid))
    if max_length:
        seqs = [s[:max_length] for s in seqs]
    unknown: dict[str, int] = {}
    if regression:
        labels = torch.tensor([_float(l, f"{path}: target") for l in raw_labels], dtype=torch.float32)
        classes = None
    else:
        if classes is None:
            classes = _sorted_labels(set(raw_labels))
        index = {c: i for i, c in enumerate(classes)}
        keep = [i for i, l in enumerate(raw_labels) if l in index]
        for l in raw_labels:
            if l not in index:
                unknown[l] = unknown.get(l, 0) + 1
        seqs, ids = [seqs[i] for i in keep], [ids[i] for i in keep]
        labels = torch.tensor([index[raw_labels[i]] for i in keep], dtype=torch.long)
    if not seqs:
        raise DataError(f"{path}: no usable sequences")
    return SequenceSet(seqs, labels, classes, ids, str(path), skipped, unknown)


def standardize(sets: list[SequenceSet], mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
    """Scale every step's features with the first set's (train's) mean and std per feature."""
    if mean is None:
        allsteps = torch.cat(sets[0].seqs)
        mean, std = allsteps.mean(0), allsteps.std(0).clamp_min(1e-6)
    for s in sets:
        s.seqs = [(x - mean) / std for x in s.seqs]
    return mean, std
