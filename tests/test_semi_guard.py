"""Issue 16, problem 1: a semi-supervised epoch follows the labelled set (or --semi-steps), and
guard rails that say what happened: a validation set too small to select on, a semi-supervised
fit of too few steps (console and report.json / report.html "warnings")."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import tuneforge
from conftest import DATASETS
from tuneforge.core.data.unlabeled import SemiLoader
from tuneforge.core.engine import Engine
from tuneforge.core.run import MIN_VAL
from tuneforge.tasks.semi.setup import MIN_SEMI_STEPS, setup_warnings

QUICK = dict(progress=False, tensorboard=False, threads=2)
TINY_TEXT = dict(model="gru", embed_dim=16, hidden_size=16, num_layers=1, batch_size=16)


def test_semi_epoch_is_one_pass_over_the_labelled_set_unless_semi_steps():
    x, y, u = torch.arange(10).view(10, 1), torch.arange(10), torch.arange(300).view(300, 1)
    loader = SemiLoader(x, y, u, batch_size=4, mu=7, seed=3)
    assert len(loader) == 3  # ceil(10 / 4); the pool's 300 // 28 = 10 no longer sets it
    batches = list(loader.epoch(0))
    assert len(batches) == 3 and all(len(b[1]) == 4 and len(b[0][1]) == 28 for b in batches)
    assert set(i for b in batches for i in b[1].tolist()) == set(range(10))  # every labelled image
    # a pool smaller than an epoch's draw is reshuffled and drawn again, never a short batch
    small = SemiLoader(x, y, torch.arange(20).view(20, 1), batch_size=4, mu=7, seed=3)
    assert len(small) == 3 and all(len(b[0][1]) == 28 for b in small.epoch(1))
    assert len(SemiLoader(x, y, u, batch_size=4, mu=7, steps=7, seed=3)) == 7  # --semi-steps wins
    # resume: an epoch's batches are a function of (seed, epoch) only
    again = [b[1].tolist() for b in SemiLoader(x, y, u, 4, 7, seed=3).epoch(0)]
    assert again == [b[1].tolist() for b in batches]


def _cfg(**kw) -> SimpleNamespace:
    return SimpleNamespace(**{"epochs": 10, "batch_size": 64, "semi_mu": 7, "semi_steps": None, **kw})


def test_semi_setup_warnings_name_the_numbers_and_the_flag():
    # the README's quick start at the defaults: 225 labelled images, 4 steps an epoch, 40 in all
    cfg = _cfg()
    loader = SemiLoader(torch.zeros(225, 1), torch.zeros(225, dtype=torch.long), torch.zeros(500, 1), 64, 7)
    (msg,) = setup_warnings(cfg, loader, 225, 500)
    assert "only 40 steps" in msg and "10 epochs x 4 steps" in msg and "225 labelled" in msg
    assert f"--epochs {-(-MIN_SEMI_STEPS // 4)}" in msg
    # enough steps: nothing to say
    assert setup_warnings(_cfg(epochs=60), loader, 225, 500) == []
    # a --semi-steps that skips labelled images, and a pool drawn several times a step
    cfg = _cfg(epochs=100, semi_steps=2, semi_mu=7)
    loader = SemiLoader(torch.zeros(225, 1), torch.zeros(225, dtype=torch.long), torch.zeros(100, 1), 64, 7, steps=2)
    skip, pool = setup_warnings(cfg, loader, 225, 100)
    assert "--semi-steps 2 x --batch-size 64 = 128" in skip and "225" in skip
    assert "--semi-mu 7" in pool and "pool of 100" in pool and "lower --semi-mu to 1" in pool


@pytest.fixture
def texts(tmp_path) -> Path:
    """A two-class table a tiny GRU learns: 48 train rows, and a val.csv of 12 (too small)."""
    data = tmp_path / "texts"
    data.mkdir()
    rows = [f"{w} thing {i},{'p' if w == 'good' else 'n'}" for i in range(24) for w in ("good", "bad")]
    (data / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    (data / "val.csv").write_text("text,label\n" + "\n".join(rows[:12]) + "\n")
    return data


def test_tiny_validation_set_is_not_selected_on_and_says_so(texts, tmp_path, monkeypatch, caplog):
    # val_accuracy falls after epoch 1: with selection, patience 1 would stop at epoch 2 and
    # restore epoch 1; on 12 texts that is noise, so all epochs run and the last is kept
    real, calls = Engine.validate, {"n": 0}

    def falling(self, loader):
        calls["n"] += 1
        return {**real(self, loader), "val_accuracy": 1.0 / calls["n"]}
    monkeypatch.setattr(Engine, "validate", falling)
    with caplog.at_level(logging.INFO, logger="tuneforge"):
        run = tuneforge.fit(data=str(texts), epochs=3, patience=1, out=str(tmp_path / "r"), **TINY_TEXT, **QUICK)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    tiny = [m for m in said if m.startswith("validation set too small to select on: 12 texts, 6.0 per class")]
    assert tiny and f"at least {MIN_VAL}" in tiny[0] and "--val-fraction or --val" in tiny[0]
    r = run.report
    assert r["epochs_run"] == 3 and r["best_epoch"] == 3 and r["stopped_because"] == "max_epochs"
    assert not (tmp_path / "r" / "checkpoints" / "best.pt").exists()
    saved = json.loads((tmp_path / "r" / "report.json").read_text())
    assert saved["warnings"] == r["warnings"] and saved["warnings"][0] == tiny[0]
    html = (tmp_path / "r" / "report.html").read_text()
    assert html.index("Warnings (1)") < html.index("Learning curves") and "too small to select on" in html


def test_large_enough_validation_set_selects_without_warning(texts, tmp_path, caplog):
    rows = (texts / "train.csv").read_text().splitlines()
    (texts / "val.csv").write_text("\n".join(rows[:MIN_VAL + 1]) + "\n")  # header + 30 rows
    with caplog.at_level(logging.INFO, logger="tuneforge"):
        run = tuneforge.fit(data=str(texts), epochs=2, out=str(tmp_path / "r"), **TINY_TEXT, **QUICK)
    assert run.report["warnings"] == [] and "too small" not in caplog.text
    assert (tmp_path / "r" / "checkpoints" / "best.pt").exists()
    assert "Warnings" not in (tmp_path / "r" / "report.html").read_text()


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pool")
    for c in ["airplane", "frog", "truck"]:
        for f in sorted((DATASETS / "cifar10" / "train" / c).iterdir())[200:240]:
            os.symlink(f, root / f"{c}_{f.name}")
    return root


@pytest.mark.slow  # 69 s at load 9 on 2 cores
def test_semi_fit_of_too_few_steps_warns_in_console_and_report(cifar3, pool, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="tuneforge"):
        run = tuneforge.fit(data=str(cifar3), model="fast-cnn", labels_per_class=20, unlabeled=str(pool), semi="fixmatch",
                            epochs=2, batch_size=16, semi_mu=2, out=str(tmp_path / "r"), cache_dir="", **QUICK)
    r = run.report
    # 54 labelled (6 of the 60 went to validation), 16 a step: 4 steps an epoch, 8 in all
    assert r["semi"]["steps_per_epoch"] == 4 and r["semi"]["labelled_images"] == 54
    steps = [w for w in r["warnings"] if w.startswith("semi-supervised fit of only 8 steps")]
    assert steps and f"--epochs {-(-MIN_SEMI_STEPS // 4)}" in steps[0] and steps[0] in caplog.text
    assert any(w.startswith("validation set too small to select on: 6 images") for w in r["warnings"])
    assert r["best_epoch"] == r["epochs_run"] == 2
