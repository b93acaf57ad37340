"""Batch prediction over a folder of images or a table (CSV/TSV/JSONL/Parquet, a Hugging Face
`datasets` folder), streamed through the
Predictor in chunks with a progress bar, written as CSV or JSONL as it goes: memory stays flat
and a crash leaves every finished row on disk."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, DataError
from ..core.data.text import is_table
from ..tasks.registry import TABLES
from .predictor import Predictor

OUTPUTS = (".csv", ".jsonl")


def input_rows(source: str | Path, predictor: Predictor, column: str | None = None) -> list[dict]:
    """A table (read by the training readers, as the model's task reads it), or a folder or
    file of inputs -> rows for Predictor.iter_predict."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    if (source.is_file() and source.suffix.lower() in TABLES) or (source.is_dir() and is_table(source)):
        return predictor.task.table_rows(source, column)
    return predictor.task.folder_rows(source)


# A CSV row's answer columns by how the task scores (Task.score); a JSONL row keeps the answer as it is.
ANSWERS = {"classification": ("label", "probability", "top"), "regression": ("value",), "retrieval": ("input", "embedding"),
           "multilabel": ("label", "top")}


def _cell(key: str, r: dict) -> str:
    if key == "probability":
        return str(r["top"][0]["probability"]) if "top" in r else ""
    if key == "top":
        return ";".join(f"{t['label']}:{t['probability']:.4f}" for t in r.get("top", []))
    if key == "embedding":
        return ";".join(f"{v:.6g}" for v in r.get("embedding", []))
    return str(r.get(key, ""))


def _writer(out: Path, stream, answers: tuple[str, ...] = ANSWERS["classification"]) -> Iterator[None]:
    """A coroutine-like generator: send it result rows, it writes them."""
    if out.suffix == ".csv":
        w = None
        while True:
            r = yield
            flat = {k: v for k, v in r.items() if k not in ("top", "error", *answers)}
            row = {**{k: ("" if v is None else str(v)) for k, v in flat.items()}, **{a: _cell(a, r) for a in answers},
                   "error": r.get("error", "")}
            if w is None:
                w = csv.DictWriter(stream, fieldnames=list(row), extrasaction="ignore")
                w.writeheader()
            w.writerow(row)
    else:
        while True:
            r = yield
            stream.write(json.dumps({k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()}) + "\n")


def predict_to_file(predictor: Predictor, source: str | Path, output: str | Path, top_k: int = 5,
                    batch_size: int = 64, column: str | None = None, progress: bool = True) -> dict:
    """Predict every row of `source` into `output` (.csv or .jsonl); returns counts."""
    output = Path(output)
    if output.suffix not in OUTPUTS:
        raise ConfigError(f"--output: {output} must end in {' or '.join(OUTPUTS)}")
    rows = input_rows(source, predictor, column)
    counts = {"rows": 0, "errors": 0, "output": str(output)}
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.console import Console
    bar = Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   disable=not progress, console=Console(stderr=True))  # stdout stays clean for pipes
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w", newline="") as f, bar:
        task = bar.add_task("predict", total=len(rows))
        sink = _writer(output, f, ANSWERS.get(predictor.task.score, ANSWERS["classification"]))
        next(sink)
        for r in predictor.iter_predict(rows, top_k, batch_size, on_progress=lambda n: bar.advance(task, n)):
            sink.send(r)
            counts["rows"] += 1
            counts["errors"] += "error" in r
    if counts["errors"]:
        print(f"{counts['errors']} of {counts['rows']} inputs could not be read (see the 'error' column)", file=sys.stderr)
    return counts
