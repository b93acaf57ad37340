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

    # scikit-learn's precision_recall_fscore_support(zero_division=0) and confusion_matrix, in
    # numpy: importing sklearn.metrics cost every fit 3-10 s (BENCHMARKS.md, issue 17)
    cm = np.bincount(targets * c + preds, minlength=c * c).reshape(c, c)
    tp, s, predicted = np.diag(cm).astype(np.float64), cm.sum(axis=1), cm.sum(axis=0)
    ratio = lambda a, b: np.divide(a, b, out=np.zeros(c), where=b > 0)
    p, r, f = ratio(tp, predicted), ratio(tp, s), ratio(2 * tp, predicted + s)
    out["macro_precision"], out["macro_recall"], out["macro_f1"] = float(p.mean()), float(r.mean()), float(f.mean())
    out["per_class"] = {
        str(name): {"precision": float(p[i]), "recall": float(r[i]),
                    "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(classes)
    }
    out["confusion_matrix"] = cm.tolist()
    return out
