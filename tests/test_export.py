"""Export on a real trained model (seed-cnn, 2 epochs on real CIFAR-10 JPEGs): the portable
bundle loads from anywhere and refuses damage by name; ONNX equals PyTorch within 1e-4 on real
images at any batch size or the export fails; int8 reports its accuracy change; batch
prediction over folders and tables agrees with the Predictor."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tuneforge
from tuneforge.cli import main
from tuneforge.core.bundle import manifest_doc
from tuneforge.core.data.images import list_images
from tuneforge.errors import BundleError
from tuneforge.deploy.predictor import Predictor


def _test_images(cifar3: Path) -> tuple[np.ndarray, list[Path]]:
    """The 90 real test images, decoded as training decodes them (uint8, 32 px)."""
    from tuneforge.core.data.images import decode_files
    files = list_images([cifar3 / "test"])
    return decode_files(files, 32, "crop")[0], files


def test_export_cli_writes_a_portable_bundle_that_loads_from_any_path(seed_run, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["export", str(seed_run), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == ["model.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "manifest.json", "model.safetensors"]  # nothing pickled
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["task"] == "image-classification" and cfg["classes"] == ["airplane", "frog", "truck"]
    assert cfg["preprocessing"]["image_size"] == 32 and cfg["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert cfg["metrics"]["test"]["n"] == 90 and "exported" in cfg and "_dir" not in cfg
    card = (out / "README.md").read_text()
    assert "## Metrics" in card and "| test |" in card and cfg["exported"] in card
    moved = shutil.move(str(out), tmp_path / "elsewhere" / "deep")  # the bundle has no absolute paths in it
    model = tuneforge.load(moved)
    assert model(__import__("torch").rand(2, 3, 32, 32)).shape == (2, 3)


def test_onnx_equals_pytorch_on_real_images_at_any_batch_size(seed_bundle, cifar3):
    cfg = json.loads((seed_bundle / "config.json").read_text())
    assert cfg["onnx"]["max_abs_diff"] <= 1e-4 and cfg["onnx"]["checked_on"] == 32
    assert set(cfg["files"]) == {"model.safetensors", "model.onnx", "model.int8.onnx"}
    images, _ = _test_images(cifar3)
    eager, onnx = Predictor(seed_bundle, backend="torch"), Predictor(seed_bundle, backend="onnx")
    want = eager.logits({"images": images})
    assert np.abs(onnx.logits({"images": images}) - want).max() <= 1e-4  # all 90 real test images in one batch
    for n in (1, 7):  # dynamic batch axis
        assert np.abs(onnx.logits({"images": images[:n]}) - want[:n]).max() <= 1e-4
    assert Predictor(seed_bundle, backend="auto").backend == "onnx"


def test_int8_reports_its_test_accuracy_change(seed_bundle, seed_run, cifar3):
    q = json.loads((seed_bundle / "config.json").read_text())["onnx_int8"]
    assert q["method"] == "static" and q["calibration_examples"] > 100
    acc = q["accuracy"]
    assert acc["n"] == 90 and acc["change_points"] == pytest.approx(100 * (acc["int8"] - acc["fp32"]), abs=1e-3)
    report = json.loads((seed_run / "report.json").read_text())
    assert acc["fp32"] == pytest.approx(report["test"]["accuracy"], abs=1e-9)  # the same model, the same images
    assert "points" in (seed_bundle / "README.md").read_text()
    images, _ = _test_images(cifar3)
    int8 = Predictor(seed_bundle, backend="onnx-int8").logits({"images": images}).argmax(1)
    fp32 = Predictor(seed_bundle, backend="onnx").logits({"images": images}).argmax(1)
    assert (int8 == fp32).mean() >= 0.8  # the quantized model runs and mostly agrees


def test_export_fails_when_onnx_does_not_reproduce_pytorch(seed_run, tmp_path, monkeypatch):
    from tuneforge.deploy import onnx as onnx_mod
    real = onnx_mod.eager_logits
    monkeypatch.setattr(onnx_mod, "eager_logits", lambda *a: real(*a) + 1e-3)  # an op ONNX computes differently
    with pytest.raises(BundleError, match="does not match PyTorch"):
        tuneforge.export(seed_run, tmp_path / "b", format="onnx")
    assert not (tmp_path / "b" / "model.onnx").exists()


def test_damaged_or_unknown_bundles_are_refused_by_name(seed_bundle, tmp_path, capsys):
    def copy(name: str) -> Path:
        return Path(shutil.copytree(seed_bundle, tmp_path / name))

    b = copy("truncated")
    data = (b / "model.onnx").read_bytes()
    (b / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"model\.onnx: checksum"):
        Predictor(b, backend="onnx")
    b = copy("missing")
    (b / "model.int8.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.int8\.onnx: missing"):
        tuneforge.load(b)
    b = copy("config")
    text = (b / "config.json").read_text()
    (b / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleError, match="damaged config"):
        tuneforge.load(b)
    b = copy("future")
    cfg = json.loads(text)
    (b / "config.json").write_text(json.dumps({**cfg, "format_version": 7}))
    with pytest.raises(BundleError, match="newer"):
        Predictor(b)
    (b / "config.json").write_text(json.dumps({**cfg, "task": "video-captioning"}))
    (b / "manifest.json").write_text(json.dumps(manifest_doc(b)))  # as a newer tuneforge would write it
    with pytest.raises(BundleError, match="video-captioning"):
        Predictor(b, backend="onnx")
    assert main(["serve", "https://example.com/model.onnx"]) == 2  # a URL is a path that does not exist
    assert "no config.json" in capsys.readouterr().err


def test_bad_export_flags_are_refused_by_name(seed_run, tmp_path, capsys):
    assert main(["export", str(seed_run), "--out", str(tmp_path / "x"), "--quantize", "int8"]) == 2
    assert "--quantize" in capsys.readouterr().err
    assert main(["export", str(seed_run), "--out", str(seed_run / "model")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["batch", str(seed_run), str(seed_run), "--output", str(tmp_path / "p.txt")]) == 2
    assert "--output" in capsys.readouterr().err


def test_batch_prediction_over_a_folder_and_a_table_agrees_with_the_predictor(seed_bundle, cifar3, tmp_path, capsys):
    folder = cifar3 / "test" / "frog"
    out = tmp_path / "preds.csv"
    assert main(["batch", str(seed_bundle), str(folder), "--output", str(out), "--backend", "onnx", "--batch-size", "8"]) == 0
    assert json.loads(capsys.readouterr().out) == {"rows": 30, "errors": 0, "output": str(out)}
    rows = list(csv.DictReader(open(out)))
    direct = Predictor(seed_bundle).predict_files(list_images([folder]), top_k=3)
    assert [r["path"] for r in rows] == [d["path"] for d in direct]
    assert [r["label"] for r in rows] == [d["label"] for d in direct]
    assert all(float(r["probability"]) == pytest.approx(d["top"][0]["probability"], abs=1e-4) for r, d in zip(rows, direct))

    table = tmp_path / "t" / "inputs.csv"
    table.parent.mkdir()
    (table.parent / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    names = [f.name for f in list_images([folder])[:4]]
    for n in names:
        shutil.copy(folder / n, table.parent / n)
    table.write_text("id,path\n" + "".join(f"{i},{n}\n" for i, n in enumerate(names + ["broken.jpg"])))
    jl = tmp_path / "preds.jsonl"
    assert main(["batch", str(seed_bundle), str(table), "--output", str(jl), "--top-k", "2", "--no-progress"]) == 0
    got = [json.loads(l) for l in jl.read_text().splitlines()]
    assert [g["id"] for g in got] == ["0", "1", "2", "3", "4"]
    assert [g["label"] for g in got[:4]] == [d["label"] for d in direct[:4]] and all(len(g["top"]) == 2 for g in got[:4])
    assert "broken.jpg" in got[4]["error"] and "label" not in got[4]
