"""Numeric sequences at inference (`sequence-classification`, `sequence-regression`): a
sequence is a JSON list of values or of steps (`[[x, y], ...]`), or values separated by spaces,
commas or semicolons, or the rows of a table in the layout the model was trained on; its
features are standardised with the training mean and std kept in the bundle
(preprocessing.scale), truncated to the training max length, and padded per batch. A
regressor answers a value in the target's own units (scaled back), not classes."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...config import read_yaml
from ...core.data.sequences import parse_values, read_sequences
from ...core.data.text import TEXT_SUFFIXES, is_table, read_rows
from ...errors import ConfigError, DataError
from ..registry import Labelled, Task, read_table, register_task

COLUMNS = ("sequence_column", "id_column", "time_column", "feature_columns", "label_column", "columns")


class SequenceGraph(nn.Module):
    """Padded (standardised) steps and their mask -> the model's outputs: logits, or the one
    standardised value of a regressor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model({"values": values, "attention_mask": attention_mask})


def _columns(config: dict) -> dict[str, Any]:
    """The table layout the model was trained on: the bundle's `data` (bundles from this
    version), else the run folder's config.yaml (bundles written before the columns were kept)."""
    d = config.get("data") or {}
    if d.get("sequence_column") or d.get("id_column"):
        return d
    settings = Path(config["_dir"]).parent / "config.yaml"
    if settings.is_file():
        cfg = read_yaml(settings)
        return {**d, **{k: cfg.get(k) for k in COLUMNS if cfg.get(k) is not None}}
    return d


