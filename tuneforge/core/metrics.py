"""Classification metrics computed from raw logits, returned as plain JSON-ready values."""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any) -> np.ndarray:
    """Return `x` as a numpy array, detaching and moving torch tensors to the CPU first."""
    if hasattr(x, "detach"):  # duck-typed so torch stays an optional import here
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax; subtracting the row max keeps exp() from overflowing."""
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax probabilities of `logits` (N, C)."""
    return np.exp(log_softmax(np.asarray(logits, dtype=np.float64)))


def _check_inputs(logits: np.ndarray, targets: np.ndarray, classes: list[str]) -> None:
    """Raise ValueError when shapes, labels or class names do not line up."""
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {logits.shape}")
    n, c = logits.shape
    if n == 0:
        raise ValueError("cannot compute metrics on an empty split (0 samples); "
                         "check that the split has images")
    if targets.shape != (n,):
        raise ValueError(f"targets must have shape ({n},) to match logits, got {targets.shape}")
    if len(classes) != c:
        raise ValueError(f"logits have {c} columns but {len(classes)} class names were given")
    if targets.min() < 0 or targets.max() >= c:
        raise ValueError(f"targets must be in [0, {c}), got values in "
                         f"[{int(targets.min())}, {int(targets.max())}]")


def classification_metrics(logits, targets, classes: list[str]) -> dict:
    """Accuracy, top-5, cross-entropy, macro and per-class P/R/F1 and the confusion matrix.

    `logits` is (N, C) scores (numpy or torch), `targets` is (N,) class indices and
    `classes` names the C columns. Every value in the result is a plain int, float or list.
    """
    logits = to_numpy(logits).astype(np.float64, copy=False)
    targets = to_numpy(targets).astype(np.int64, copy=False).reshape(-1)
    _check_inputs(logits, targets, classes)
    n, c = logits.shape
    labels = list(range(c))
    preds = logits.argmax(axis=1)

    out: dict[str, Any] = {"n": int(n), "accuracy": float((preds == targets).mean())}
    if c > 5:
        # argpartition avoids a full sort; order within the top 5 doesn't matter here
        top5 = np.argpartition(-logits, 5, axis=1)[:, :5]
        out["top5_accuracy"] = float((top5 == targets[:, None]).any(axis=1).mean())
    out["loss"] = float(-log_softmax(logits)[np.arange(n), targets].mean())

    # imported here: scikit-learn (with scipy and pandas) is ~1.5 s of CPU, which a fit can
    # spend while its test set is scored (core/report.preload) instead of at start-up
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    macro = precision_recall_fscore_support(
        targets, preds, labels=labels, average="macro", zero_division=0)
    out["macro_precision"], out["macro_recall"], out["macro_f1"] = (float(v) for v in macro[:3])

    p, r, f, s = precision_recall_fscore_support(
        targets, preds, labels=labels, average=None, zero_division=0)
    out["per_class"] = {
        str(name): {"precision": float(p[i]), "recall": float(r[i]),
                    "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(classes)
    }
    out["confusion_matrix"] = confusion_matrix(targets, preds, labels=labels).tolist()
    return out


# ---------------------------------------------------------------- multi-label (fit --multi-label)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise probabilities of independent labels; split by sign so exp() never overflows."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# A label with fewer positive validation rows than this gets the shared threshold (the one that
# maximises the micro-F1 of all labels together): an F1 maximised over one or two positives picks
# whatever threshold lets them through, often the lowest, which then floods the test set with that
# label (NLU++ banking trained on 2 folds: test micro-F1 0.54 with such thresholds, val 0.68).
MIN_POSITIVES = 5


def _best(f1: np.ndarray, order: np.ndarray, candidates: np.ndarray) -> float:
    return round(float(candidates[order[np.argmax(f1[order])]]), 4)


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, grid: int = 99,
                    min_positives: int = MIN_POSITIVES) -> list[float]:
    """Per-label decision thresholds chosen on the given (validation) rows: each label with at
    least `min_positives` positive rows gets the threshold that maximises its own F1; the others
    share the threshold that maximises the micro-F1 over all labels (0.5 when no label has a
    positive row: nothing to choose by). Ties go to the threshold nearest 0.5."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets) > 0.5
    candidates = np.linspace(0.01, 0.99, grid)
    order = np.argsort(np.abs(candidates - 0.5), kind="stable")  # nearest 0.5 first wins ties
    pred = probs[:, :, None] >= candidates[None, None, :]  # (N, C, T)
    tp = (pred & targets[:, :, None]).sum(0)  # (C, T)
    predicted, positives = pred.sum(0), targets.sum(0)[:, None]
    if not targets.any():
        return [0.5] * probs.shape[1]
    shared = _best(2 * tp.sum(0) / np.maximum(predicted.sum(0) + positives.sum(), 1), order, candidates)
    f1 = 2 * tp / np.maximum(predicted + positives, 1)
    return [_best(f1[j], order, candidates) if positives[j, 0] >= min_positives else shared
            for j in range(probs.shape[1])]


def multilabel_metrics(logits, targets, classes: list[str], thresholds: list[float] | None = None) -> dict:
    """Micro/macro F1, subset accuracy, mAP (mean per-label average precision over labels with
    a positive row), BCE loss and per-label precision/recall/F1/AP/support, at `thresholds`
    (0.5 each when None). `logits` (N, C) scores, `targets` (N, C) 0/1."""
    from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support

    logits = to_numpy(logits).astype(np.float64, copy=False)
    y = to_numpy(targets).astype(np.float64, copy=False) > 0.5
    if logits.ndim != 2 or y.shape != logits.shape:
        raise ValueError(f"multi-label logits and targets must both be (N, C), got {logits.shape} and {y.shape}")
    if len(logits) == 0:
        raise ValueError("cannot compute metrics on an empty split (0 samples)")
    if len(classes) != logits.shape[1]:
        raise ValueError(f"logits have {logits.shape[1]} columns but {len(classes)} label names were given")
    probs = sigmoid(logits)
    t = np.asarray(thresholds if thresholds is not None else [0.5] * len(classes))
    pred = probs >= t[None, :]
    # BCE from logits: log(1 + e^x) - y x, stable for large |x|
    loss = float((np.logaddexp(0, logits) - y * logits).mean())
    p, r, f, s = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    ap = [float(average_precision_score(y[:, j], probs[:, j])) if y[:, j].any() else None for j in range(len(classes))]
    scored = [a for a in ap if a is not None]
    return {"n": int(len(y)), "micro_f1": float(f1_score(y, pred, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
            "subset_accuracy": float((pred == y).all(1).mean()), "mAP": float(np.mean(scored)) if scored else None,
            "loss": loss, "labels_per_row": float(y.sum(1).mean()), "predicted_per_row": float(pred.sum(1).mean()),
            "per_label": {str(name): {"precision": float(p[j]), "recall": float(r[j]), "f1": float(f[j]),
                                      "ap": ap[j], "support": int(s[j]), "threshold": float(t[j])}
                          for j, name in enumerate(classes)}}


def multilabel_splits(outputs: dict[str, tuple], classes: list[str]) -> tuple[dict[str, dict], list[float]]:
    """Each split's `multilabel_metrics` from its (logits, targets), all at the per-label
    thresholds tuned on "val" (0.5 each without it): test data never chooses a threshold."""
    thresholds = [0.5] * len(classes)
    if "val" in outputs:
        logits, targets = outputs["val"]
        thresholds = tune_thresholds(sigmoid(to_numpy(logits)), to_numpy(targets))
    return {n: multilabel_metrics(z, y, classes, thresholds) for n, (z, y) in outputs.items()}, thresholds
