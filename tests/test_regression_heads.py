"""Regression heads for texts (text tables with a numeric label column) and images (a table of
image paths and numbers), issue 20: each learns a known linear target (R² high), is reported
beside the mean predictor and its linear baseline, and goes through predict, evaluate, batch,
serve and ONNX export with the same numbers."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import tuneforge
from tuneforge.deploy.predictor import Predictor
from tuneforge.deploy.serve.app import create_app
from tuneforge.errors import ConfigError, DataError

QUICK = dict(progress=False, tensorboard=False, threads=2)
WEIGHTS = {"good": 2.0, "bad": -2.0, "great": 3.0, "awful": -3.0, "fine": 1.0, "ok": 0.5, "meh": -0.5,
           "superb": 4.0, "poor": -1.0, "nice": 1.5}


def text_score(text: str) -> float:
    """The known target: the sum of the words' weights."""
    return sum(WEIGHTS[w] for w in text.split())


def write_texts(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "score"])
        for _ in range(n):
            words = list(rng.choice(list(WEIGHTS), rng.integers(2, 6)))
            w.writerow([" ".join(words), f"{text_score(' '.join(words)):.2f}"])


def brightness_image(path: Path, b: float, rng: np.random.Generator) -> None:
    a = np.clip(rng.normal(0, 0.08, (32, 32, 3)) + b, 0, 1)
    Image.fromarray((a * 255).astype(np.uint8)).save(path)


