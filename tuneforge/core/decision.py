"""The decision threshold of a binary classifier, chosen for a stated recall (`--target-recall
CLASS=R`): on validation only, the highest threshold on CLASS's probability whose recall on
validation is at least R. A screening test states its sensitivity first and takes the
specificity that leaves; the argmax (threshold 0.5) states neither.

The threshold goes into the bundle (config.json `decision`), where the inference Task applies it
(`predict`, `batch`, `serve`, `evaluate`); the report's `decision` section gives sensitivity,
specificity and accuracy at it on validation and test.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from ..config import target_recall
from ..errors import ConfigError, DataError

log = logging.getLogger("tuneforge")


def check(spec: str, classes: list[str], has_val: bool = True) -> tuple[str, int, float]:
    """(class, its index, recall) of --target-recall for a classifier of `classes` (checked before
    training: a fit that cannot choose the threshold is refused, not finished without it)."""
    name, recall = target_recall(spec)
    if not has_val:
        raise ConfigError("--target-recall: the threshold is chosen on the validation split, and this fit has none "
                          "(give --val, or --val-fraction above 0)")
    if len(classes) != 2:
        raise ConfigError(f"--target-recall: a decision threshold needs a binary classifier; this data has "
                          f"{len(classes)} classes")
    if name not in classes:
        raise ConfigError(f"--target-recall: no class {name!r} (the classes: {', '.join(classes)})")
    return name, classes.index(name), recall


def probabilities(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def choose_threshold(scores: np.ndarray, positive: np.ndarray, recall: float) -> float:
    """The highest t such that at least `recall` of the positives have score >= t."""
    pos = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(positive, dtype=bool)])[::-1]
    if len(pos) == 0:
        raise DataError("--target-recall: the validation split holds no example of the class; a threshold for its "
                        "recall cannot be chosen")
    need = min(len(pos), max(1, math.ceil(recall * len(pos) - 1e-9)))
    return float(pos[need - 1])


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Whether each example is called positive."""
    return np.asarray(scores, dtype=np.float64) >= threshold


def rates(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    """Sensitivity (recall of the class), specificity, precision and accuracy at `threshold`."""
    called, positive = decide(scores, threshold), np.asarray(positive, dtype=bool)
    tp, fn = int((called & positive).sum()), int((~called & positive).sum())
    tn, fp = int((~called & ~positive).sum()), int((called & ~positive).sum())
    return {"n": len(positive), "sensitivity": tp / max(tp + fn, 1), "specificity": tn / max(tn + fp, 1),
            "precision": tp / max(tp + fp, 1), "accuracy": (tp + tn) / max(len(positive), 1),
            "tp": tp, "fn": fn, "tn": tn, "fp": fp}


def fit_decision(spec: str, classes: list[str], val: tuple[np.ndarray, np.ndarray],
                 others: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
    """The threshold for --target-recall `spec`, chosen on `val` ((logits, targets)) alone, and the
    rates it gives on val and on each of `others` (e.g. test), for report.json and the bundle."""
    name, index, recall = check(spec, classes)
    logits, targets = val
    threshold = choose_threshold(probabilities(logits)[:, index], np.asarray(targets) == index, recall)
    out = {"class": name, "index": index, "target_recall": recall, "threshold": threshold, "chosen_on": "val"}
    for split, (lg, tg) in {"val": val, **(others or {})}.items():
        out[split] = rates(probabilities(lg)[:, index], np.asarray(tg) == index, threshold)
    return out


def labels(probs: np.ndarray, decision: dict) -> np.ndarray:
    """Class indices under a bundle's `decision` (the argmax when there is none)."""
    if not decision:
        return probs.argmax(1)
    index = int(decision["index"])
    return np.where(decide(probs[:, index], decision["threshold"]), index, 1 - index)


def with_decision(spec: str, classes: list[str], scores: dict[str, tuple[np.ndarray, np.ndarray]], report: dict,
                  meta: dict) -> dict:
    """A fit's threshold for --target-recall, from its (logits, targets) of `scores["val"]`: into
    report.json (`decision`, with the rates on every split of `scores`) and the bundle's config."""
    d = fit_decision(spec, classes, scores["val"], {k: v for k, v in scores.items() if k != "val"})
    report["decision"] = d
    meta["decision"] = {k: d[k] for k in ("class", "index", "threshold", "target_recall")}
    shown = "; ".join(f"{split} sensitivity {d[split]['sensitivity']:.1%}, specificity {d[split]['specificity']:.1%}, "
                      f"accuracy {d[split]['accuracy']:.1%}" for split in scores)
    log.info("decision: %s if its probability >= %.4f (chosen on val for recall >= %g): %s", d["class"], d["threshold"],
             d["target_recall"], shown)
    return d


def evaluate_decision(decision: dict, outputs: np.ndarray, targets: np.ndarray) -> dict:
    """`evaluate`'s report section of a bundle's threshold: its rates on the labelled data."""
    index = int(decision["index"])
    return {**{k: decision[k] for k in ("class", "index", "threshold", "target_recall")}, "chosen_on": "val (when fitted)",
            "test": rates(probabilities(outputs)[:, index], np.asarray(targets) == index, decision["threshold"])}
