"""The classic baseline in every report: what a user would try first, trained on the fit's own
split in seconds, and the fit's model set against it (report.json's `baseline`, the "Model vs
baseline" section of report.html, one line of the console summary).

The kinds of task choose their baseline and call one of the trainers here on their data:
TF-IDF + a linear classifier for texts (`tfidf_baseline`), the linear probe of a pretrained
backbone's pooled features for images (`probe_baseline`, on features the fit cached or on
`image_features`), a linear model on the flattened window for numeric sequences
(`window_baseline`). `compare` then writes the comparison and warns (through the run's `warn`)
when the baseline wins on validation: a model that loses to what trains in seconds is not worth
its minutes. Test data is shown, never used to decide who wins.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .data.split import subsample_per_class
from .metrics import multilabel_splits
from .models import create_model
from .models.base import Classifier
from .models.tfidf import TfidfFit, fit_tfidf, predict_scores
from .probe import fit_linear_probe, pooled_features

log = logging.getLogger("tuneforge")

# The probe learns from at most this many training images per class (seeded): a logistic
# regression on 1280 features fits in seconds on ~1,000 rows. Validation and test are scored in
# full from cached features; when the features must be computed for the baseline alone (a
# fine-tuned or from-scratch fit), on at most EVAL_MAX images each (seeded, stratified), so its
# cost stays one forward pass over a few thousand images: CIFAR-10 `--recipe fast` (10 classes,
# 5,000 val, 10,000 test) at 200 per class and 2,000 took 485 s at a load average of 22 on 2
# cores (12-19 images/s at 32 px), which these halve (BENCHMARKS.md).
PROBE_PER_CLASS = 100
EVAL_MAX = 1000

CLASSIFIER_WORDS = {"linearsvc": "linear SVM", "logreg": "logistic regression"}


@dataclass
class Baseline:
    """A trained baseline's scores. `val`/`test`: {"accuracy", "macro_f1", "n"} (classification)
    or {"rmse", "mae", "n"} (regression); `note`: how it was bounded or what it reused;
    `same_kind`: the fit's model is itself of the baseline's kind (its numbers are shown for
    reference, not warned about); `advice`: how to train the baseline as the model."""
    name: str
    description: str
    seconds: float
    val: dict | None = None
    test: dict | None = None
    note: str = ""
    same_kind: bool = False
    advice: str = ""


def class_scores(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Accuracy and macro-F1 (over the classes present in `labels` or `pred`, as scikit-learn's)."""
    from sklearn.metrics import f1_score

    pred, labels = np.asarray(pred).reshape(-1), np.asarray(labels).reshape(-1)
    return {"accuracy": float((pred == labels).mean()) if len(labels) else None,
            "macro_f1": float(f1_score(labels, pred, labels=list(range(num_classes)), average="macro", zero_division=0))
            if len(labels) else None, "n": int(len(labels))}


def regression_scores(pred: np.ndarray, target: np.ndarray) -> dict:
    err = np.asarray(pred, dtype=np.float64).reshape(-1) - np.asarray(target, dtype=np.float64).reshape(-1)
    t = np.asarray(target, dtype=np.float64).reshape(-1)
    r2 = 1 - float((err ** 2).sum()) / max(float(((t - t.mean()) ** 2).sum()), 1e-12)
    return {"rmse": float(np.sqrt((err ** 2).mean())), "mae": float(np.abs(err).mean()), "r2": r2, "n": int(len(err))}


