"""Image+text bundles on tables, images and texts: predict and evaluate."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ...core.data.multimodal import read_image_text_table
from ...core.metrics import classification_metrics
from ...errors import DataError
from .fit import OTHER, TASK

def predict_rows(run: str | Path, items: list[str], top_k: int = 5, batch_size: int = 256) -> list[dict]:
    """`tuneforge predict RUN ...` for an image+text bundle. Each item is a table (CSV/TSV/JSONL
    with the columns the model was trained on: one prediction per row, either input may be
    empty), an image file (image only), or any other string (text only)."""
    from ...core.data.images import is_image
    from ...core.data.text import TEXT_SUFFIXES
    from ...deploy.predictor import Predictor
    predictor = Predictor(run)
    d = predictor.config.get("data", {})
    rows: list[dict] = []
    for it in map(str, items):
        p = Path(it)
        if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES:
            t = read_image_text_table(p, d["image_column"], d["text_column"], None, d.get("image_root") or None,
                                      allow_missing=True, encoding=d.get("encoding", "utf-8"))
            rows += [{"row": f"{p}:{n}", "image": img, "text": txt} for img, txt, n in zip(t.images, t.texts, t.rows)]
        elif p.is_file() and is_image(p):
            rows.append({"path": it, "image": p})
        else:
            rows.append({"text": it})
    out = []
    for r in predictor.iter_predict(rows, top_k, batch_size):
        if isinstance(r.get("path"), Path):
            r["path"] = str(r["path"])
        out.append(r)
    return out


def evaluate_table(run: str | Path, data: str | Path, out: str | Path | None = None, batch_size: int = 256,
                   progress: bool = True) -> dict:
    """`tuneforge evaluate RUN --data TABLE` for an image+text bundle: a labelled table with the
    columns it was trained on; rows with one input missing are kept (the model predicts from the
    other), labels the model lacks are counted and left out."""
    from ...core.report import print_summary, write_report
    from ...deploy.predictor import Predictor
    predictor = Predictor(run)
    d = predictor.config.get("data", {})
    t = read_image_text_table(data, d["image_column"], d["text_column"], d["label_column"], d.get("image_root") or None,
                              allow_missing=True, encoding=d.get("encoding", "utf-8"))
    classes = predictor.classes
    labels = [l if l in classes else (OTHER if OTHER in classes else l) for l in t.labels]
    keep = [i for i, l in enumerate(labels) if l in classes]
    unknown = len(labels) - len(keep)
    if not keep:
        raise DataError(f"{data}: no rows with a label the model knows ({', '.join(classes[:10])}, ...)")
    t0 = time.perf_counter()
    items, logits = [], []
    for start in range(0, len(keep), batch_size):
        items = [predictor.prepare(t.images[i], t.texts[i]) for i in keep[start:start + batch_size]]
        logits.append(predictor.logits(predictor.task.collate(items)))
    logits = torch.from_numpy(np.concatenate(logits)) if logits else torch.zeros(0, len(classes))
    y = torch.tensor([classes.index(labels[i]) for i in keep])
    report = {"model": "fusion", "task": TASK, "classes": classes,
              "test": classification_metrics(logits, y, classes),
              "data": {"test": len(keep), "file": str(data), "skipped": t.skipped, "unknown_labels": unknown},
              "wall_s": round(time.perf_counter() - t0, 2)}
    out = Path(out) if out else Path(predictor.config["_dir"]).parent / f"eval-{Path(data).stem}"
    paths = write_report(out, report, None, {"texts": [t.texts[i] or "" for i in keep], "logits": logits.numpy(),
                                             "targets": y.numpy(), "paths": [f"{data}:{t.rows[i]}" for i in keep]})
    report["html_path"] = str(paths["html"])
    if progress:
        print_summary(report)
    return report