def write_images(folder: Path, n: int, seed: int, name: str) -> None:
    """name.csv (file,value) with images whose brightness b sets the target 10 b + 3."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(exist_ok=True)
    with open(folder / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "value"])
        for i in range(n):
            b = rng.uniform(0.1, 0.9)
            brightness_image(folder / "img" / f"{name}{i}.png", b, rng)
            w.writerow([f"img/{name}{i}.png", f"{10 * b + 3:.4f}"])


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("treg")
    write_texts(d / "train.csv", 500, 0)
    write_texts(d / "test.csv", 100, 1)
    run = tuneforge.fit(data=str(d / "train.csv"), test=str(d / "test.csv"), text_column="review", label_column="score",
                        task="regression", model="gru", epochs=8, batch_size=32, embed_dim=32, hidden_size=32,
                        num_layers=1, lr=5e-3, patience=0, out=str(d / "run"), **QUICK)
    return run, d


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("ireg")
    write_images(d, 200, 0, "train")
    write_images(d, 60, 1, "test")
    run = tuneforge.fit(data=str(d / "train.csv"), test=str(d / "test.csv"), task="regression", label_column="value",
                        model="fast-cnn", loss="huber", epochs=6, batch_size=32, patience=0, cache_dir="",
                        out=str(d / "run"), **QUICK)
    return run, d


def test_text_regression_learns_a_linear_target(text_run):
    run, d = text_run
    r = run.report
    assert r["task"] == "regression" and run.config.monitor == "val_loss"
    assert r["test"]["r2"] > 0.9, r["test"]
    # the mean predictor is the floor, the TF-IDF + ridge baseline is scored on the same rows
    assert r["mean_predictor"]["test"]["r2"] <= 0.01 and r["mean_predictor"]["test"]["rmse"] > 2 * r["test"]["rmse"]
    assert r["baseline"]["name"] == "tfidf ridge" and r["baseline"]["test"]["rmse"] > 0
    html = (run.run_dir / "report.html").read_text()
    assert "Predicted vs true" in html and "Model vs references" in html


def test_a_text_regressor_predicts_evaluates_serves_and_exports(text_run, tmp_path, live_server):
    run, d = text_run
    got = tuneforge.predict(run.run_dir, ["superb great nice", "awful bad poor"])
    assert got[0]["value"] > 5 > -3 > got[1]["value"]  # 8.5 and -6
    assert abs(got[0]["value"] - 8.5) < 2 and abs(got[1]["value"] + 6) < 2
    ev = tuneforge.evaluate(run.run_dir, d / "test.csv", progress=False)
    assert ev["test"]["rmse"] == pytest.approx(run.report["test"]["rmse"], rel=1e-4)
    assert ev["test"]["r2"] == pytest.approx(run.report["test"]["r2"], abs=1e-4)
    tuneforge.batch_predict(run.run_dir, d / "test.csv", tmp_path / "b.jsonl", progress=False)
    rows = [json.loads(l) for l in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert len(rows) == 100 and all(isinstance(r["value"], float) for r in rows)
    info = tuneforge.export(run.run_dir, tmp_path / "onnx", format="onnx")
    assert info["onnx"]["max_abs_diff"] < 1e-4
    p = Predictor(tmp_path / "onnx", backend="onnx")
    assert p.top_k([p.prepare(text="superb great nice")])[0]["value"] == pytest.approx(got[0]["value"], abs=1e-4)
    url = live_server(create_app(run.run_dir), ready=True)
    r = httpx.post(url + "/v1/predict", json={"text": "superb great nice"})
    assert r.status_code == 200 and r.json()["value"] == pytest.approx(got[0]["value"], abs=1e-5), r.text


def test_image_regression_learns_a_linear_target(image_run):
    run, d = image_run
    r = run.report
    assert r["test"]["r2"] > 0.9, r["test"]
    assert r["mean_predictor"]["test"]["rmse"] > 2 * r["test"]["rmse"]
    assert run.config.loss == "huber" and (run.run_dir / "model" / "config.json").is_file()


def test_an_image_regressor_predicts_evaluates_serves_and_exports(image_run, tmp_path, live_server):
    run, d = image_run
    rng = np.random.default_rng(5)
    brightness_image(tmp_path / "dark.png", 0.2, rng)
    brightness_image(tmp_path / "bright.png", 0.8, rng)
    got = tuneforge.predict(run.run_dir, [str(tmp_path / "dark.png"), str(tmp_path / "bright.png")])
    assert abs(got[0]["value"] - 5) < 1.5 and abs(got[1]["value"] - 11) < 1.5, got
    ev = tuneforge.evaluate(run.run_dir, d / "test.csv", progress=False)
    assert ev["test"]["rmse"] == pytest.approx(run.report["test"]["rmse"], rel=1e-4)
    counts = tuneforge.batch_predict(run.run_dir, d / "test.csv", tmp_path / "b.csv", progress=False)
    assert counts["rows"] == 60 and counts["errors"] == 0
    info = tuneforge.export(run.run_dir, tmp_path / "onnx", format="onnx")
    assert info["onnx"]["max_abs_diff"] < 1e-4
    p = Predictor(tmp_path / "onnx", backend="onnx")
    assert p.top_k([p.prepare(image=tmp_path / "dark.png")])[0]["value"] == pytest.approx(got[0]["value"], abs=1e-3)
    url = live_server(create_app(run.run_dir), ready=True)
    r = httpx.post(url + "/v1/predict", files={"file": ("dark.png", (tmp_path / "dark.png").read_bytes())})
    assert r.status_code == 200 and r.json()["value"] == pytest.approx(got[0]["value"], abs=1e-4), r.text


def test_regression_refusals_name_the_column_and_flag(tmp_path):
    with open(tmp_path / "t.csv", "w") as f:
        f.write("text,label\ngood film,positive\nbad film,negative\n")
    with pytest.raises(DataError, match="column 'label' holds 'negative', not a number"):
        tuneforge.fit(data=str(tmp_path / "t.csv"), task="regression", model="gru", **QUICK)
    with pytest.raises(ConfigError, match="--loss"):
        tuneforge.fit(data=str(tmp_path / "t.csv"), task="regression", model="gru", loss="l1", **QUICK)
    with open(tmp_path / "i.csv", "w") as f:
        f.write("file,value\nmissing.png,1.5\n")
    with pytest.raises(DataError, match="line 2: no image file"):
        tuneforge.fit(data=str(tmp_path / "i.csv"), task="regression", label_column="value", model="fast-cnn", **QUICK)