def per_class_subset(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most `per_class` rows of each class (seeded: core/data's
    `subsample_per_class`); all when None."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    return subsample_per_class(labels, per_class, seed) if len(labels) else np.zeros(0, dtype=np.int64)


def stratified_cap(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `limit` rows, each class keeping its share (seeded)."""
    labels = np.asarray(labels)
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:max(1, round(limit * (labels == c).mean()))]
            for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def _trained(b: Baseline) -> Baseline:
    log.info("baseline: %s trained in %.1fs (%s)", b.description, b.seconds, b.note or "on the training split")
    return b


# ---------------------------------------------------------------- texts


def tfidf_description(fit: TfidfFit) -> str:
    info = fit.info
    grams = "-".join(map(str, info.get("ngram_range") or ()))
    return (f"TF-IDF {info.get('analyzer', '')} {grams}-grams + "
            f"{CLASSIFIER_WORDS.get(info.get('classifier'), info.get('classifier'))}")


def tfidf_baseline(train: tuple[Sequence[str], np.ndarray], evaluate: dict[str, tuple[Sequence[str], np.ndarray]],
                   num_classes: int, seed: int = 0) -> Baseline:
    """TF-IDF + linear SVM with `--model tfidf`'s defaults (core/models/tfidf.py `fit_tfidf`)
    on the training texts; scored on each `evaluate` split (val, test)."""
    t0 = time.perf_counter()
    fit = fit_tfidf(list(train[0]), np.asarray(train[1]), num_classes, seed=seed)
    scores = {name: class_scores(predict_scores(fit, list(texts)).argmax(1), labels, num_classes)
              for name, (texts, labels) in evaluate.items() if len(texts)}
    return _trained(Baseline(
        "tfidf", tfidf_description(fit), round(time.perf_counter() - t0, 2), scores.get("val"), scores.get("test"),
        f"{fit.info.get('vocabulary_size')} terms from {len(train[0])} training texts",
        advice="`--model tfidf` trains it as the model (a bundle served like any other)"))


def tfidf_ridge_baseline(train: tuple[Sequence[str], np.ndarray], evaluate: dict[str, tuple[Sequence[str], np.ndarray]],
                         unscale: Callable[[np.ndarray], np.ndarray] = lambda v: v) -> Baseline:
    """Text regression's reference: TF-IDF word 1-2-grams + ridge regression on the training
    texts; `unscale` maps standardised targets back to the data's units for the scores."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline

    t0 = time.perf_counter()
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1), Ridge(alpha=1.0))
    model.fit(list(train[0]), np.asarray(train[1]))
    scores = {name: regression_scores(unscale(model.predict(list(texts))), unscale(np.asarray(y)))
              for name, (texts, y) in evaluate.items() if len(texts)}
    return _trained(Baseline("tfidf ridge", "TF-IDF word 1-2-grams + ridge regression", round(time.perf_counter() - t0, 2),
                             scores.get("val"), scores.get("test"), f"{len(train[0])} training texts"))


def mean_predictor(train_targets: np.ndarray, evaluate: dict[str, np.ndarray]) -> dict:
    """The floor of every regression: the training targets' mean for every example (R² <= 0)."""
    mean = float(np.mean(train_targets))
    return {"name": "mean", "description": "the training targets' mean for every example", "value": mean,
            **{name: regression_scores(np.full(len(y), mean), y) for name, y in evaluate.items() if len(y)}}
def one_vs_rest(x, labels: np.ndarray, seed: int = 0, c: float = 10.0) -> Callable[[object], np.ndarray]:
    """One logistic regression per label fitted on the rows `x` (a matrix, sparse or dense) with
    (N, C) 0/1 `labels`; returns the (N, C) logits of new rows. A label every training row carries
    (or none does) has one class: its score is then a constant."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    y = np.asarray(labels) > 0.5
    present = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    clf = OneVsRestClassifier(LogisticRegression(C=c, max_iter=1000, random_state=seed)).fit(x, y[:, present])

    def logits(rows) -> np.ndarray:
        out = np.where(y.all(0), 20.0, -20.0)[None, :].repeat(rows.shape[0], 0)
        out[:, present] = clf.decision_function(rows).reshape(rows.shape[0], -1)
        return out
    return logits


def multilabel_scores(logits: Callable[[object], np.ndarray], evaluate: dict[str, tuple[object, np.ndarray]]) -> dict:
    """A multi-label baseline's scores on each `evaluate` split (rows, (N, C) labels), with
    per-label thresholds tuned on "val" as the model's are (0.5 without it)."""
    outputs = {n: (logits(rows), labels) for n, (rows, labels) in evaluate.items() if n in ("val", "test") and rows.shape[0]}
    if not outputs:
        return {}
    metrics, _ = multilabel_splits(outputs, [str(j) for j in range(next(iter(outputs.values()))[0].shape[1])])
    return {n: {k: m[k] for k in ("micro_f1", "macro_f1", "mAP", "subset_accuracy", "n")} for n, m in metrics.items()}