class SequenceTask(Task):
    inputs = ("values",)
    input_names = ("values", "attention_mask")

    def __init__(self, config: dict):
        super().__init__(config)
        scale = self.pre.get("scale") or {}
        self.mean = np.asarray(scale.get("mean", [0.0]), np.float32)
        self.std = np.asarray(scale.get("std", [1.0]), np.float32)
        self.max_length = self.pre.get("max_length")
        self.layout = _columns(config)

    # --- one sequence ---

    def prepare(self, image=None, text: str | None = None, values: Any = None) -> dict[str, np.ndarray]:
        raw = values if values is not None else text
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            raise DataError(f'this model reads numeric sequences: send JSON {{"values": [...]}} (a list of numbers, '
                            f"or of steps of {len(self.mean)} numbers)")
        try:
            steps = parse_values(raw) if isinstance(raw, str) else \
                [[float(x) for x in (s if isinstance(s, (list, tuple)) else [s])] for s in raw]
        except (ValueError, TypeError, json.JSONDecodeError):
            raise DataError(f"not a list of numbers: {str(raw)[:80]!r}") from None
        if not steps or any(len(s) != len(self.mean) for s in steps):
            raise DataError(f"a sequence of this model has steps of {len(self.mean)} number(s); got "
                            f"{'no steps' if not steps else f'steps of {sorted({len(s) for s in steps})}'}")
        x = np.asarray(steps, np.float32)[: self.max_length or None]
        return {"values": (x - self.mean) / self.std}  # the training standardisation (core.data.sequences)

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        # zeros after the end, as training's SequenceBatchLoader pads (the mask hides them)
        lens = [len(it["values"]) for it in items]
        x = np.zeros((len(items), max(lens), len(self.mean)), np.float32)
        mask = np.zeros((len(items), max(lens)), np.int64)
        for r, it in enumerate(items):
            x[r, :lens[r]], mask[r, :lens[r]] = it["values"], 1
        return {"values": x, "attention_mask": mask}

    def length(self, item: dict[str, np.ndarray]) -> int:
        return len(item["values"])

    def graph(self, model: nn.Module) -> nn.Module:
        return SequenceGraph(model).eval()

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"values": {0: "batch", 1: "steps"}, "attention_mask": {0: "batch", 1: "steps"},
                self.output_name: {0: "batch"}}

    def example_batch(self, n: int = 2) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        return self.collate([self.prepare(values=rng.normal(size=(5 + i, len(self.mean))).tolist()) for i in range(n)])

    # --- tables in the training layout ---

    def _layout(self) -> dict:
        d = self.layout
        if not (d.get("sequence_column") or d.get("id_column")):
            raise DataError(f"{self.config['_dir']}: the bundle does not say which columns hold the sequence (it was "
                            "written before they were kept, outside its run folder); pass sequences as JSON lists")
        return d

    def _sequences(self, path: Path, fields: bool = True) -> list[dict]:
        """Rows of an unlabelled table: one row per sequence (with the table's fields as ids, or
        only "row": FILE:LINE), or one row per step grouped by id ("id")."""
        d = self._layout()
        if d.get("sequence_column"):
            col = d["sequence_column"]
            cols = [c.strip() for c in d["columns"].split(",")] if d.get("columns") else None
            rows, nos, _ = read_rows(path, cols, d.get("encoding", "utf-8"), skip_bad_rows=True, need=(col,))
            return [{**r, "values": r[col]} if fields else {"row": f"{path}:{n}", "values": r[col]}
                    for r, n in zip(rows, nos)]
        rows = read_table(path, d.get("encoding", "utf-8"), d.get("columns"))
        sid, time = d["id_column"], d.get("time_column")
        feats = [c.strip() for c in d["feature_columns"].split(",")] if d.get("feature_columns") else \
            [c for c in rows[0] if c not in (sid, time, d.get("label_column"))]
        missing = [c for c in [sid, *([time] if time else []), *feats] if c not in rows[0]]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(rows[0])})")
        groups: dict[str, list] = {}
        try:
            for n, r in enumerate(rows):
                groups.setdefault(r[sid], []).append((float(r[time]) if time else n, [float(r[c]) for c in feats]))
        except ValueError as e:
            raise DataError(f"{path}: {e}") from None
        return [{"id": k, "values": [v for _, v in sorted(steps, key=lambda s: s[0])]} for k, steps in groups.items()]

    def rows(self, items: list[str]) -> list[dict]:
        """Tables in the training layout, '-' (one sequence per standard input line), or
        sequences given as they are (a JSON list, or numbers separated by spaces/commas)."""
        out: list[dict] = []
        for it in map(str, items):
            p = Path(it)
            if it == "-":
                out += [{"values": l.strip()} for l in sys.stdin if l.strip()]
            elif is_table(p):
                out += self._sequences(p, fields=False)
            else:
                out.append({"values": it})
        return out

    def table_rows(self, path: Path, column: str | None = None) -> list[dict]:
        if column:
            self.layout = {**self.layout, "sequence_column": column, "id_column": None}
        return self._sequences(path)

    def folder_rows(self, path: Path) -> list[dict]:
        raise DataError(f"{path}: a sequence model reads a table ({', '.join(sorted(set(TEXT_SUFFIXES)))})")

    def _labelled_set(self, data: str | Path):
        d = self._layout()
        if not d.get("label_column"):
            raise ConfigError(f"{self.config['_dir']}: the bundle does not name its label column")
        feats = [c.strip() for c in d["feature_columns"].split(",")] if d.get("feature_columns") else None
        cols = [c.strip() for c in d["columns"].split(",")] if d.get("columns") else None
        return read_sequences(data, d["label_column"], self.score == "regression", d.get("sequence_column"),
                              d.get("id_column"), d.get("time_column"), feats, cols, d.get("encoding", "utf-8"),
                              classes=None if self.score == "regression" else self.classes, max_length=self.max_length)

    def labelled(self, data: str | Path, **options) -> Labelled:
        """A labelled table in the training layout: targets are class indices, or values."""
        s = self._labelled_set(data)
        return Labelled([{"values": x.tolist(), "id": i} for x, i in zip(s.seqs, s.ids)], s.labels.numpy(),
                        {"test": len(s), "file": str(data), "skipped": s.skipped, "unknown_labels": s.unknown},
                        {"texts": s.ids, "paths": s.ids}, Path(data).name)


@register_task("sequence-classification")
class SequenceClassification(SequenceTask):
    """Classes of numeric sequences, ranked by probability."""


@register_task("sequence-regression")
class SequenceRegression(SequenceTask):
    """One value per sequence: the model predicts the standardised target, scaled back here
    with the training target's mean and std (preprocessing.scale.target)."""

    score = "regression"

    def __init__(self, config: dict):
        super().__init__(config)
        self.target = tuple((self.pre.get("scale") or {}).get("target", (0.0, 1.0)))

    def values(self, outputs: np.ndarray) -> np.ndarray:
        """Graph outputs (N, 1) -> values in the target's units."""
        mean, std = self.target
        return outputs.reshape(len(outputs), -1)[:, 0].astype(np.float64) * std + mean

    def results(self, outputs: np.ndarray, items: list[dict[str, np.ndarray]], k: int = 5) -> list[dict]:
        return [{"value": round(float(v), 6)} for v in self.values(outputs)]
