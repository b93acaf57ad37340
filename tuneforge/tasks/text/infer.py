"""Text classification at inference: the bundle's tokenizer or vocabulary, truncated to the
training max length, padded per batch; texts from arguments, files, standard input or a
labelled table with the training columns."""
from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...core.data.multilabel import json_records, read_multilabel_file
from ...core.data.tables import is_arrow_table
from ...core.data.targets import numeric_targets
from ...core.data.text import read_text_file
from ...core.data.text_loader import pad_batch
from ...core.tokenizer import TextEncoding
from ...errors import DataError
from ..registry import Labelled, MultiLabelTask, Task, register_task


class TextGraph(nn.Module):
    """Padded token ids and their mask -> logits: the dict batch a text Classifier takes, as
    positional tensors so the server and the Predictor call it like any other graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model({"input_ids": input_ids, "attention_mask": attention_mask})


def pad_ids(items: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, np.ndarray]:
    """Token ids of prepared examples padded to the longest, with their mask: the training
    collate (core.data.text_loader.pad_batch), so inference pads exactly as training did."""
    batch = pad_batch([it["input_ids"] for it in items], torch.arange(len(items)), pad_id)
    return {k: v.numpy() for k, v in batch.items()}


_FILE_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl", ".json", ".text", ".lst")


def looks_like_path(item: str) -> bool:
    """A single word with a path separator or a file suffix: most likely a file name, not a text
    (a sentence has spaces; a mistyped `reviews/tset.txt` must not be classified as text)."""
    if not item or any(c.isspace() for c in item):
        return False
    return "/" in item or os.sep in item or item.lower().endswith(_FILE_SUFFIXES)


def read_lines(items: list[str], encoding: str = "utf-8") -> list[str]:
    """`predict`'s arguments as texts: a string is a text, an existing file gives one text per
    line, '-' reads lines from standard input (texts taken as they are, however they look).
    A word that looks like a file name but names no file is refused, naming it."""
    texts: list[str] = []
    for it in items:
        if it == "-":
            texts += [l.rstrip("\r\n") for l in sys.stdin if l.strip()]
        elif os.path.isfile(it):
            with open(it, encoding=encoding) as f:
                texts += [l.rstrip("\r\n") for l in f if l.strip()]
        elif looks_like_path(it):
            raise DataError(f"{it}: no such file (it looks like a file name, so it is not classified as a text). "
                            f"To classify it as a text: tuneforge predict RUN --text {it!r} (or on standard input: "
                            f"echo {it!r} | tuneforge predict RUN -)")
        else:
            texts.append(it)
    return texts


@register_task("text-classification")
class TextClassification(Task):
    """Texts through the tokenizer or vocabulary saved in the bundle (`tokenizer` files are
    checksummed with the weights), truncated to the training max length, padded per batch."""

    inputs = ("text",)
    input_names = ("input_ids", "attention_mask")

    def __init__(self, config: dict):
        super().__init__(config)
        self.encoding = TextEncoding.load(Path(config["_dir"]), self.pre)

    def prepare(self, image: bytes | str | Path | np.ndarray | None = None, text: str | None = None,
                values=None) -> dict[str, np.ndarray]:
        if text is None or not str(text).strip():
            raise DataError('this model classifies text: send JSON {"text": "..."}')
        ids = self.encoding([str(text)])[0] or [self.encoding.pad_id]
        return {"input_ids": np.asarray(ids, dtype=np.int64)}

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        return pad_ids(items, self.encoding.pad_id)

    def length(self, item: dict[str, np.ndarray]) -> int:
        return len(item["input_ids"])

    def graph(self, model: nn.Module) -> nn.Module:
        return TextGraph(model).eval()

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}}

    def example_batch(self, n: int = 2) -> dict[str, np.ndarray]:
        return self.collate([self.prepare(text="an example") for _ in range(n)])

    def rows(self, items: list[str]) -> list[dict]:
        """Strings, files (one text per line), '-' (standard input lines), or Parquet files and
        datasets folders (their text column, as `batch` reads it: these have no lines)."""
        out: list[dict] = []
        for it in map(str, items):
            if is_arrow_table(it) or self._header_table(it):
                out += [{"text": r["text"]} for r in self.table_rows(Path(it))]
            else:
                out += [{"text": t} for t in read_lines([it], self.data.get("encoding", "utf-8"))]
        return out

    def _header_table(self, item: str) -> bool:
        """A CSV/TSV/JSONL file whose header names the column the model was trained on (e.g. the
        title column of an image+text table that `--model auto` answered with a text model): its
        rows' texts, as `batch` reads them, not its lines. Headerless training tables (--columns)
        and plain text files keep one text per line."""
        column = self.data.get("text_column")
        if not column or self.data.get("columns") or not item.lower().endswith((".csv", ".tsv", ".jsonl")) \
                or not os.path.isfile(item):
            return False
        with open(item, encoding=self.data.get("encoding", "utf-8"), errors="replace") as f:
            first = f.readline()
        if item.lower().endswith(".jsonl"):
            return f'"{column}"' in first
        return column in next(csv.reader([first], delimiter="\t" if item.lower().endswith(".tsv") else ","), [])

    def labelled(self, data: str | Path, **options) -> Labelled:
        """A labelled file with the columns the model was trained on."""
        d = self.data
        cols = [c.strip() for c in d["columns"].split(",")] if d.get("columns") else None
        split = read_text_file(data, d.get("text_column", "text"), d.get("label_column", "label"), cols,
                               d.get("encoding", "utf-8"), classes=self.classes)
        return Labelled([{"text": t} for t in split.texts], split.labels.numpy(),
                        {"test": len(split), "file": str(data), "skipped": split.skipped, "unknown_labels": split.unknown},
                        {"texts": split.texts, "paths": [f"{data}:{l}" for l in split.lines]}, Path(data).name)


@register_task("text-regression")
class TextRegression(TextClassification):
    """A number per text (--task regression): the model predicts the standardised target, scaled
    back here with the training target's mean and std (preprocessing.scale.target)."""

    score = "regression"

    def __init__(self, config: dict):
        super().__init__(config)
        self.target = tuple((self.pre.get("scale") or {}).get("target", (0.0, 1.0)))

    def prepare(self, image=None, text: str | None = None, values=None) -> dict[str, np.ndarray]:
        if text is None or not str(text).strip():
            raise DataError('this model scores text: send JSON {"text": "..."}')
        return super().prepare(image, text, values)

    def values(self, outputs: np.ndarray) -> np.ndarray:
        """Graph outputs (N, 1) -> values in the target's units."""
        mean, std = self.target
        return outputs.reshape(len(outputs), -1)[:, 0].astype(np.float64) * std + mean

    def results(self, outputs: np.ndarray, items: list[dict[str, np.ndarray]], k: int = 5) -> list[dict]:
        return [{"value": round(float(v), 6)} for v in self.values(outputs)]

    def labelled(self, data: str | Path, **options) -> Labelled:
        """A table with the training columns; its label column holds the numbers."""
        d = self.data
        cols = [c.strip() for c in d["columns"].split(",")] if d.get("columns") else None
        column = d.get("label_column", "label")
        split = numeric_targets(read_text_file(data, d.get("text_column", "text"), column, cols, d.get("encoding", "utf-8")),
                                column)
        return Labelled([{"text": t} for t in split.texts], split.labels.numpy().astype(np.float64),
                        {"test": len(split), "file": str(data), "skipped": split.skipped},
                        {"texts": split.texts, "paths": [f"{data}:{l}" for l in split.lines]}, Path(data).name)
