"""Tests for tuneforge.evaluate: metrics against hand computations, and the written report."""

from __future__ import annotations

import html
import io
import json
import re

import numpy as np
import pytest
import torch
from rich.console import Console

from tuneforge.core.metrics import classification_metrics
from tuneforge.core.report import print_summary, write_report

CLASSES = ["<b>cat&dog</b>", "bird", "fish", "frog", "horse", "ship", "truck", "absent"]


def make_logits(n: int = 200, c: int = len(CLASSES), absent: int | None = 7, seed: int = 0):
    """Random logits whose argmax equals the target for exactly 70% of rows."""
    rng = np.random.default_rng(seed)
    pool = [k for k in range(c) if k != absent]
    targets = rng.choice(pool, size=n)
    logits = rng.normal(size=(n, c))
    correct = np.zeros(n, dtype=bool)
    correct[rng.permutation(n)[: int(0.7 * n)]] = True
    for i in range(n):
        if correct[i]:
            logits[i, targets[i]] = logits[i].max() + 1.0 + rng.random()
        else:
            wrong = (targets[i] + 1 + rng.integers(c - 1)) % c
            logits[i, wrong] = logits[i].max() + 1.0 + rng.random()
    return logits, targets, correct


def test_accuracy_confusion_and_loss_match_hand_computation():
    logits, targets, correct = make_logits()
    m = classification_metrics(logits, targets, CLASSES)
    n = len(targets)
    assert m["n"] == n
    assert m["accuracy"] == pytest.approx(correct.mean()) == pytest.approx(0.7)
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (len(CLASSES), len(CLASSES))
    assert cm.sum() == n
    assert np.trace(cm) == correct.sum()
    assert m["top5_accuracy"] >= m["accuracy"]

    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    assert m["loss"] == pytest.approx(-logp[np.arange(n), targets].mean())


def test_per_class_supports_and_absent_class():
    logits, targets, _ = make_logits()
    m = classification_metrics(logits, targets, CLASSES)
    assert list(m["per_class"]) == CLASSES
    for k, name in enumerate(CLASSES):
        assert m["per_class"][name]["support"] == int((targets == k).sum())
    assert m["per_class"]["absent"]["support"] == 0
    assert sum(m["confusion_matrix"][7]) == 0  # the absent class still has a (zero) row
    assert 0.0 <= m["macro_f1"] <= 1.0


def test_torch_input_json_serialisable_and_no_top5_for_few_classes():
    logits, targets, _ = make_logits(n=50, c=4, absent=None)
    m = classification_metrics(torch.tensor(logits, dtype=torch.float32), torch.tensor(targets),
                               ["a", "b", "c", "d"])
    assert "top5_accuracy" not in m
    assert json.loads(json.dumps(m)) == m  # plain Python types only


def test_loss_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    m = classification_metrics(logits, np.array([0, 0]), ["a", "b"])
    assert np.isfinite(m["loss"]) and m["loss"] == pytest.approx(500.0)


def test_empty_split_raises():
    with pytest.raises(ValueError, match="empty"):
        classification_metrics(np.zeros((0, 3)), np.zeros(0, dtype=int), ["a", "b", "c"])


def _full_report():
    logits, targets, _ = make_logits(n=60)
    test = classification_metrics(logits, targets, CLASSES)
    report = {
        "model": "efficientnet_lite0", "classes": CLASSES,
        "val": classification_metrics(*make_logits(n=40, seed=1)[:2], CLASSES),
        "test": test, "best_epoch": np.int64(3), "epochs_run": 5,
        "stopped_because": "patience", "wall_s": np.float32(123.4),
        "data": {"train": 900, "val": 40, "test": 60,
                 "skipped": [{"path": "imgs/<bad>&.jpg", "reason": "cannot identify image"}]},
        "config": {"lr": 1e-3, "batch_size": 32, "url_note": "see https://example.com"},
    }
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e, "train_accuracy": 0.5 + e / 20,
                "val_accuracy": 0.45 + e / 20, "lr": 1e-3 * 0.5 ** e, "images_per_s": 400.0 + e}
               for e in range(1, 6)]
    rng = np.random.default_rng(2)
    examples = {"images": rng.integers(0, 256, size=(60, 3, 32, 32), dtype=np.uint8),
                "logits": logits, "targets": targets,
                "paths": [f"data/test/img_{i}<x>.png" for i in range(60)]}
    return report, history, examples


def test_write_report_creates_all_files_and_safe_html(tmp_path):
    report, history, examples = _full_report()
    paths = write_report(tmp_path, report, history, examples)
    for key, name in [("json", "report.json"), ("html", "report.html"),
                      ("confusion_matrix", "plots/confusion_matrix.png"),
                      ("learning_curves", "plots/learning_curves.png"),
                      ("worst_errors", "plots/worst_errors.png")]:
        assert paths[key] == tmp_path / name
        assert paths[key].stat().st_size > 0
    assert paths["confusion_matrix"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with open(paths["json"]) as f:
        loaded = json.load(f)
    assert loaded["test"]["accuracy"] == report["test"]["accuracy"]
    assert loaded["best_epoch"] == 3

    page = paths["html"].read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<link" not in page and "<script" not in page
    assert html.escape("<b>cat&dog</b>") in page
    assert "<b>cat&dog</b>" not in page
    assert "imgs/<bad>" not in page and html.escape("imgs/<bad>&.jpg") in page
    # learning curves + confusion matrix + one tile per error (at most 24), all inlined
    n_errors = int(60 - round(report["test"]["accuracy"] * 60))
    assert page.count('src="data:image/png;base64,') == 2 + min(24, n_errors)
    assert "<details>" in page


def test_report_with_only_test_split(tmp_path):
    logits, targets, _ = make_logits(n=30)
    report = {"classes": CLASSES, "test": classification_metrics(logits, targets, CLASSES)}
    paths = write_report(tmp_path, report)
    assert set(paths) == {"json", "html", "confusion_matrix"}
    page = paths["html"].read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "Per-class" in page


def test_no_errors_means_no_worst_errors_plot(tmp_path):
    targets = np.array([0, 1, 2, 1])
    logits = np.eye(3)[targets] * 5
    report = {"classes": ["a", "b", "c"], "val": classification_metrics(logits, targets, ["a", "b", "c"])}
    examples = {"images": np.zeros((4, 3, 8, 8), np.uint8), "logits": logits, "targets": targets,
                "paths": ["a.png"] * 4}
    paths = write_report(tmp_path, report, history=[{"epoch": 1, "train_loss": 0.3}], examples=examples)
    assert "worst_errors" not in paths and "learning_curves" in paths


def test_print_summary_renders_rows_and_html_path(tmp_path):
    report, _, _ = _full_report()
    report["html_path"] = str(tmp_path / "report.html")
    buf = io.StringIO()
    print_summary(report, console=Console(file=buf, width=200, color_system=None))
    out = buf.getvalue()
    assert "val" in out and "test" in out and "<b>cat&dog</b>" in out
    assert f"{100 * report['test']['accuracy']:.1f}%" in out
    assert "report.html" in out
