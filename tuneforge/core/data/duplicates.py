"""Exact duplicates a fit should not pass over in silence: the same content in two splits (a
test image copied into train inflates the test score) and the same content under two classes
(a label contradiction). Found by content hash (image files: the decode cache's sha1, so no
file is read twice; texts: their exact characters), warned about in the log and recorded in
report.json's `data.duplicates` (report.html shows it)."""
from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from .images import content_hashes

log = logging.getLogger("tuneforge")

MAX_EXAMPLES = 10  # groups shown in the log and the report
MAX_PER_GROUP = 5  # paths shown per group


def _summary(groups: list[list[tuple[str, str, str | None]]], key: int) -> dict:
    """Counts and examples of duplicate groups; `key` 0 counts by split pair, 2 by class pair."""
    pairs: dict[str, int] = defaultdict(int)
    for g in groups:
        names = sorted({str(m[key]) for m in g})
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                pairs[f"{a}/{b}"] += 1
    return {"count": len(groups), "items": sum(len(g) for g in groups), "pairs": dict(sorted(pairs.items())),
            "examples": [[f"{split}: {where}" + (f" ({label})" if label is not None else "")
                          for split, where, label in g[:MAX_PER_GROUP]] for g in groups[:MAX_EXAMPLES]]}


def find_duplicates(items: Iterable[tuple[str, str, str | None, str]], what: str = "images") -> dict:
    """items: (split, where (a path or file:line), label or None, content digest). Returns
    {"across_splits": {...}, "across_classes": {...}}, each with `count` (groups of identical
    contents), `items` (members of those groups), `pairs` (groups per split or class pair) and
    up to 10 `examples`; logs a warning for each kind found."""
    groups: dict[str, list[tuple[str, str, str | None]]] = defaultdict(list)
    for split, where, label, digest in items:
        groups[digest].append((split, where, label))
    splits = [g for g in groups.values() if len({m[0] for m in g}) > 1]
    classes = [g for g in groups.values() if len({m[2] for m in g if m[2] is not None}) > 1]
    out = {"across_splits": _summary(splits, 0), "across_classes": _summary(classes, 2)}
    for kind, text in (("across_splits", f"identical {what} in more than one split (test or validation "
                                         "scores count them as unseen: they are not)"),
                       ("across_classes", f"identical {what} under more than one class (contradictory labels)")):
        s = out[kind]
        if s["count"]:
            shown = "; ".join(" = ".join(e) for e in s["examples"])
            log.warning("%d groups of %s [%s]; e.g. %s", s["count"], text,
                        ", ".join(f"{k}: {v}" for k, v in s["pairs"].items()), shown)
    return out


def image_duplicates(splits: dict[str, object | None], classes: list[str]) -> dict:
    """find_duplicates over the decoded splits (ImageSet: paths and labels) of an image fit."""
    items = []
    for name, s in splits.items():
        if s is None:
            continue
        digests = content_hashes([Path(p) for p in s.paths])
        items += [(name, p, classes[int(l)], d) for p, l, d in zip(s.paths, s.labels.tolist(), digests)]
    return find_duplicates(items, "images")


def text_digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def text_duplicates(splits: dict[str, object], classes: list[str] | None) -> dict:
    """find_duplicates over the TextSets of a text fit: the same text (exact characters) in two
    splits, or under two classes. Rows are named file:line, as the readers' errors name them."""
    items = []
    for name, s in splits.items():
        texts = getattr(s, "texts", None)
        if texts is None:  # numeric sequences: no text to compare
            continue
        lines = getattr(s, "lines", None) or list(range(1, len(texts) + 1))
        labels = s.labels.tolist()
        items += [(name, f"{s.path}:{line}", classes[int(l)] if classes else None, text_digest(t))
                  for t, l, line in zip(texts, labels, lines)]
    return find_duplicates(items, "texts")