def multilabel_tfidf_baseline(train: tuple[Sequence[str], np.ndarray], evaluate: dict[str, tuple[Sequence[str], np.ndarray]],
                              seed: int = 0) -> Baseline:
    """One-vs-rest TF-IDF word 1-2-grams + logistic regression per label for multi-label texts
    (`labels` (N, C) 0/1), its per-label thresholds tuned on validation as the model's are
    (0.5 without validation); scored on each `evaluate` split by micro/macro-F1."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    t0 = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    logits = one_vs_rest(vec.fit_transform(list(train[0])), train[1], seed)
    scores = multilabel_scores(logits, {n: (vec.transform(list(t)), y) for n, (t, y) in evaluate.items()})
    return _trained(Baseline(
        "tfidf", "one-vs-rest TF-IDF word 1-2-grams + logistic regression", round(time.perf_counter() - t0, 2),
        scores.get("val"), scores.get("test"), f"{len(vec.vocabulary_)} terms from {len(train[0])} training texts; "
        "per-label thresholds tuned on validation"))


def multilabel_probe_baseline(train: tuple[np.ndarray, np.ndarray], evaluate: dict[str, tuple[np.ndarray, np.ndarray]],
                              backbone: str, seed: int = 0, seconds: float = 0.0, note: str = "",
                              cached: bool = False) -> Baseline:
    """The linear probe of multi-label images: one logistic regression per label on a
    pretrained backbone's standardised pooled features (N, D), thresholds tuned on validation
    as the model's are. `seconds`: what computing the features cost; `cached`: they are the
    fit's own (its model is a head on them, trained by steps rather than to convergence)."""
    t0 = time.perf_counter()
    mean, std = train[0].mean(0), train[0].std(0) + 1e-6
    z = lambda f: (np.asarray(f, np.float64) - mean) / std
    logits = one_vs_rest(z(train[0]), train[1], seed, c=1.0)
    scores = multilabel_scores(lambda f: logits(z(f)), evaluate)
    return _trained(Baseline(
        "linear probe", f"one-vs-rest logistic regression on {backbone}'s frozen features",
        round(seconds + time.perf_counter() - t0, 2), scores.get("val"), scores.get("test"),
        f"{len(train[0])} training images; per-label thresholds tuned on validation" + (f"; {note}" if note else ""),
        advice="more --epochs or a higher --lr train the head further (the probe is the same kind of head, fitted to "
               "convergence)" if cached else f"`--model {backbone} --freeze backbone` trains a head on the same features"))


# ---------------------------------------------------------------- images


@functools.lru_cache(maxsize=2)
def pretrained_backbone(name: str, image_size: int) -> Classifier:
    """`name` with its pretrained weights, kept for the process: a notebook or a test session
    that fits many small models from scratch loads the probe's weights once."""
    return create_model(name, 2, image_size, pretrained=True).eval()


