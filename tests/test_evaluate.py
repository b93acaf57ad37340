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


# --- report.html sections (classification, regression, retrieval, probe; registry) ---

def _page(paths) -> str:
    return paths["html"].read_text(encoding="utf-8")


def test_classification_report_renders_as_before(tmp_path):
    report, history, examples = _full_report()
    page = _page(write_report(tmp_path, report, history, examples))
    for title in ("Test accuracy", "Val accuracy", "Macro F1", "Best epoch", "Wall time", "Skipped files", "Metrics",
                  "Confusion matrix (test, row-normalised)", "Per-class metrics (test)", "Most confident mistakes",
                  "Learning curves", "Skipped files (1)", "Resolved config"):
        assert title in page, title
    assert f"{100 * report['test']['accuracy']:.1f}%" in page and f"{100 * report['val']['accuracy']:.1f}%" in page
    assert page.index("Test accuracy") < page.index("Confusion matrix") < page.index("Skipped files (1)")
    # the other kinds' sections stay out of a classification report
    for other in ("RMSE", "Recall@k", "Probe", "Predicted vs true"):
        assert other not in page, other


def _regression_report():
    rng = np.random.default_rng(0)
    target = rng.normal(10, 3, size=50)
    pred = target + rng.normal(0, 0.5, size=50)
    report = {"model": "gru", "task": "regression", "classes": [], "best_epoch": 4, "epochs_run": 4,
              "stopped_because": "max_epochs", "data": {"train": 200, "val": 20, "test": 50, "skipped": []},
              # as tasks/text/fit.py writes them
              "val": {"n": 20, "rmse": 0.61234, "mae": 0.48771, "loss": 0.0412, "r2": 0.9612},
              "test": {"n": 50, "rmse": 0.54321, "mae": 0.43219, "loss": 0.0321, "r2": 0.9734}}
    return report, {"predictions": pred, "targets": target, "split": "test"}


def test_regression_section_shows_rmse_mae_r2_and_predicted_vs_true(tmp_path):
    report, examples = _regression_report()
    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e} for e in range(1, 5)]
    paths = write_report(tmp_path, report, history, examples)
    assert {"predicted_vs_true", "learning_curves"} <= set(paths) and "confusion_matrix" not in paths
    assert paths["predicted_vs_true"].read_bytes()[:4] == b"\x89PNG"
    page = _page(paths)
    for value in ("0.5432", "0.4322", "0.6123", "0.4877", "0.973", "0.961", "0.0321"):
        assert value in page, value
    assert "Test RMSE" in page and "Predicted vs true (test)" in page and "Test accuracy" not in page
    # without predictions: the numbers, no plot
    paths = write_report(tmp_path / "noplot", report)
    assert "predicted_vs_true" not in paths and "0.5432" in _page(paths)


def test_regression_print_summary_shows_rmse():
    report, _ = _regression_report()
    buf = io.StringIO()
    print_summary(report, console=Console(file=buf, width=200, color_system=None))
    assert "RMSE" in buf.getvalue() and "0.5432" in buf.getvalue()


def _retrieval_report():
    from tuneforge.tasks.align.workflow import retrieval_metrics
    g = torch.Generator().manual_seed(0)
    report = {"model": "efficientnet_lite0 + minilm", "task": "image-text-alignment", "best_epoch": 3, "epochs_run": 5,
              "stopped_because": "patience", "temperature": 0.0523, "retrieval": {},
              "data": {"table": "captions.csv", "rows": 500, "images": {"train": 80, "val": 10, "test": 10},
                       "skipped": []}}
    for split, n in (("val", 30), ("test", 40)):  # 2 captions per image, as Flickr8k's 5
        images = torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=-1)
        owner = torch.arange(n).repeat(2)
        texts = torch.nn.functional.normalize(images[owner] + 0.9 * torch.randn(2 * n, 16, generator=g), dim=-1)
        report["retrieval"][split] = retrieval_metrics(images, texts, owner)
    return report


def test_retrieval_section_shows_recall_at_k_per_split_and_direction(tmp_path):
    report = _retrieval_report()
    history = [{"epoch": e, "train_loss": 3 / e, "val_loss": 3.2 / e} for e in range(1, 6)]
    page = _page(write_report(tmp_path, report, history))
    assert "Retrieval (Recall@k)" in page and "text → image" in page and "image → text" in page
    for split in ("val", "test"):
        for direction in ("text_to_image", "image_to_text"):
            r = report["retrieval"][split][direction]
            for k in (1, 5, 10):
                assert f"{100 * r[f'R@{k}']:.1f}%" in page, (split, direction, k)
            assert f"{r['median_rank']:.1f}" in page
    assert "Test text → image R@5" in page and "0.0523" in page and "80 train images" in page
    assert "Test accuracy" not in page


def _probe_history(key: str, values: list[float]) -> list[dict]:
    return [{"epoch": e + 1, "train_loss": 2.0 - e / 10, key: v} for e, v in enumerate(values)]


def test_probe_section_image_pretraining(tmp_path):
    # as tasks/pretrain/image.py writes it
    report = {"kind": "pretrain", "method": "simclr", "model": "fast-cnn", "image_size": 32, "start": "random init",
              "data": {"unlabeled": 5000, "folder": "unlabeled/", "skipped": [], "decode_s": 1.2},
              "epochs_run": 3, "stopped_because": "max_epochs",
              "probe": {"folder": "labelled/", "knn_k": 20, "before": 0.3125, "after": 0.5375,
                        "per_epoch": [0.4125, 0.4875, 0.5375]},
              "backbone": "runs/p/backbone.safetensors", "config": {"method": "simclr"}, "fit_s": 10.0, "wall_s": 12.0}
    paths = write_report(tmp_path, report, _probe_history("probe_knn_accuracy", [0.4125, 0.4875, 0.5375]))
    assert "probe" in paths and paths["probe"].read_bytes()[:4] == b"\x89PNG"
    page = _page(paths)
    for value in ("31.2%", "41.2%", "48.8%", "53.8%"):
        assert value in page, value
    assert "kNN, k = 20" in page and "simclr pretraining" in page and "5000 unlabeled" in page
    assert "Probe per epoch" in page and "Test accuracy" not in page


