"""Regression on images: a table (CSV/TSV/JSONL) with a column of image paths (`file`, `path` or
`image`, relative to the table) and a numeric --label-column, fitted with --task regression:

    tuneforge fit --data ages.csv --task regression --label-column age --model resnet18

Texts, text tables and numeric sequences regress through their own kinds (text, sequence) with
the same --task regression; this kind is registered after them, so asked first."""
from pathlib import Path

from ..plugins import Plugin, register_plugin

IMAGE_COLUMNS = ("file", "path", "image")


def header(path: str | None) -> list[str]:
    """The column names of a CSV/TSV/JSONL table from its first line (cheap: nothing else read)."""
    import csv
    import json
    p = Path(path) if path else None
    if p is None or not p.is_file() or p.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".ndjson"):
        return []
    with open(p, encoding="utf-8-sig", errors="replace") as f:
        first = f.readline()
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        try:
            return list(json.loads(first))
        except (ValueError, TypeError):
            return []
    return next(csv.reader([first], delimiter="\t" if p.suffix.lower() == ".tsv" else ","), [])


def detect(cfg) -> bool:
    return cfg.task == "regression" and not cfg.text_column and any(c in header(cfg.data) for c in IMAGE_COLUMNS)


PLUGIN = register_plugin(Plugin(
    "image-regression", groups=("run", "optim", "model", "image", "table", "target", "baseline"),
    detect="tuneforge.tasks.regression:detect", fit="tuneforge.tasks.regression.fit:fit",
    resolve="tuneforge.tasks.regression.fit:resolve", tasks=("image-regression",), infer="tuneforge.tasks.regression.infer",
    unread=("text_column", "semi", "head_init", "tta", "columns"),
    help="images with a number each: a table of image paths (file/path/image column) and --label-column, --task regression"))
