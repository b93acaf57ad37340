"""`fit --model tfidf`: the classic text model, trained by scikit-learn in seconds, with the
text fit's split (tasks/text/fit.py `load_splits`: val carved from train, split.json), the same
metrics, report.json/html and a bundle that `predict`, `evaluate`, `batch`, `serve` and `export`
use as any other (task "text-tfidf", tasks/text/tfidf_infer.py).

    tuneforge fit --data sst2/ --columns text,label --model tfidf
    tuneforge fit --data tnews/train.tsv --test tnews/dev.tsv --columns text,label --model tfidf

No Engine: nothing is trained by gradient steps, so the training settings (epochs, lr, freeze,
...) are not read and, when given, refused naming the flag (the `tfidf` plugin's groups,
tasks/text/__init__.py). The bundle holds no pickle: the weights, idf and temperature of
core/models/tfidf.py's `TfidfClassifier` as model.safetensors, the vocabulary and analysis
settings as JSON beside them (the bundle's tokenizer file).
"""
from __future__ import annotations

import html
import logging
import time

import numpy as np
import torch

from ...config import FitConfig
from ...core.data.duplicates import text_duplicates
from ...core.bundle import save_bundle
from ...core.data.text import TextSet
from ...core.metrics import classification_metrics
from ...core.models.tfidf import VOCAB_FILE, TfidfFit, fit_tfidf
from ...core.report import Page, register_section
from ...core.run import FitResult, Run, finish
from ...errors import ConfigError
from .fit import detect as detect_text
from .fit import load_splits

log = logging.getLogger("tuneforge")

TASK = "text-tfidf"


def detect(cfg: FitConfig) -> bool:
    """Text data (the text plugin's test) with --model tfidf."""
    return cfg.model == "tfidf" and detect_text(cfg)


