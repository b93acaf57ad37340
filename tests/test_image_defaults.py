"""Issue 16, problem 2: image defaults chosen from the data and the model. The input size comes
from the training images' own size (32 px photos are not upsampled to efficientnet_lite0's
224 px unless asked), and few images per class train the head on the frozen backbone; each
choice is said on the console with its reason, recorded in config.yaml and report.json, and
yields to a flag that is given."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import tuneforge
from tuneforge.cli import main
from tuneforge.config import FitConfig, build, with_recipe
from tuneforge.core.data.images import load_image_folder, peek_sides
from tuneforge.core.probe import linear_probe, probe_features
from tuneforge.core.models import model_spec
from tuneforge.tasks.image.fit import SMALL_DATA, choose_image_size, resolve

from conftest import cifar_subset

QUICK = dict(progress=False, tensorboard=False, threads=2)


def settings(given: dict) -> FitConfig:
    """The settings a fit resolves, as tuneforge.fit builds them from its keywords."""
    cfg = build(FitConfig, given).validate()
    resolve(cfg, set(given))
    return cfg


@pytest.fixture(scope="module")
def cifar_small(tmp_path_factory) -> Path:
    """3 CIFAR-10 classes (32x32 JPEGs), 20 train and 10 test images each."""
    return cifar_subset(tmp_path_factory.mktemp("cifar_small"), ["airplane", "frog", "truck"], {"train": 20, "test": 10})


def write_folders(root: Path, sides: list[tuple[int, int]], per_class: int = 3) -> Path:
    """Two classes of random PNGs, images cycling through the (width, height) sizes given."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            w, h = sides[i % len(sides)]
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


# ------------------------------------------------------------------- the image size

def test_32px_photos_train_at_64px_not_224_and_the_reason_is_said(cifar_small):
    cfg = settings({"data": str(cifar_small), "model": "efficientnet_lite0"})
    assert cfg.image_size == 64
    assert cfg.chosen["said"][0] == (
        "image size 64px: the training images' median shorter side is 32px, upsampled 2.0x: efficientnet_lite0's "
        "pretrained features need objects of at least 64px (its native 224px would cost 12x more per image; "
        "pass --image-size 32 or 224 to choose)")
    # from random init there are no pretrained features to feed: the data's own size
    scratch = settings({"data": str(cifar_small), "model": "efficientnet_lite0", "pretrained": False})
    assert scratch.image_size == 32 and "native 224px would upsample them 7x" in scratch.chosen["said"][0]


def test_an_explicit_image_size_wins(cifar_small):
    cfg = settings({"data": str(cifar_small), "model": "efficientnet_lite0", "image_size": 224})
    assert cfg.image_size == 224 and cfg.chosen["image_size"] == "224px: given (--image-size)"
    assert not any(line.startswith("image size") for line in cfg.chosen["said"])


def test_the_size_rule_caps_rounds_and_raises_only_where_the_model_needs_it():
    lite0, fast = model_spec("efficientnet_lite0"), model_spec("fast-cnn")
    # larger than the model's own: its native size
    assert choose_image_size("efficientnet_lite0", lite0, [375, 500, 333])[0] == 224
    # between: rounded down to the total stride, never up
    size, why = choose_image_size("efficientnet_lite0", lite0, [100, 100, 90])
    assert size == 96 and "median shorter side is 100px, rounded down to a multiple of 32" in why
    # smaller than the network takes: the one upsampling not asked for, said with its factor
    size, why = choose_image_size("efficientnet_lite0", lite0, [8, 8, 8])
    assert size == 32 and "below the 32px efficientnet_lite0 needs, so they are upsampled 4.0x" in why
    assert choose_image_size("fast-cnn", fast, [8])[0] == 9 and choose_image_size("fast-cnn", fast, [28])[0] == 28
    # pretrained: raised to the size its features need, never above the data's size otherwise
    assert choose_image_size("efficientnet_lite0", lite0, [32], pretrained=True)[0] == 64
    assert choose_image_size("efficientnet_lite0", lite0, [100], pretrained=True)[0] == 96
    assert choose_image_size("fast-cnn", fast, [28], pretrained=True)[0] == 28


