"""The classic baseline in every report (core/baseline.py): trained beside text, image and
sequence fits on the same split, shown in report.json / report.html / the console summary,
warned about when it wins on validation, skipped with --no-baseline, recomputed on resume."""
from __future__ import annotations

import csv
import html
import io
import json

import numpy as np
import pytest
import torch

import tuneforge
from conftest import DATASETS, ctrl_c_in_epoch
from tuneforge.core import baseline as bl
from tuneforge.core import probe
from tuneforge.core.report import print_summary
from tuneforge.errors import ConfigError

QUICK = dict(progress=False, tensorboard=False, threads=2)
# a tiny GRU that one epoch at this rate leaves untrained: the case where the baseline wins
WEAK_GRU = dict(model="gru", embed_dim=16, hidden_size=16, num_layers=1, max_length=24, batch_size=32, lr=1e-6,
                text_column="text", label_column="category", **QUICK)
IMAGE = dict(cache_dir="", **QUICK)


@pytest.fixture(scope="module")
def banking5(tmp_path_factory):
    """5 Banking77 intents: 40 training and 20 test questions each (real data)."""
    src = DATASETS / "banking77"
    if not src.is_dir():
        pytest.fail(f"real test data missing: {src}")
    keep = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked"]
    dst = tmp_path_factory.mktemp("banking5")
    for split, n in (("train", 40), ("test", 20)):
        rows = list(csv.DictReader(open(src / f"{split}.csv", newline="", encoding="utf-8")))
        chosen = [r for c in keep for r in [r for r in rows if r["category"] == c][:n]]
        with open(dst / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["text", "category"])
            w.writeheader()
            w.writerows(chosen)
    return dst


def test_text_fit_reports_the_tfidf_baseline_and_warns_when_it_wins(banking5, tmp_path):
    run = tuneforge.fit(data=str(banking5), epochs=1, val_fraction=0.25, out=str(tmp_path / "r"), **WEAK_GRU)
    saved = json.loads((run.run_dir / "report.json").read_text())
    b = saved["baseline"]
    assert b["name"] == "tfidf" and b["description"].startswith("TF-IDF word 1-2-grams + linear SVM")
    assert b["val"]["n"] == 50 and b["test"]["n"] == 100 and b["seconds"] < 30
    # 5 classes (chance 20%): TF-IDF on the real questions is far above it, the untrained GRU is not
    assert b["val"]["accuracy"] >= 0.6 and b["test"]["accuracy"] >= 0.6 and b["test"]["macro_f1"] >= 0.55
    assert b["model"]["val"]["accuracy"] == saved["val"]["accuracy"] < b["val"]["accuracy"]
    assert b["winner_on_val"] == "baseline" and b["margin"] == pytest.approx(
        100 * (b["val"]["accuracy"] - saved["val"]["accuracy"]), abs=0.01)
    assert b["message"].startswith("The baseline (TF-IDF word 1-2-grams + linear SVM, ")
    assert f"beats this model on validation by {b['margin']:.1f} points" in b["message"] and "--model tfidf" in b["message"]
    assert b["message"] in saved["warnings"]
    page = (run.run_dir / "report.html").read_text()
    assert "Model vs baseline" in page and html.escape(b["message"], quote=True) in page
    out = io.StringIO()
    from rich.console import Console
    print_summary(saved, Console(file=out, width=400))
    assert f"Baseline: {b['message']}" in out.getvalue()

    off = tuneforge.fit(data=str(banking5), epochs=1, val_fraction=0.25, baseline=False, out=str(tmp_path / "off"), **WEAK_GRU)
    report = json.loads((off.run_dir / "report.json").read_text())
    assert "baseline" not in report and report["warnings"] == [] and report["config"]["baseline"] is False
    assert "Model vs baseline" not in (off.run_dir / "report.html").read_text()
    assert report["val"] == saved["val"]  # the baseline changes nothing of the model's fit


def test_a_resumed_run_computes_the_same_baseline_again(banking5, tmp_path, monkeypatch):
    restore = ctrl_c_in_epoch(monkeypatch, 1)
    cut = tuneforge.fit(data=str(banking5), epochs=2, out=str(tmp_path / "cut"), **WEAK_GRU)
    assert cut.report["stopped_because"] == "interrupted" and "baseline" in cut.report
    restore()
    resumed = tuneforge.fit(resume=str(tmp_path / "cut"), progress=False)
    assert resumed.report["epochs_run"] == 2
    for key in ("val", "test", "description"):
        assert resumed.report["baseline"][key] == cut.report["baseline"][key]


def test_tfidf_is_its_own_baseline_and_refuses_the_flag(banking5, tmp_path):
    with pytest.raises(ConfigError, match="--baseline is not read when fitting tfidf data"):
        tuneforge.fit(data=str(banking5), model="tfidf", baseline=False, text_column="text", label_column="category",
                      out=str(tmp_path / "t"), **QUICK)


def _counting(monkeypatch) -> list[int]:
    """Count the images the baseline passes through a backbone (core/probe.pooled_features'
    extract_features: the fit's own passes call core/models/base's directly)."""
    seen: list[int] = []
    real = probe.extract_features

    def counted(model, images, *a, **k):
        seen.append(len(images))
        return real(model, images, *a, **k)

    monkeypatch.setattr(probe, "extract_features", counted)
    return seen


