"""Unlabeled data (issue 5): unlabeled folders, views, self-supervised pretraining, and the
semi-supervised strategies, each learning on a tiny real CIFAR-10 subset through the one engine."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tuneforge
from tuneforge.core.augment.views import RAND_OPS, rand_augment, ssl_view, strong_view, weak_view
from tuneforge.cli import main
from tuneforge.core.data.unlabeled import SemiLoader, load_unlabeled, scan_unlabeled
from tuneforge.core.strategies.semi import FixMatch, PixelViews, SemiModel
from tuneforge.errors import DataError

from conftest import DATASETS, ctrl_c_in_epoch

QUICK = dict(progress=False, tensorboard=False, threads=1, workers=1, cache_dir="")


@pytest.fixture(scope="module")
def unlabeled_dir(cifar3, tmp_path_factory) -> Path:
    """Nested unlabeled folder: other images of cifar3's classes, plus 'cat' and 'deer', which
    the labelled set does not have (pseudo-labels must cope with them)."""
    root = tmp_path_factory.mktemp("unl")
    for c in ["airplane", "frog", "truck", "cat", "deer"]:
        d = root / "batch1" / c[:2] if c in ("cat", "deer") else root / "batch2" / "deeper"
        d.mkdir(parents=True, exist_ok=True)
        for f in sorted((DATASETS / "cifar10" / "train" / c).iterdir())[100:100 + (40 if c in ("cat", "deer") else 120)]:
            os.symlink(f, d / f"{c}_{f.name}")
    return root


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_unlabeled_folder_is_scanned_at_any_depth_labels_ignored(tmp_path):
    _png(tmp_path / "u" / "a.png", 10)
    _png(tmp_path / "u" / "x" / "y" / "b.png", 20)
    _png(tmp_path / "u" / ".hidden" / "c.png", 30)
    (tmp_path / "u" / "notes.txt").write_text("not an image")
    files = scan_unlabeled(tmp_path / "u")
    assert [f.name for f in files] == ["a.png", "b.png"]
    s = load_unlabeled(tmp_path / "u", 8, cache_dir="", workers=1)
    assert s.images.shape == (2, 3, 8, 8) and s.images[1, 0, 0, 0] == 20
    # validation images are left out; a test image in the pool is refused by name
    s = load_unlabeled(tmp_path / "u", 8, cache_dir="", workers=1, exclude={str((tmp_path / "u" / "a.png").resolve())})
    assert len(s) == 1
    with pytest.raises(DataError, match="b.png"):
        load_unlabeled(tmp_path / "u", 8, cache_dir="", workers=1, forbid={str((tmp_path / "u" / "x" / "y" / "b.png").resolve())})
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="empty"):
        scan_unlabeled(tmp_path / "empty")


def test_views_draw_per_image_stay_in_range_and_are_reproducible():
    x = torch.rand(1, 3, 32, 32).expand(64, 3, 32, 32).contiguous()  # 64 copies of one image
    for view in (ssl_view, weak_view, strong_view):
        a = view(x, torch.Generator().manual_seed(1))
        b = view(x, torch.Generator().manual_seed(1))
        assert a.shape == x.shape and torch.equal(a, b)
        assert 0 <= a.min() and a.max() <= 1
        distinct = len({tuple(v.flatten()[:50].tolist()) for v in a})
        assert distinct > 32, view.__name__  # drawn per image, not once for the batch
    for name, op in RAND_OPS.items():
        out = op(x[:8], torch.rand(8), torch.Generator().manual_seed(0))
        assert out.shape == (8, 3, 32, 32) and 0 <= out.min() and out.max() <= 1, name
    assert not torch.equal(rand_augment(x[:8], torch.Generator().manual_seed(0)), x[:8])


def test_distribution_alignment_evens_out_pseudo_labels_and_is_checkpointed():
    # Half the batch is sure of class 0, half torn between 0 and 1: unaligned, every pseudo-label
    # is 0; aligned by the running mean of predictions, the torn half goes to the rarer class 1.
    probs = torch.tensor([[0.8, 0.15, 0.05]] * 50 + [[0.5, 0.4, 0.1]] * 50)
    model = SemiModel(torch.nn.Identity(), num_classes=3)
    plain = FixMatch(None, PixelViews(), 3, align=False)
    aligned = FixMatch(None, PixelViews(), 3, align=True)
    assert torch.equal(plain._aligned(model, probs), probs)
    for _ in range(500):
        p = aligned._aligned(model, probs)
    assert torch.bincount(p.argmax(1), minlength=3).tolist() == [50, 50, 0]
    assert torch.allclose(p.sum(1), torch.ones(100))
    assert torch.allclose(model.state_dict()["unlabeled_dist"], probs.mean(0), atol=0.01)


def test_semi_loader_order_is_a_function_of_seed_and_epoch():
    x, y, u = torch.arange(10).view(10, 1), torch.arange(10), torch.arange(100).view(100, 1)
    loader = SemiLoader(x, y, u, batch_size=4, mu=3, steps=8, seed=5)  # 8 steps: 96 of the 100 unlabeled
    first = [(b[0][1].flatten().tolist(), b[1].tolist()) for b in loader.epoch(1)]
    again = [(b[0][1].flatten().tolist(), b[1].tolist()) for b in SemiLoader(x, y, u, 4, 3, steps=8, seed=5).epoch(1)]
    assert first == again
    seen_u = [i for b in first for i in b[0]]
    assert len(set(seen_u)) == len(seen_u) == 96  # no unlabeled image twice within a pass
    assert set(i for b in first for i in b[1]) == set(range(10))  # the labelled set cycles
    assert first != [(b[0][1].flatten().tolist(), b[1].tolist()) for b in loader.epoch(2)]


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_pretrain_learns_and_fit_init_loads_the_backbone(method, cifar3, tmp_path):
    run = tuneforge.pretrain(data=str(cifar3 / "train"), method=method, model="fast-cnn", epochs=6, batch_size=60,
                             lr=0.1, warmup_epochs=0, probe=str(cifar3), probe_per_class=30, out=str(tmp_path / "pt"),
                             **QUICK)
    history = [json.loads(line) for line in (tmp_path / "pt" / "metrics.jsonl").read_text().splitlines()]
    losses = [h["train_loss"] for h in history]
    # the views' agreement improves: NT-Xent from ~log(119) = 4.78; BYOL's 2 - 2cos from ~2
    assert len(losses) == 6 and losses[-1] < losses[0] - (0.4 if method == "simclr" else 0.2), losses
    probe = run.report["probe"]
    # measured before training and after every epoch (on 180 images, BYOL's may still fall: no threshold here)
    assert 0 < probe["before"] <= 1 and len(probe["per_epoch"]) == 6 and probe["after"] == probe["per_epoch"][-1]
    assert run.backbone_path.is_file() and json.loads((tmp_path / "pt" / "pretrain.json").read_text())["model"] == "fast-cnn"
    # fit --init RUN starts from exactly these weights (and skips fast-cnn's data-dependent init)
    from safetensors.torch import load_file
    saved = load_file(str(run.backbone_path))
    fit = tuneforge.fit(data=str(cifar3), model="fast-cnn", init=str(tmp_path / "pt"), freeze="backbone", augment="none",
                        epochs=1, out=str(tmp_path / "fit"), **QUICK)
    for k, v in fit.model.backbone.state_dict().items():
        assert torch.equal(v, saved[k]), k
    with pytest.raises(tuneforge.errors.ConfigError, match="--model fast-cnn"):
        tuneforge.fit(data=str(cifar3), model="seed-cnn", init=str(tmp_path / "pt"), out=str(tmp_path / "x"), **QUICK)


@pytest.mark.parametrize("method", ["fixmatch", "pseudo-label", "mean-teacher"])
def test_semi_supervised_fit_learns_from_few_labels(method, cifar3, unlabeled_dir, tmp_path):
    run = tuneforge.fit(data=str(cifar3), model="fast-cnn", labels_per_class=10, unlabeled=str(unlabeled_dir),
                        semi=method, semi_threshold=0.8, epochs=8, semi_steps=10, batch_size=16, semi_mu=2,
                        optimizer="sgd", lr=0.05, val_fraction=0, label_smoothing=0.1, out=str(tmp_path / method),
                        **QUICK)
    r = run.report
    assert r["test"]["accuracy"] > 0.5, r["test"]["accuracy"]  # chance is 1/3
    semi = r["semi"]
    assert semi["method"] == method and semi["labelled_images"] == 30 and semi["unlabeled_images"] == 440
    assert semi["steps_per_epoch"] == 10 and r["epochs_run"] == 8
    assert set(semi["pseudo_labels_per_class"]) == {"airplane", "frog", "truck"}
    assert sum(semi["pseudo_labels_per_class"].values()) > 0
    split = json.loads((tmp_path / method / "split.json").read_text())
    assert len(split["train"]) == 30  # the labelled files used are saved
    assert len(json.loads((tmp_path / method / "unlabeled.json").read_text())["files"]) == 440


def test_semi_supervised_on_cached_frozen_features(cifar3, unlabeled_dir, tmp_path):
    """--freeze backbone: the unlabeled images are encoded once too, views are cached-feature views."""
    run = tuneforge.fit(data=str(cifar3), model="efficientnet_lite0", image_size=32, freeze="backbone", augment="flip",
                        labels_per_class=10, unlabeled=str(unlabeled_dir), semi="fixmatch", semi_threshold=0.7, epochs=10,
                        semi_steps=10, batch_size=16, semi_mu=4, lr=3e-3, val_fraction=0, out=str(tmp_path / "feat"), **QUICK)
    assert run.report["semi"]["views"] == "cached features"
    assert run.report["test"]["accuracy"] > 0.5, run.report["test"]["accuracy"]
    assert sum(run.report["semi"]["pseudo_labels_per_class"].values()) > 0


def test_semi_supervised_resume_is_exact(cifar3, unlabeled_dir, tmp_path, monkeypatch):
    kw = dict(data=str(cifar3), model="fast-cnn", labels_per_class=5, unlabeled=str(unlabeled_dir), semi="mean-teacher",
              ema=0.9, epochs=3, semi_steps=3, batch_size=8, semi_mu=2, val_fraction=0, patience=0, **QUICK)
    full = tuneforge.fit(out=str(tmp_path / "full"), **kw)
    restore = ctrl_c_in_epoch(monkeypatch, 2)
    tuneforge.fit(out=str(tmp_path / "cut"), **kw)
    restore()
    resumed = tuneforge.fit(resume=str(tmp_path / "cut"), progress=False)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert any(k.startswith("teacher.") for k in a["model"])  # the EMA teacher is checkpointed
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert resumed.report["semi"]["pseudo_labels_per_class"] == full.report["semi"]["pseudo_labels_per_class"]
    assert resumed.report["test"]["accuracy"] == full.report["test"]["accuracy"]


def test_unlabeled_settings_are_refused_by_name(cifar3, tmp_path, capsys):
    assert main(["fit", "--data", str(cifar3), "--semi", "fixmatch"]) == 2
    assert "--unlabeled" in capsys.readouterr().err
    assert main(["fit", "--data", str(cifar3), "--semi", "fixmatch", "--unlabeled", str(cifar3 / "test"),
                 "--out", str(tmp_path / "r"), "--cache-dir", ""]) == 2
    assert "test image" in capsys.readouterr().err  # test images never train, even unlabeled
    assert main(["fit", "--data", str(cifar3), "--semi", "mean-teacher", "--semi-align", "--unlabeled", str(cifar3)]) == 2
    assert "--semi-align" in capsys.readouterr().err
    assert main(["fit", "--data", str(cifar3), "--init", str(tmp_path / "nope")]) == 2
    assert "--init" in capsys.readouterr().err
    assert main(["pretrain", "--data", str(cifar3), "--model", "minilm"]) == 2
    assert "--model minilm" in capsys.readouterr().err