@torch.inference_mode()
def logits_of(fit: TfidfFit, texts: list[str], batch_size: int) -> torch.Tensor:
    """(N, K) logits of the bundle's module, in text order: what `predict` computes."""
    model = fit.module()
    out = [model(*fit.featurizer.batch(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, fit.num_classes)


def _metrics(fit: TfidfFit, splits: dict[str, TextSet], batch_size: int, report: dict) -> dict | None:
    """val/test metrics into `report`; the examples of the report's worst-errors section."""
    examples = None
    for name in ("val", "test"):
        s = splits.get(name)
        if s is None:
            continue
        t0 = time.perf_counter()
        logits = logits_of(fit, s.texts, batch_size)
        report["throughput"][f"{name}_predict_per_s"] = round(len(s) / max(time.perf_counter() - t0, 1e-9), 1)
        report[name] = classification_metrics(logits, s.labels, splits["train"].classes)
        if name == "test" or "test" not in splits:
            examples = {"texts": s.texts, "logits": logits.numpy(), "targets": s.labels.numpy(),
                        "paths": [f"{s.path}:{line}" for line in s.lines]}
    return examples


def _refit(cfg: FitConfig, fit: TfidfFit, splits: dict[str, TextSet], report: dict,
           examples: dict | None) -> tuple[TfidfFit, dict | None]:
    """--tfidf-refit: the choices the held-out fit made on validation (classifier, C, NB share,
    temperature), fitted again on train + val. The report keeps the held-out fit's val scores (the
    refit has seen those texts) and scores test with the refit. TNEWS dev: 57.98% -> 58.55%
    (BENCHMARKS.md "Classic baselines": 10% more texts to learn from)."""
    train, val = splits["train"], splits.get("val")
    if val is None or not len(val):
        raise ConfigError("--tfidf-refit refits on train + validation after choosing on validation: this fit has no "
                          "validation split (--val-fraction 0 and no --val)")
    t0 = time.perf_counter()
    refit = fit_tfidf(train.texts + val.texts, np.concatenate([train.labels.numpy(), val.labels.numpy()]),
                      len(train.classes), cfg.tfidf_analyzer, cfg.tfidf_ngram_range(), fit.classifier, fit.C, cfg.seed,
                      nb_weight=fit.info.get("nb_weight"))
    refit.temperature = fit.temperature
    refit.info.update({k: fit.info[k] for k in ("calibration", "val_accuracy", "temperature") if k in fit.info})
    seconds = time.perf_counter() - t0
    report["refit"] = {"rows": len(train) + len(val), "seconds": round(seconds, 2),
                       "val_scores": "of the held-out fit (the refit has seen the validation texts)"}
    report["tfidf"] = refit.info
    log.info("tfidf: refit on train + val (%d texts) with C=%g in %.1fs", len(train) + len(val), refit.C, seconds)
    if "test" in splits:  # test is scored by the model the bundle holds
        examples = _metrics(refit, {"train": train, "test": splits["test"]}, cfg.eval_batch_size, report)
    return refit, examples


def fit_classic(cfg: FitConfig, run: Run) -> FitResult:
    """TF-IDF features + a linear classifier on the train split; its softmax temperature fitted
    on the val split (probabilities; argmax unchanged); scored on val and test."""
    if cfg.sequence_column or cfg.id_column:
        raise ConfigError("--model tfidf reads texts; numeric sequences take lstm, gru or transformer")
    t_data = time.perf_counter()
    splits, files = load_splits(cfg, run.dir, resume=run.resuming)
    duplicates = text_duplicates(splits, splits["train"].classes)  # warned about, and in the report
    data_s = time.perf_counter() - t_data
    train, val = splits["train"], splits.get("val")
    classes = train.classes
    log.info("data: %d train, %d val, %d test texts, %d classes (%.1fs)", len(train), len(val or []),
             len(splits.get("test", [])), len(classes), data_s)
    t_fit = time.perf_counter()
    fit = fit_tfidf(train.texts, train.labels.numpy(), len(classes), cfg.tfidf_analyzer, cfg.tfidf_ngram_range(),
                    cfg.tfidf_classifier, cfg.tfidf_c, cfg.seed,
                    val_texts=val.texts if val is not None and len(val) else None,
                    val_labels=val.labels.numpy() if val is not None and len(val) else None)
    fit_s = time.perf_counter() - t_fit
    info = fit.info
    log.info("tfidf: %s %s-grams, %d terms, %s C=%g: fitted in %.1fs (%s)", info["analyzer"],
             "-".join(map(str, info["ngram_range"])), info["vocabulary_size"], info["classifier"], fit.C, fit_s,
             info["why"])
    lens = [len(t) for t in train.texts]
    report = {"model": "tfidf", "task": "classification", "classes": classes,
              "best_epoch": None, "epochs_run": None, "stopped_because": None,
              "data": {**{n: len(s) for n, s in splits.items()},
                       "files": {k: str(v) if v else None for k, v in files.items()},
                       "mean_chars": round(float(np.mean(lens)), 2) if lens else 0.0, "load_s": round(data_s, 2),
                       "skipped": [r for s in splits.values() for r in s.skipped],
                       "unknown_labels": {n: s.unknown for n, s in splits.items() if s.unknown},
                       "duplicates": duplicates},
              "throughput": {"train_per_s": round(len(train) / max(fit_s, 1e-9), 1)},
              "tfidf": info, "config": cfg.to_dict()}
    examples = _metrics(fit, splits, cfg.eval_batch_size, report)
    if cfg.tfidf_refit:
        fit, examples = _refit(cfg, fit, splits, report, examples)
    model = fit.module()
    analysis = fit.featurizer.analysis.to_dict()
    del analysis["token_pattern"]  # in the vocabulary file; the card shows what a reader needs
    meta = {"task": TASK, "model": "tfidf", "model_args": {"vocab_size": fit.featurizer.size}, "classes": classes,
            "preprocessing": {"image_size": None, "tokenizer": VOCAB_FILE, **analysis, "tf": "1 + log(count)",
                              "idf": "smooth", "norm": "l2", "temperature": round(fit.temperature, 6)},
            "metrics": {k: {m: report[k][m] for m in ("accuracy", "macro_f1", "n")} for k in ("val", "test") if k in report},
            "tfidf": {k: info[k] for k in ("classifier", "C", "nb_weight", "segmenter", "why", "calibration",
                                           "vocabulary_size", "min_df") if info.get(k) is not None},
            "data": {"train_file": str(files["train"]), "train_rows": len(train), "text_column": cfg.text_column or "text",
                     "label_column": cfg.label_column, "columns": cfg.columns, "encoding": cfg.encoding}}
    state = {"history": [], "fit_s": fit_s}
    return finish(run, model, report, state, meta, examples,
                  save=lambda d: save_bundle(d, model, meta, tokenizer=fit.featurizer))


def _applies(report: dict) -> bool:
    return isinstance(report.get("tfidf"), dict) and bool(report["tfidf"])


@register_section("tfidf", _applies, order=20)
def _section(page: Page) -> str:
    """What the classic model is made of and why (analysis chosen, vocabulary, C, calibration)."""
    info = page.report["tfidf"]
    chars = info.get("char_ngram_range")
    rows = [("analyzer", f"{info.get('analyzer')} {'-'.join(map(str, info.get('ngram_range') or []))}-grams"
                         + (f" + characters {'-'.join(map(str, chars))}-grams" if chars else "")),
            ("why", info.get("why")), ("vocabulary", info.get("vocabulary_size")),
            ("words segmented by", info.get("segmenter")),
            ("classifier", f"{info.get('classifier')}, C={info.get('C')}"),
            ("naive-Bayes share", info.get("nb_choice")), ("probabilities", info.get("calibration")),
            ("featurize / train", f"{info.get('featurize_s')} s / {info.get('train_s')} s")]
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows if v is not None)
    return f"<section><h2>TF-IDF model</h2><table>{body}</table></section>"
