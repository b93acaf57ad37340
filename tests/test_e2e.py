"""End to end on real CIFAR-10 JPEGs (3 classes, 60 train / 30 test each): it learns, it
reports, it predicts known classes, it resumes exactly, it refuses bad input by name."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import tuneforge
from tuneforge.cli import main
from conftest import ctrl_c_in_epoch
from tuneforge.errors import BundleError, DataError

CLASSES = ["airplane", "frog", "truck"]
QUICK = dict(progress=False, tensorboard=True, threads=2)


@pytest.fixture(scope="module")
def probe_run(cifar3, tmp_path_factory) -> tuneforge.FitResult:
    # Linear probe of ImageNet EfficientNet-Lite0 features: seconds on a CPU, far above chance.
    # 36 validation images (20%): enough to select the best epoch on (core.run.MIN_VAL).
    out = tmp_path_factory.mktemp("runs") / "probe"
    return tuneforge.fit(data=str(cifar3), model="efficientnet_lite0", image_size=64, freeze="backbone",
                         lr=0.02, epochs=5, batch_size=32, val_fraction=0.2, out=str(out), cache_dir="", **QUICK)


def test_fit_learns_far_above_chance_and_writes_the_run_folder(probe_run):
    r, run = probe_run.report, probe_run.run_dir
    assert r["test"]["accuracy"] >= 0.75, r["test"]  # chance is 0.33
    assert r["test"]["n"] == 90 and r["data"]["train"] + r["data"]["val"] == 180
    for name in ("config.yaml", "split.json", "metrics.jsonl", "metrics.csv", "report.json", "report.html",
                 "plots/confusion_matrix.png", "plots/learning_curves.png", "checkpoints/last.pt",
                 "checkpoints/best.pt", "model/model.safetensors", "model/config.json", "model/README.md"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir())
    saved = json.loads((run / "report.json").read_text())
    assert saved["test"]["accuracy"] == r["test"]["accuracy"] and saved["best_epoch"] >= 1
    split = json.loads((run / "split.json").read_text())
    assert split["classes"] == CLASSES and not set(split["train"]) & set(split["val"])
    assert {p.split(os.sep)[0] for p in split["val"]} == set(CLASSES)  # stratified: every class validated
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == r["epochs_run"] and "val_accuracy" in json.loads(lines[-1])
    bundle = json.loads((run / "model" / "config.json").read_text())
    assert bundle["classes"] == CLASSES and bundle["preprocessing"]["image_size"] == 64


def test_predict_returns_known_classes(probe_run, cifar3, capsys, tmp_path):
    folder = cifar3 / "test" / "airplane"
    assert main(["predict", str(probe_run.run_dir), str(folder), "--top-k", "2"]) == 0
    rows = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert len(rows) == 30 and all(r["label"] in CLASSES and len(r["top"]) == 2 for r in rows)
    assert sum(r["label"] == "airplane" for r in rows) >= 20
    assert all(abs(sum(t["probability"] for t in r["top"]) - 1) < 0.5 for r in rows)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(probe_run.run_dir), str(folder / os.listdir(folder)[0]), "--output", str(out)]) == 0
    assert out.read_text().splitlines()[0].startswith("path,label,probability")


def test_evaluate_reproduces_the_fit_report(probe_run, cifar3, tmp_path, capsys):
    assert main(["evaluate", str(probe_run.run_dir), "--data", str(cifar3), "--out", str(tmp_path / "ev"),
                 "--cache-dir", ""]) == 0
    rep = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert abs(rep["test"]["accuracy"] - probe_run.report["test"]["accuracy"]) <= 1 / 90 + 1e-9
    assert (tmp_path / "ev" / "report.html").is_file()


def _tree_with_bad_files(cifar3: Path, dst: Path) -> tuple[Path, Path]:
    shutil.copytree(cifar3 / "train", dst / "train", symlinks=True)
    good = next((cifar3 / "train" / "frog").iterdir()).resolve().read_bytes()
    truncated = dst / "train" / "frog" / "zz_truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    (dst / "train" / "frog" / ".DS_Store").write_bytes(b"\0\1junk")
    (dst / "train" / "truck" / "notes.txt").write_text("not an image")
    return dst, truncated


def test_corrupt_jpeg_is_skipped_and_named_or_refused_with_strict(cifar3, tmp_path, caplog, capsys):
    data, bad = _tree_with_bad_files(cifar3, tmp_path / "data")
    with caplog.at_level("WARNING", logger="tuneforge"):
        res = tuneforge.fit(data=str(data), model="seed-cnn", epochs=1, out=str(tmp_path / "r"), **QUICK)
    assert [s["path"] for s in res.report["data"]["skipped"]] == [str(bad)]
    assert str(bad) in caplog.text
    assert res.report["data"]["train"] + res.report["data"]["val"] == 180  # only the corrupt file is lost
    with pytest.raises(DataError, match="zz_truncated.jpg"):
        tuneforge.fit(data=str(data), model="seed-cnn", epochs=1, strict=True, out=str(tmp_path / "r2"), **QUICK)
    assert main(["fit", "--data", str(data), "--model", "seed-cnn", "--strict", "--no-progress"]) == 2
    assert "zz_truncated.jpg" in capsys.readouterr().err


def test_resume_continues_exactly_where_it_stopped(cifar3, tmp_path, monkeypatch):
    kw = dict(data=str(cifar3), model="seed-cnn", epochs=3, batch_size=32, optimizer="adam",
              augment="flip,shear=0.2,zoom=0.2", patience=0, **QUICK)
    full = tuneforge.fit(out=str(tmp_path / "full"), **kw)

    restore = ctrl_c_in_epoch(monkeypatch, 2)  # Ctrl-C in the third epoch
    cut = tuneforge.fit(out=str(tmp_path / "cut"), **kw)
    assert cut.report["stopped_because"] == "interrupted" and cut.report["epochs_run"] == 2
    assert (tmp_path / "cut" / "model" / "model.safetensors").is_file()  # nothing lost on Ctrl-C
    restore()

    resumed = tuneforge.fit(resume=str(tmp_path / "cut"), progress=False)
    assert resumed.report["epochs_run"] == 3
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [h["train_loss"] for h in a["engine"]["history"]] == [h["train_loss"] for h in b["engine"]["history"]]
    assert resumed.report["test"]["accuracy"] == full.report["test"]["accuracy"]


def test_bad_settings_and_data_are_refused_by_name(cifar3, tmp_path, capsys):
    assert main(["fit", "--data", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["fit", "--data", str(cifar3), "--freeze", "half"]) == 2
    assert "--freeze" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fit", "--data", str(cifar3), "--optimizer", "adamx"])
    assert "--optimizer" in capsys.readouterr().err
    cfg = tmp_path / "run.yaml"
    cfg.write_text("data: x\nlearning_rate: 0.1\n")
    assert main(["fit", "--config", str(cfg)]) == 2
    assert "--learning-rate" in capsys.readouterr().err
    empty = tmp_path / "empty"
    shutil.copytree(cifar3 / "train", empty / "train", symlinks=True)
    (empty / "train" / "zebra").mkdir()
    assert main(["fit", "--data", str(empty), "--no-progress"]) == 2
    assert str(empty / "train" / "zebra") in capsys.readouterr().err


def test_config_file_and_flags_are_the_same_settings(cifar3, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data: {cifar3}\nmodel: seed-cnn\nepochs: 5\nbatch-size: 16\n")
    out = tmp_path / "r"
    assert main(["fit", "--config", str(cfg), "--epochs", "1", "--out", str(out), "--no-progress", "--limit-per-class", "10"]) == 0
    import yaml
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["batch_size"] == 16 and saved["model"] == "seed-cnn"
    assert saved["limit_per_class"] == 10


def test_tampered_or_unknown_bundles_are_refused(probe_run, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(probe_run.run_dir / "model", bundle)
    assert tuneforge.load(bundle)(torch.rand(1, 3, 64, 64)).shape == (1, 3)
    w = bundle / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum"):
        tuneforge.load(bundle)
    cfg = json.loads((bundle / "config.json").read_text())
    cfg["format_version"] = 99
    (bundle / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="newer"):
        tuneforge.load(bundle)
    with pytest.raises(BundleError, match="no config.json"):
        tuneforge.load(tmp_path)


def test_cached_frozen_features_train_the_same_head_far_faster(cifar3, tmp_path):
    kw = dict(data=str(cifar3), model="efficientnet_lite0", image_size=64, freeze="backbone", lr=0.02, epochs=3,
              batch_size=32, augment="none", cache_dir="", patience=0, **QUICK)
    cached = tuneforge.fit(out=str(tmp_path / "cached"), **kw)
    plain = tuneforge.fit(out=str(tmp_path / "plain"), cache_features=False, **kw)
    for k in ("head.weight", "head.bias"):
        assert torch.allclose(cached.model.state_dict()[k], plain.model.state_dict()[k], atol=1e-4), k
    assert cached.report["test"]["accuracy"] == pytest.approx(plain.report["test"]["accuracy"], abs=1 / 90 + 1e-9)
    assert cached.report["fit_s"] < plain.report["fit_s"] / 3
    flip = tuneforge.fit(out=str(tmp_path / "flip"), **{**kw, "augment": "flip", "tta": True})
    assert flip.report["test"]["accuracy"] >= 0.75  # chance: 0.33
    assert tuneforge.load(tmp_path / "flip")(torch.rand(2, 3, 64, 64)).shape == (2, 3)


@pytest.mark.slow
def test_frozen_stages_cached_equals_recomputed(cifar3, tmp_path):
    """--freeze K caches what the first K stages compute and trains the rest on it: the same
    weights as recomputing those stages every step; crop becomes a shift of the cached maps."""
    kw = dict(data=str(cifar3), model="efficientnet_lite0", image_size=64, freeze="4", lr=2e-3, epochs=2,
              batch_size=32, augment="none", cache_dir="", patience=0, **QUICK)
    cached = tuneforge.fit(out=str(tmp_path / "cached"), **kw)
    plain = tuneforge.fit(out=str(tmp_path / "plain"), cache_features=False, **kw)
    a, b = cached.model.state_dict(), plain.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("backbone.net._blocks.0."))  # frozen
    for k in ("head.weight", "backbone.net._conv_head.weight", "backbone.net._blocks.15._project_conv.weight"):
        assert torch.allclose(a[k], b[k], atol=1e-4), k
    assert cached.report["test"]["accuracy"] == pytest.approx(plain.report["test"]["accuracy"], abs=2 / 90 + 1e-9)
    shifted = tuneforge.fit(out=str(tmp_path / "shift"), **{**kw, "augment": "flip,crop=0.125", "tta": True, "epochs": 3})
    assert shifted.report["test"]["accuracy"] >= 0.75  # chance: 0.33
