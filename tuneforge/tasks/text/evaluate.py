"""Text bundles on raw texts and labelled tables: predict and evaluate."""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ...core.bundle import load_bundle
from ...core.data.text import read_text_file
from ...core.data.text_loader import SequenceBatchLoader
from ...core.metrics import classification_metrics
from ...core.report import print_summary, write_report
from ...core.tokenizer import TextEncoding


class TextPredictor:
    """A text bundle with the tokenizer or vocabulary it was trained with."""

    def __init__(self, bundle: str | Path, threads: int = 0):
        if threads:
            torch.set_num_threads(threads)
        self.model, self.config = load_bundle(bundle)
        self.classes: list[str] = self.config["classes"]
        self.pre = self.config["preprocessing"]
        self.encoding = TextEncoding.load(Path(self.config["_dir"]), self.pre)

    @torch.inference_mode()
    def probabilities(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        ids = self.encoding(list(texts))
        ld = SequenceBatchLoader(ids, torch.zeros(len(ids), dtype=torch.long), batch_size, pad_id=self.encoding.pad_id)
        out = [self.model(x).float().softmax(1) for x, _ in ld.epoch(0)]
        return ld.unsort(torch.cat(out)) if out else torch.zeros(0, len(self.classes))

    def predict_texts(self, texts: list[str], top_k: int = 5, batch_size: int = 256) -> list[dict]:
        probs = self.probabilities(texts, batch_size)
        p, idx = probs.topk(min(top_k, len(self.classes)), dim=1)
        res = []
        for t, pr, ix in zip(texts, p, idx):
            top = [{"label": self.classes[c], "probability": round(float(q), 6)} for q, c in zip(pr, ix)]
            res.append({"text": t, "label": top[0]["label"], "top": top})
        return res


def read_inputs(items: list[str], encoding: str = "utf-8") -> list[str]:
    """`predict`'s arguments as texts: a string is a text, an existing file gives one text per
    line, '-' reads lines from standard input."""
    import sys
    texts: list[str] = []
    for it in items:
        if it == "-":
            texts += [l.rstrip("\r\n") for l in sys.stdin if l.strip()]
        elif os.path.isfile(it):
            with open(it, encoding=encoding) as f:
                texts += [l.rstrip("\r\n") for l in f if l.strip()]
        else:
            texts.append(it)
    return texts


def evaluate_text(run: str | Path, data: str | Path, out: str | Path | None = None, batch_size: int = 256,
                  progress: bool = True) -> dict:
    """Evaluate a text bundle on a labelled file with the columns it was trained with."""
    predictor = TextPredictor(run)
    d = predictor.config.get("data", {})
    cols = [c.strip() for c in d["columns"].split(",")] if d.get("columns") else None
    split = read_text_file(data, d.get("text_column", "text"), d.get("label_column", "label"), cols, d.get("encoding", "utf-8"),
                           classes=predictor.classes)
    t0 = time.perf_counter()
    logits = predictor.probabilities(split.texts, batch_size).clamp_min(1e-12).log()
    report = {"model": predictor.config["model"], "classes": predictor.classes,
              "test": classification_metrics(logits, split.labels, predictor.classes),
              "data": {"test": len(split), "file": str(data), "skipped": split.skipped, "unknown_labels": split.unknown},
              "wall_s": round(time.perf_counter() - t0, 2)}
    out = Path(out) if out else Path(predictor.config["_dir"]).parent / f"eval-{Path(data).name}"
    paths = write_report(out, report, None, {"texts": split.texts, "logits": logits.numpy(), "targets": split.labels.numpy(),
                                             "paths": [f"{data}:{l}" for l in split.lines]})
    report["html_path"] = str(paths["html"])
    if progress:
        print_summary(report)
    return report