def test_sizes_are_read_from_the_headers_shorter_side(tmp_path):
    root = write_folders(tmp_path / "d", [(48, 40), (40, 64), (300, 40)])
    (root / "a" / "broken.png").write_bytes(b"not an image")
    files = sorted(root.rglob("*.png"))
    assert sorted(peek_sides(files)) == [40] * 6  # the broken file is left out
    good = [f for f in files if f.name != "broken.png"]
    assert len(peek_sides(good, limit=3)) == 3 and peek_sides(good, limit=3, seed=1) == peek_sides(good, limit=3, seed=1)


def test_a_resumed_run_keeps_the_size_it_started_with(cifar_small, tmp_path, monkeypatch):
    out = tmp_path / "run"
    res = tuneforge.fit(data=str(cifar_small), model="efficientnet_lite0", epochs=1, out=str(out), **QUICK)
    assert yaml.safe_load((out / "config.yaml").read_text())["image_size"] == 64
    assert res.report["data"]["image_size"] == 64
    assert res.report["data"]["image_size_reason"].startswith("64px: the training images' median shorter side is 32px")
    # the size rule would now choose otherwise: the resumed run still trains at the size it recorded
    monkeypatch.setattr("tuneforge.tasks.image.fit.choose_image_size", lambda *a, **k: (96, "96px: changed"))
    res = tuneforge.fit(resume=str(out), epochs=2, **QUICK)
    assert res.report["data"]["image_size"] == 64 and res.report["epochs_run"] == 2


def test_a_fit_lists_the_class_folders_once(cifar_small, tmp_path, monkeypatch):
    """resolve() lists the training folder to choose the defaults; load_splits takes that listing
    (50,000 CIFAR-10 files take seconds to list) and lists anew only where resolve did not."""
    from tuneforge.tasks.image import fit as image_fit
    listed = []
    real = image_fit.scan_class_folders
    monkeypatch.setattr(image_fit, "scan_class_folders", lambda root: listed.append(Path(root)) or real(root))
    res = tuneforge.fit(data=str(cifar_small), model="seed-cnn", epochs=1, out=str(tmp_path / "r"), **QUICK)
    assert listed == [cifar_small / "train"] and res.report["data"]["train"] + res.report["data"]["val"] == 60
    tuneforge.fit(resume=str(tmp_path / "r"), epochs=2, **QUICK)  # resolve returns early on resume
    assert listed == [cifar_small / "train"] * 2


# ------------------------------------------------------------------- defaults by data size

def test_few_images_per_class_train_the_head_on_the_frozen_backbone_and_say_so(cifar_small):
    cfg = settings({"data": str(cifar_small), "model": "efficientnet_lite0"})
    assert (cfg.freeze, cfg.lr, cfg.augment, cfg.batch_size, cfg.head_init) == ("backbone", None, "flip", 16, "probe")
    assert (f"18 training images per class (under {SMALL_DATA}): training the head, started from the linear probe, on "
            "the frozen backbone's cached features (--freeze backbone --augment flip --batch-size 16 --head-init probe); "
            "pass --freeze none to fine-tune all layers") in cfg.chosen["said"]


def test_a_given_setting_wins_over_the_small_data_defaults(cifar_small):
    data = {"data": str(cifar_small), "model": "efficientnet_lite0"}
    full = settings({**data, "freeze": "none"})  # the default value, given: still the user's choice
    assert (full.freeze, full.lr, full.augment, full.batch_size, full.head_init) == ("none", None, "flip,crop=0.125", 64, "random")
    assert "small_data" not in full.chosen
    kept = settings({**data, "lr": 3e-3, "augment": "flip,crop=0.1"})
    assert (kept.freeze, kept.lr, kept.augment, kept.batch_size) == ("backbone", 3e-3, "flip,crop=0.1", 16)
    assert "(--freeze backbone --batch-size 16 --head-init probe)" in kept.chosen["small_data"]
    assert "cached" not in kept.chosen["small_data"]  # crop runs the frozen backbone every step


def test_small_data_defaults_only_for_a_pretrained_backbone_without_a_recipe(cifar_small, tmp_path):
    data = {"data": str(cifar_small), "model": "efficientnet_lite0"}
    bigger = cifar_subset(tmp_path / "big", ["airplane", "frog"], {"train": SMALL_DATA + 20})
    for given in ({"model": "fast-cnn"},  # trained from random init: nothing worth freezing
                  {"pretrained": False},
                  {"recipe": "balanced"},  # a recipe is a measured set of defaults of its own
                  {"data": str(bigger)}):  # enough images per class: the full fine-tune stays
        merged = {**data, **given}
        cfg = build(FitConfig, with_recipe(merged)).validate()
        resolve(cfg, set(merged))
        assert cfg.freeze == "none" and "small_data" not in cfg.chosen, given