def test_probe_section_mlm_heldout_loss(tmp_path):
    # as tasks/pretrain/text.py writes it
    heldout = {"texts": 120, "fraction": 0.05, "masked_tokens": 2345, "loss_before": 3.4567, "loss_after": 2.8765,
               "perplexity_before": float(np.exp(3.4567)), "perplexity_after": float(np.exp(2.8765))}
    report = {"kind": "pretrain", "method": "mlm", "model": "minilm", "max_length": 64, "start": "packaged weights",
              "data": {"texts": 2400, "train_texts": 2280, "file": "t.txt", "skipped": []},
              "epochs_run": 2, "steps": 140, "stopped_because": "max_epochs", "heldout": heldout,
              "probe": {"table": "sst2.tsv", "kind": "logistic regression on mean-pooled features",
                        "before": 0.7, "after": 0.75, "per_epoch": [0.73, 0.75]},
              "config": {}}
    history = [{"epoch": 1, "train_loss": 3.1, "heldout_mlm_loss": 3.0123, "probe_accuracy": 0.73},
               {"epoch": 2, "train_loss": 2.9, "heldout_mlm_loss": 2.8765, "probe_accuracy": 0.75}]
    page = _page(write_report(tmp_path, report, history))
    for value in ("3.4567", "3.0123", "2.8765", f"{np.exp(3.4567):.2f}", "70.0%", "73.0%", "75.0%"):
        assert value in page, value
    assert "logistic regression on mean-pooled features" in page and "held-out MLM loss" in page
    # held-out loss alone (no --probe)
    report["probe"] = None
    page = _page(write_report(tmp_path / "noprobe", report, history))
    assert "3.4567" in page and "2.8765" in page and "Probe before" not in page


def test_register_section_adds_a_kind_of_report(tmp_path):
    from tuneforge.core import report as R

    @R.register_section("test-only", lambda r: "custom" in r, order=20)
    def _custom(page: R.Page) -> str:
        path = page.plot("custom", lambda p: R.plot_learning_curves([{"epoch": 1, "x": 1.0}], p))
        return R._section("Custom", f"value {page.report['custom']}" + R._img(path, "custom"))

    try:
        with pytest.raises(ValueError, match="twice"):
            R.register_section("test-only", lambda r: True)(_custom)
        paths = write_report(tmp_path, {"custom": 42})
        assert "custom" in paths and "value 42" in _page(paths)
        assert "value" not in _page(write_report(tmp_path / "other", {"model": "x"}))
    finally:
        R.SECTIONS.pop("test-only")


def test_real_regression_run_writes_rmse_into_report_html(tmp_path):
    import random
    import tuneforge
    rnd = random.Random(0)
    rows = []
    for i in range(160):
        steps = [rnd.gauss(0, 1) for _ in range(rnd.randint(3, 12))]
        rows.append(f's{i},"{json.dumps(steps)}",{sum(steps):.4f}\n')
    (tmp_path / "train.csv").write_text("id,values,label\n" + "".join(rows[:120]))
    (tmp_path / "test.csv").write_text("id,values,label\n" + "".join(rows[120:]))
    run = tuneforge.fit(data=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv"), model="gru",
                        task="regression", sequence_column="values", epochs=2, batch_size=32, embed_dim=8,
                        hidden_size=8, num_layers=1, out=str(tmp_path / "run"), progress=False, tensorboard=False,
                        threads=1)
    page = (run.run_dir / "report.html").read_text(encoding="utf-8")
    test = run.report["test"]
    assert "r2" in test and f"{test['rmse']:.4g}" in page and f"{test['mae']:.4g}" in page
    assert (run.run_dir / "plots" / "predicted_vs_true.png").is_file() and "Predicted vs true (test)" in page


def test_precision_recall_f1_and_confusion_match_scikit_learn():
    """The report's metrics are scikit-learn's, including zero_division=0 for a class never
    predicted or never present."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    for c, n, seed in ((2, 7, 0), (len(CLASSES), 200, 1), (10, 500, 2)):
        logits, targets, _ = make_logits(n=n, c=c, absent=c - 1 if c > 2 else None, seed=seed)
        logits[:, 0] -= 100  # class 0 is never predicted
        m, preds, labels = classification_metrics(logits, targets, [str(i) for i in range(c)]), logits.argmax(1), list(range(c))
        macro = precision_recall_fscore_support(targets, preds, labels=labels, average="macro", zero_division=0)
        assert [m["macro_precision"], m["macro_recall"], m["macro_f1"]] == pytest.approx(list(macro[:3]))
        p, r, f, s = precision_recall_fscore_support(targets, preds, labels=labels, average=None, zero_division=0)
        for i in range(c):
            assert [m["per_class"][str(i)][k] for k in ("precision", "recall", "f1")] == pytest.approx([p[i], r[i], f[i]])
            assert m["per_class"][str(i)]["support"] == s[i]
        assert m["confusion_matrix"] == confusion_matrix(targets, preds, labels=labels).tolist()