def test_frozen_image_fit_probes_its_cached_features_without_another_pass(cifar3, tmp_path, monkeypatch):
    seen = _counting(monkeypatch)
    run = tuneforge.fit(data=str(cifar3), model="efficientnet_lite0", image_size=32, freeze="backbone", augment="flip", epochs=1,
                        batch_size=32, val_fraction=0.2, out=str(tmp_path / "r"), **IMAGE)
    assert seen == []  # the fit's cached features, no forward pass of the baseline's own
    b = json.loads((run.run_dir / "report.json").read_text())["baseline"]
    assert b["name"] == "linear probe" and "efficientnet_lite0" in b["description"]
    assert "cached features" in b["note"] and b["seconds"] < 20
    # 3 classes (chance 33%): ImageNet features separate airplanes, frogs and trucks
    assert b["val"]["accuracy"] >= 0.6 and b["test"]["accuracy"] >= 0.6 and b["test"]["n"] == 90
    assert b["winner_on_val"] in ("model", "baseline", "tie") and not b["same_kind"]


def test_from_scratch_image_fit_probes_the_packaged_backbone_at_its_own_size(cifar3, tmp_path, monkeypatch):
    seen = _counting(monkeypatch)
    kw = dict(data=str(cifar3), model="seed-cnn", epochs=1, batch_size=32, **IMAGE)
    run = tuneforge.fit(out=str(tmp_path / "r"), **kw)
    assert sorted(seen) == [18, 90, 162]  # one pass over train, val and test (under the caps)
    b = run.report["baseline"]
    assert "efficientnet_lite0" in b["description"] and "at 32px" in b["note"] and b["test"]["accuracy"] >= 0.6
    off = tuneforge.fit(out=str(tmp_path / "off"), baseline=False, **kw)
    assert off.report["val"] == run.report["val"]  # the probe's model does not move the fit's random state


def test_probe_caps_the_training_rows_per_class_and_says_so():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 300)
    x = rng.normal(size=(600, 8)) + y[:, None] * 2.0
    b = bl.probe_baseline((x, y), {"val": (x[:100], y[:100])}, 2, "net")
    assert f"{2 * bl.PROBE_PER_CLASS} of 600 training images" in b.note and b.val["accuracy"] > 0.9
    keep = bl.stratified_cap(y, 100, 0)
    assert len(keep) == 100 and np.bincount(y[keep]).tolist() == [50, 50]


def test_sequence_baselines_and_a_regression_comparison():
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randn(int(torch.randint(5, 20, (1,), generator=g)), 2, generator=g) for _ in range(200)]
    y_cls = np.array([int(s[-1, 0] > 0) for s in seqs])
    y_reg = np.array([float(s[:, 1].mean()) for s in seqs])
    tr, va = (seqs[:150], seqs[150:])
    c = bl.window_baseline((tr, y_cls[:150]), {"val": (va, y_cls[150:])}, regression=False, num_classes=2, length=8)
    assert c.val["accuracy"] > 0.9  # the last value decides the class
    r = bl.window_baseline((tr, y_reg[:150]), {"val": (va, y_reg[150:])}, regression=True, length=8,
                           unscale=lambda v: v * 10)
    assert r.val["rmse"] < 0.1 * 10 * y_reg.std()  # the mean is one of its features
    report = {"val": {"rmse": 100 * r.val["rmse"], "mae": 1.0, "n": 50}}
    warned: list[str] = []
    out = bl.compare(report, r, warned.append)
    assert out["winner_on_val"] == "baseline" and out["metric"] == "rmse" and warned == [out["message"]]
    assert out["message"].startswith("The baseline (ridge regression") and "RMSE" in out["message"]


def test_image_text_baseline_is_tfidf_on_the_text_column_of_the_same_rows(banking5):
    from types import SimpleNamespace
    from tuneforge.tasks.multimodal.fit import train_baseline

    rows = list(csv.DictReader(open(banking5 / "train.csv", newline="", encoding="utf-8")))
    classes = sorted({r["category"] for r in rows})
    table = SimpleNamespace(texts=[r["text"] for r in rows[:-1]] + [None])  # a row without text reads as ""
    y = torch.tensor([classes.index(r["category"]) for r in rows])
    idx = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))
    splits = {"train": (table, idx[:150], y[idx[:150]]), "val": (table, idx[150:], y[idx[150:]])}
    cfg = SimpleNamespace(baseline=True, text_column="text", seed=0)
    b = train_baseline(cfg, splits, len(classes))
    assert b.name == "tfidf" and b.val["n"] == 50 and b.val["accuracy"] >= 0.6 and b.test is None
    assert train_baseline(SimpleNamespace(baseline=False), splits, len(classes)) is None
    empty = SimpleNamespace(texts=[None] * len(rows))
    none = train_baseline(cfg, {"train": (empty, idx[:150], y[idx[:150]])}, len(classes))
    assert none["skipped"] == "the training rows' 'text' column holds no text"
