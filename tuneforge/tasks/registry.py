"""The registry of inference `Task`s: what a bundle's `task` field means at inference time.

A task says which inputs a model takes ("image", "text", or both), turns raw inputs (file
bytes, paths, strings) into named arrays exactly as training did, stacks them into a batch, and
wraps the trained module into the graph that both eager PyTorch and ONNX run. The Predictor,
the ONNX exporter and the server only talk to this interface, so a text or multimodal task
plugs in by calling `register_task` with its own class; nothing else changes.

A kind's `Task`s are registered when its `infer` module is imported: `task_for` imports the one
a bundle needs, named by the kind's fit `Plugin` (tuneforge/tasks/plugins.py).
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.data.images import list_images
from ..core.data.multilabel import SEPARATOR
from ..core.data.tables import table_folder
from ..core.data.text import read_rows
from ..core.decision import labels as decision_labels
from ..errors import BundleError, DataError
from .plugins import PLUGINS, plugin_of_task, task_names

log = logging.getLogger("tuneforge")

TASKS: dict[str, type["Task"]] = {}

ARGUMENTS = "arguments"  # what `Labelled.source` says when rows came from predict's arguments


def register_task(name: str):
    """Class decorator: `@register_task("text-classification")`."""
    def deco(cls: type[Task]) -> type[Task]:
        cls.name = name
        TASKS[name] = cls
        return cls
    return deco


def task_for(config: dict) -> "Task":
    """The Task of a bundle config (its kind's infer module imported on first use); an unknown
    task is a clear error, not a KeyError."""
    name = config.get("task", "image-classification")
    if name not in TASKS:
        if name not in task_names():
            raise BundleError(f"{config.get('_dir', 'bundle')}: task {name!r} is not known to this tuneforge "
                              f"(known: {', '.join(task_names())}); upgrade tuneforge")
        importlib.import_module(plugin_of_task(name).infer)
    return TASKS[name](config)


def all_tasks() -> dict[str, type["Task"]]:
    """Every kind's Tasks, each kind's infer module imported."""
    for plugin in PLUGINS.values():
        if plugin.infer:
            importlib.import_module(plugin.infer)
    return TASKS


@dataclass
class Labelled:
    """What `evaluate` scores: rows for `Predictor.outputs`, their targets (class indices,
    values, or for retrieval the image row each text row belongs to), the report's "data"
    section, what the report shows per example beside its outputs (texts, paths, images), and
    the name of the default output folder (RUN/eval-NAME)."""
    rows: list[dict]
    targets: np.ndarray
    info: dict
    examples: dict = field(default_factory=dict)
    name: str = "data"
    report: dict = field(default_factory=dict)  # extra top-level report fields (e.g. the TTA used)


def outputs_in_order(task: "Task", items: list[dict], logits, width: int, batch_size: int = 256) -> np.ndarray:
    """`logits` (a collated batch -> the graph's output) over prepared `items`, in item order.
    Batches are formed in length order (little padding for text) and put back in item order;
    no items: an empty (0, width) array."""
    order = sorted(range(len(items)), key=lambda i: task.length(items[i]))
    out = [logits(task.collate([items[i] for i in order[start:start + batch_size]]))
           for start in range(0, len(order), batch_size)]
    if not out:
        return np.zeros((0, width), np.float32)
    got = np.concatenate(out)
    result = np.empty_like(got)
    result[np.asarray(order)] = got
    return result


class Task:
    """Base class. `inputs` names the kinds of input the model takes; `input_names` are the
    graph's tensor inputs, in the order the graph's forward takes them; `output_name` is the
    graph's one output. `score` names how `evaluate` scores the outputs against targets
    ("classification", "regression" or "retrieval"; tuneforge/api.py)."""

    name = ""
    inputs: tuple[str, ...] = ()
    input_names: tuple[str, ...] = ()
    output_name = "logits"
    score = "classification"

    def __init__(self, config: dict):
        self.config = config
        self.pre: dict = config.get("preprocessing", {})
        self.data: dict = config.get("data") or {}
        self.classes: list[str] = list(config.get("classes") or [])

    # --- one example in, one batch through the graph ---

    def prepare(self, image: bytes | str | Path | np.ndarray | None = None, text: str | None = None,
                values: Any = None) -> dict[str, np.ndarray]:
        """One raw example -> named arrays without a batch axis. Raises DataError with a message
        the server can show when the input cannot be used."""
        raise NotImplementedError

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Examples from `prepare` -> one batch (default: stack; text tasks pad here)."""
        return {k: np.stack([it[k] for it in items]) for k in self.input_names}

    def length(self, item: dict[str, np.ndarray]) -> int:
        """How long an example is, so `Predictor.outputs` batches similar lengths together
        (less padding); 0 for fixed-size inputs."""
        return 0

    def graph(self, model: nn.Module) -> nn.Module:
        """The module run at inference: named batch arrays (as tensors, positional in
        `input_names` order) -> outputs. It holds the preprocessing that is not decoding."""
        raise NotImplementedError

    def example_batch(self, n: int = 2) -> dict[str, np.ndarray]:
        """A batch with the right shapes and dtypes, for tracing when no real input is given."""
        raise NotImplementedError

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """ONNX axes that vary between calls (the batch axis at least)."""
        return {**{n: {0: "batch"} for n in self.input_names}, self.output_name: {0: "batch"}}

    def results(self, outputs: np.ndarray, items: list[dict[str, np.ndarray]], k: int = 5) -> list[dict]:
        """Graph outputs of prepared examples -> one answer each (default: classes ranked by
        probability, {"label", "top": [{"label", "probability"}...]})."""
        probs = softmax(outputs.astype(np.float64))
        k = max(1, min(k, len(self.classes)))
        idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        # a binary model's threshold chosen for a recall (--target-recall) decides the label; the
        # ranking stays that of the probabilities
        decision = self.config.get("decision")
        chosen = decision_labels(probs, decision)
        out = []
        for p, ix, label in zip(probs, idx, chosen):
            top = [{"label": self.classes[c], "probability": round(float(p[c]), 6)} for c in ix]
            out.append({"label": self.classes[int(label)], "top": top})
        return out

    # --- the verbs' arguments as rows: {"image" and/or "text" or "values", plus id fields} ---

    def rows(self, items: list[str]) -> list[dict]:
        """`predict`'s arguments -> rows for `Predictor.iter_predict`."""
        raise NotImplementedError

    def table_rows(self, path: Path, column: str | None = None) -> list[dict]:
        """A table (CSV/TSV/JSONL/Parquet, a datasets folder) -> rows for `Predictor.iter_predict`,
        each keeping the table's own fields as ids (`batch`). The input column is `column`, else
        for a text model the column it was trained on or 'text', else 'path', 'image' or 'file'
        (image paths relative to the table's folder)."""
        rows = read_table(path, self.data.get("encoding", "utf-8"), self.data.get("columns"))
        names = list(rows[0])
        text = "image" not in self.inputs
        trained = [self.data["text_column"]] if self.data.get("text_column") else []
        wanted = [column] if column else (list(dict.fromkeys(trained + ["text"])) if text else ["path", "image", "file"])
        col = next((c for c in wanted if c in names), None)
        if col is None:
            raise DataError(f"{path}: no column {' or '.join(repr(w) for w in wanted)} (columns: {', '.join(names)}); "
                            "choose one with --column")
        if text or col == "text":
            return [{**r, "text": r[col]} for r in rows]
        return [{**r, "image": resolve(r[col], table_folder(path))} for r in rows]

    def folder_rows(self, path: Path) -> list[dict]:
        """A folder (images, recursively) or an image file given to `batch` -> rows."""
        if "image" not in self.inputs:
            raise DataError(f"{path}: this {self.name} model needs a table ({', '.join(TABLES)}) with a text column")
        return [{"path": str(f), "image": f} for f in list_images([path])]

    def labelled(self, data: str | Path, **options) -> Labelled:
        """Labelled data for `evaluate` -> rows, targets and what the report says about them.
        `options`: strict, cache_dir (image folders)."""
        raise DataError(f"a {self.name} model cannot be evaluated on {data}")


class SigmoidGraph(nn.Module):
    """A multi-label graph: the task's own graph (its inputs, its logits) -> each label's sigmoid
    probability, so eager PyTorch and the ONNX file answer in probabilities that the bundle's
    thresholds (config.json `thresholds`) decide on."""

    def __init__(self, logits: nn.Module):
        super().__init__()
        self.logits = logits

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(*inputs).float())


class MultiLabelTask:
    """Mixin before a Task class (texts, images) for its `fit --multi-label` bundles: independent
    labels, each decided by its own validation-tuned threshold. An answer holds every label at
    or above its threshold ("predicted", and "label" joined by '|', '' when none), and the labels
    ranked by probability ("top": the k most probable, and any further ones above their threshold)."""

    output_name = "probabilities"
    score = "multilabel"

    def __init__(self, config: dict):
        super().__init__(config)
        self.thresholds = np.asarray(config.get("thresholds") or [0.5] * len(self.classes), dtype=np.float64)

    def graph(self, model: nn.Module) -> nn.Module:
        return SigmoidGraph(super().graph(model)).eval()

    def results(self, outputs: np.ndarray, items: list[dict[str, np.ndarray]], k: int = 5) -> list[dict]:
        out = []
        for p in outputs.astype(np.float64):
            above = p >= self.thresholds
            order = np.argsort(-p, kind="stable")
            labels = [self.classes[c] for c in order if above[c]]
            shown = [c for i, c in enumerate(order) if i < max(1, k) or above[c]]
            out.append({"label": SEPARATOR.join(labels), "predicted": labels,
                        "top": [{"label": self.classes[c], "probability": round(float(p[c]), 6),
                                 "threshold": float(self.thresholds[c]), "above": bool(above[c])} for c in shown]})
        return out


def read_table(path: Path, encoding: str = "utf-8", columns: str | None = None) -> list[dict]:
    """Every readable row of a CSV/TSV/JSONL/Parquet table or datasets folder, by the training
    readers (core.data.text):
    a malformed row is skipped with a warning naming its line, not the whole batch lost.
    `columns` ("text,label", a model's --columns) names the fields of a headerless table; a
    table whose header has those names is read by its header."""
    names = [c.strip() for c in columns.split(",")] if columns else None
    rows, _, skipped = read_rows(path, None, encoding, skip_bad_rows=True)
    if names and rows and not set(names) <= set(rows[0]):
        rows, _, skipped = read_rows(path, names, encoding, skip_bad_rows=True)
    if skipped:
        log.warning("%s: skipped %d malformed rows (first: line %d, %s)", path, len(skipped), skipped[0]["line"],
                    skipped[0]["reason"])
    if not rows:
        raise DataError(f"{path}: the table has no rows")
    return rows


def resolve(value: str, base: Path) -> Path:
    """A path from a table: absolute as it is, else relative to `base` (the table's folder)."""
    p = Path(str(value))
    return p if p.is_absolute() else base / p


TABLES = (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet")  # and datasets folders (core.data.text.is_table)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def describe(task: Task) -> dict[str, Any]:
    """What the server's page and /v1/info show about a task."""
    return {"task": task.name, "inputs": list(task.inputs)}