@register_task("text-multilabel")
class TextMultiLabel(MultiLabelTask, TextClassification):
    """`fit --multi-label` on a text table: token ids and mask -> each label's probability
    (registry.MultiLabelTask: the answers, the thresholds and the sigmoid graph)."""

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                "probabilities": {0: "batch"}}

    def table_rows(self, path: Path, column: str | None = None) -> list[dict]:
        """A JSON file holding an array of records (the layout NLU++ ships) is read as a table too."""
        records = json_records(Path(path), self.data.get("encoding", "utf-8"))
        if records is None:
            return super().table_rows(path, column)
        col = column or self.data.get("text_column") or "text"
        rows = [r for _, r in records if isinstance(r, dict)]
        if not rows or col not in rows[0]:
            raise DataError(f"{path}: no field {col!r} in its first record; choose one with --column")
        return [{**{k: v if isinstance(v, str) else json.dumps(v) for k, v in r.items()}, "text": str(r[col])}
                for r in rows]

    def labelled(self, data: str | Path, **options) -> Labelled:
        """A labelled table in the training layout: the '|'-separated or list label column, or
        the 0/1 --label-columns."""
        d = self.data
        cols = [c.strip() for c in d["columns"].split(",")] if d.get("columns") else None
        label_cols = [c.strip() for c in d["label_columns"].split(",")] if d.get("label_columns") else None
        split = read_multilabel_file(data, d.get("text_column") or "text", d.get("label_column", "label"), label_cols,
                                     cols, d.get("encoding", "utf-8"), classes=self.classes)
        return Labelled([{"text": t} for t in split.texts], split.labels.numpy(),
                        {"test": len(split), "file": str(data), "skipped": split.skipped, "unknown_labels": split.unknown},
                        {"texts": split.texts}, Path(data).name)
