"""Batch prediction over a folder of images or a table (CSV/TSV/JSONL), streamed through the
Predictor in chunks with a progress bar, written as CSV or JSONL as it goes: memory stays flat
and a crash leaves every finished row on disk."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterator

from ..core.data.images import list_images
from ..errors import ConfigError, DataError
from .predictor import Predictor

TABLES = (".csv", ".tsv", ".jsonl", ".ndjson")
OUTPUTS = (".csv", ".jsonl")


def _table_rows(path: Path, column: str | None, task_inputs: tuple[str, ...]) -> tuple[list[dict], str]:
    """Rows of a table with an `image` (path, relative to the table's folder) or `text` field,
    and the column used. The column defaults to 'path'/'image' or 'text', by the model's input."""
    try:
        if path.suffix in (".jsonl", ".ndjson"):
            rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
        else:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the table ({e})") from None
    if not rows:
        raise DataError(f"{path}: the table has no rows")
    names = list(rows[0])
    wanted = [column] if column else (["text"] if "text" in task_inputs and "image" not in task_inputs else ["path", "image", "file"])
    col = next((c for c in wanted if c in names), None)
    if col is None:
        raise DataError(f"{path}: no column {' or '.join(repr(w) for w in wanted)} (columns: {', '.join(names)}); "
                        "choose one with --column")
    out = []
    for r in rows:
        if "image" in task_inputs and col != "text":
            p = Path(str(r[col]))
            out.append({**r, "image": p if p.is_absolute() else path.parent / p})
        else:
            out.append({**r, "text": str(r[col])})
    return out, col


def input_rows(source: str | Path, predictor: Predictor, column: str | None = None) -> list[dict]:
    """A folder (images, recursively), an image file, or a table -> rows for Predictor.iter_predict."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder")
    if source.is_file() and source.suffix.lower() in TABLES:
        return _table_rows(source, column, predictor.task.inputs)[0]
    if "image" not in predictor.task.inputs:
        raise DataError(f"{source}: this {predictor.task.name} model needs a table with a text column")
    return [{"path": str(f), "image": f} for f in list_images([source])]


def _writer(out: Path, stream) -> Iterator[None]:
    """A coroutine-like generator: send it result rows, it writes them."""
    if out.suffix == ".csv":
        w = None
        while True:
            r = yield
            flat = {k: v for k, v in r.items() if k not in ("top", "label", "error")}
            row = {**{k: ("" if v is None else str(v)) for k, v in flat.items()}, "label": r.get("label", ""),
                   "probability": r["top"][0]["probability"] if "top" in r else "",
                   "top": ";".join(f"{t['label']}:{t['probability']:.4f}" for t in r.get("top", [])),
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
        sink = _writer(output, f)
        next(sink)
        for r in predictor.iter_predict(rows, top_k, batch_size, on_progress=lambda n: bar.advance(task, n)):
            sink.send(r)
            counts["rows"] += 1
            counts["errors"] += "error" in r
    if counts["errors"]:
        print(f"{counts['errors']} of {counts['rows']} inputs could not be read (see the 'error' column)", file=sys.stderr)
    return counts