def test_the_cli_passes_on_which_flags_were_given_and_says_the_choices(cifar_small, tmp_path, caplog):
    common = ["fit", "--data", str(cifar_small), "--epochs", "1", "--limit-per-class", "4", "--no-progress",
              "--no-tensorboard", "--threads", "2"]
    with caplog.at_level(logging.INFO, logger="tuneforge"):
        assert main(common + ["--out", str(tmp_path / "auto")]) == 0
    said = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("image size 64px: the training images' median shorter side is 32px") for m in said)
    assert any(m.startswith("4 training images per class (under 100): training the head") for m in said)
    assert any(m.startswith("head: started from the linear probe") for m in said)
    assert main(common + ["--out", str(tmp_path / "full"), "--freeze", "none"]) == 0
    auto = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())
    full = yaml.safe_load((tmp_path / "full" / "config.yaml").read_text())
    assert (auto["freeze"], auto["head_init"], auto["image_size"]) == ("backbone", "probe", 64)
    assert (full["freeze"], full["lr"], full["image_size"]) == ("none", None, 64)
    report = json.loads((tmp_path / "auto" / "report.json").read_text())
    assert report["defaults"]["settings"]["freeze"] == "backbone" and report["config"]["freeze"] == "backbone"


@pytest.mark.slow
def test_default_fit_on_40_images_per_class_reaches_the_frozen_linear_probe(tmp_path):
    """The issue's case: 40 CIFAR-10 images per class, 3 epochs, efficientnet_lite0. The defaults
    must do at least as well on test as the frozen-backbone linear probe of the same model on
    the same split (before: the full fine-tune, well below it)."""
    data = cifar_subset(tmp_path / "c", ["airplane", "automobile", "bird", "cat"], {"train": 40, "test": 100})
    default = tuneforge.fit(data=str(data), model="efficientnet_lite0", epochs=3, out=str(tmp_path / "default"), **QUICK)
    assert default.report["config"]["freeze"] == "backbone"
    # the probe: logistic regression to convergence on the same model's frozen features, at the
    # same size, on the very images the fit trained on (split.json) and the same test images
    size, classes = default.report["data"]["image_size"], default.report["classes"]
    split = json.loads((tmp_path / "default" / "split.json").read_text())
    sets = {}
    for name, root in (("train", data / "train"), ("test", data / "test")):
        items = [(root / rel, classes.index(Path(rel).parts[0])) for rel in split[name]] if name == "train" else None
        sets[name] = load_image_folder(root, size, classes=classes, items=items)
    feats = probe_features("efficientnet_lite0", size, {k: s.images for k, s in sets.items()})
    probe = linear_probe((feats["train"], sets["train"].labels.numpy()), {"test": (feats["test"], sets["test"].labels.numpy())})
    assert default.report["test"]["accuracy"] >= probe["test"] - 0.02, (default.report["test"]["accuracy"], probe)
    assert default.report["test"]["accuracy"] > 0.4  # well above chance (0.25)


@pytest.mark.parametrize("classes", [2, 4])
def test_the_probe_head_predicts_what_the_logistic_regression_predicts(classes):
    """The standardisation folded into the head's weights: the head on raw features gives the
    probe's predictions (binary: one score spread over two logits)."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from tuneforge.core.probe import init_head_from_probe

    g = torch.Generator().manual_seed(0)
    y = torch.arange(120) % classes
    x = torch.randn(120, 1, 16, generator=g) * 5 + 3 + 4 * y[:, None, None] * torch.linspace(-1, 1, 16)
    head = torch.nn.Linear(16, classes)
    acc = init_head_from_probe(head, x, y)
    flat = x[:, 0].numpy()
    ref = LogisticRegression(max_iter=3000).fit((flat - flat.mean(0)) / (flat.std(0) + 1e-6), y.numpy())
    ours = head(x[:, 0]).argmax(1).numpy()
    assert (ours == ref.predict((flat - flat.mean(0)) / (flat.std(0) + 1e-6))).all()
    assert acc == pytest.approx((ours == y.numpy()).mean()) and acc > 1.5 / classes