def image_features(model: Classifier, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """The pooled features (N, D) of `model`'s backbone as it is now (before any training)."""
    return pooled_features(model, images, batch_size)


def probe_baseline(train: tuple[np.ndarray, np.ndarray], evaluate: dict[str, tuple[np.ndarray, np.ndarray]],
                   num_classes: int, backbone: str, seed: int = 0, seconds: float = 0.0, note: str = "",
                   same_kind: bool = False, train_total: int | None = None) -> Baseline:
    """The linear probe (core/probe.py: a logistic regression on standardised features, to
    convergence) trained on at most PROBE_PER_CLASS training rows per class of `train` (N, D)
    features, scored on each `evaluate` split. `seconds`: what computing the features cost;
    `train_total`: the training split's size when `train` is already a sample of it."""
    t0 = time.perf_counter()
    x, y = train
    keep = per_class_subset(y, PROBE_PER_CLASS, seed)
    clf = fit_linear_probe(x[keep], y[keep], seed=seed)
    scores = {name: class_scores(clf.predict(f), labels, num_classes) for name, (f, labels) in evaluate.items() if len(f)}
    total = max(train_total or 0, len(y))
    capped = f"{len(keep)} of {total} training images ({PROBE_PER_CLASS} per class at most)" if len(keep) < total \
        else f"all {total} training images"
    return _trained(Baseline(
        "linear probe", f"linear probe of {backbone}'s frozen features (logistic regression)",
        round(seconds + time.perf_counter() - t0, 2), scores.get("val"), scores.get("test"),
        f"probe trained on {capped}" + (f"; {note}" if note else ""), same_kind,
        f"`--model {backbone} --freeze backbone --head-init probe` trains it as the model"))


# ---------------------------------------------------------------- numeric sequences


def window_features(seqs: Sequence[torch.Tensor], length: int) -> np.ndarray:
    """Each sequence as one row: its last `length` steps flattened (zero-padded in front), then
    per feature its mean, std, min, max and last value (sequences of any length get one width)."""
    rows = []
    for s in seqs:
        s = s.float()
        window = torch.zeros(length, s.shape[1])
        tail = s[-length:]
        window[length - len(tail):] = tail
        stats = [s.mean(0), s.std(0, unbiased=False), s.min(0).values, s.max(0).values, s[-1]] if len(s) else \
            [torch.zeros(s.shape[1])] * 5
        rows.append(torch.cat([window.flatten(), *stats]).numpy())
    return np.stack(rows) if rows else np.zeros((0, 0))


def window_baseline(train: tuple[Sequence[torch.Tensor], np.ndarray], evaluate: dict[str, tuple[Sequence[torch.Tensor], np.ndarray]],
                    regression: bool, num_classes: int = 0, length: int = 32, seed: int = 0,
                    unscale: Callable[[np.ndarray], np.ndarray] = lambda v: v) -> Baseline:
    """Logistic regression (classification) or ridge regression on `window_features`.
    `unscale` maps standardised targets back to the data's units for the regression scores."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    model = Ridge(alpha=1.0) if regression else LogisticRegression(max_iter=2000, random_state=seed)
    clf = make_pipeline(StandardScaler(), model)
    clf.fit(window_features(train[0], length), np.asarray(train[1]))
    scores = {}
    for name, (seqs, labels) in evaluate.items():
        if len(seqs):
            pred = clf.predict(window_features(seqs, length))
            scores[name] = regression_scores(unscale(pred), unscale(np.asarray(labels))) if regression \
                else class_scores(pred, labels, num_classes)
    kind = "ridge regression" if regression else "logistic regression"
    return _trained(Baseline(kind, f"{kind} on the last {length} steps and per-feature statistics",
                             round(time.perf_counter() - t0, 2), scores.get("val"), scores.get("test"),
                             f"{len(train[0])} training sequences"))


# ---------------------------------------------------------------- the comparison


def skipped(name: str, reason: str) -> dict:
    """report.json's `baseline` when none could be trained here, and why."""
    log.info("baseline: skipped (%s)", reason)
    return {"name": name, "skipped": reason}


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _metric(scores: dict | None) -> tuple[str, bool] | None:
    """The metric that decides and whether higher is better."""
    if not scores:
        return None
    if scores.get("micro_f1") is not None:
        return "micro_f1", True
    return ("accuracy", True) if scores.get("accuracy") is not None else ("rmse", False) if "rmse" in scores else None


def _pair(metric: str, first: dict, second: dict) -> str:
    """The scores of the sentence's subject (`first`) against the other's."""
    if metric == "micro_f1":
        return (f"micro-F1 {first['micro_f1']:.3f} vs {second['micro_f1']:.3f}, macro-F1 {first['macro_f1']:.3f} vs "
                f"{second['macro_f1']:.3f}")
    if metric == "accuracy":
        f1 = (f", macro-F1 {first['macro_f1']:.3f} vs {second['macro_f1']:.3f}"
              if first.get("macro_f1") is not None and second.get("macro_f1") is not None else "")
        return f"accuracy {100 * first['accuracy']:.1f}% vs {100 * second['accuracy']:.1f}%{f1}"
    return f"RMSE {first['rmse']:.4g} vs {second['rmse']:.4g}, MAE {first['mae']:.4g} vs {second['mae']:.4g}"


def compare(report: dict, baseline: Baseline, warn: Callable[[str], None]) -> dict:
    """report["baseline"]: the baseline's scores beside the model's (`report["val"]`,
    `report["test"]`), who wins on validation and the plain-words message; the message is warned
    (`warn`: the run's Run.warn) when the baseline wins and the model is not of its own kind."""
    metric = _metric(baseline.val or baseline.test)
    keys = {"accuracy": ("accuracy", "macro_f1", "n"), "micro_f1": ("micro_f1", "macro_f1", "mAP", "subset_accuracy", "n")}.get(
        metric[0] if metric else "", ("rmse", "mae", "n"))
    model = {s: {k: report[s].get(k) for k in keys} for s in ("val", "test") if isinstance(report.get(s), dict)}
    what = f"the baseline ({baseline.description}, {_seconds(baseline.seconds)})"
    winner, margin = None, None
    m, b = model.get("val"), baseline.val
    if metric and m and b and m.get(metric[0]) is not None and b.get(metric[0]) is not None:
        diff = (b[metric[0]] - m[metric[0]]) * (1 if metric[1] else -1)
        winner = "baseline" if diff > 1e-12 else "model" if diff < -1e-12 else "tie"
        points = metric[0] in ("accuracy", "micro_f1")
        margin = round(100 * abs(diff), 2) if points else round(abs(diff), 6)
        by = f" by {margin:.1f} points" if points else ""
        if winner == "baseline":
            message = f"{what[0].upper() + what[1:]} beats this model on validation{by}: {_pair(metric[0], b, m)}."
            if baseline.advice:
                message += f" {baseline.advice[0].upper() + baseline.advice[1:]}."
        elif winner == "model":
            message = f"This model beats {what} on validation{by}: {_pair(metric[0], m, b)}."
        else:
            message = f"This model and {what} are level on validation: {_pair(metric[0], m, b)}."
    else:
        message = f"No validation scores to compare with {what}" + (
            "; its test scores are shown for reference." if baseline.test else ".")
    if baseline.same_kind:
        message += f" This model is itself a {baseline.name} of the same features, trained on from the probe's start."
    out = {"name": baseline.name, "description": baseline.description, "seconds": baseline.seconds,
           "val": baseline.val, "test": baseline.test, "model": model, "metric": metric[0] if metric else None,
           "winner_on_val": winner, "margin": margin, "message": message, "note": baseline.note,
           "same_kind": baseline.same_kind}
    report["baseline"] = out
    if winner == "baseline" and not baseline.same_kind:
        warn(message)
    else:
        log.info("baseline: %s", message)
    return out
