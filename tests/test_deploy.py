"""Deployment for every kind of bundle `fit` and `align` write (issue 14): numeric-sequence
classifiers and regressors and aligned image-text pairs through predict, evaluate, batch, serve
and export; batch prediction of image+text tables with both inputs; and the deploy layer
importing no training code."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

import tuneforge
from conftest import flickr_subset
from test_multimodal import FASHION, _fit, fashion4  # noqa: F401  (fashion4 is a fixture)
from test_sequences import make_sequences, write_long, write_wide
from tuneforge.deploy.predictor import Predictor
from tuneforge.deploy.serve.app import create_app
from tuneforge.errors import DataError

QUICK = dict(progress=False, tensorboard=False, threads=2)
SMALL = dict(model="gru", epochs=4, batch_size=32, embed_dim=16, hidden_size=16, num_layers=1, lr=5e-3, patience=0)


def test_deploy_imports_no_training_code():
    code = ("import re, sys\n"
            "import tuneforge.deploy.predictor, tuneforge.deploy.batch, tuneforge.deploy.export, tuneforge.deploy.serve.app\n"
            "bad = r'tuneforge\\.core\\.(engine|strategies|run|report|metrics)\\b|tuneforge\\.tasks\\.\\w+\\.fit$|sklearn\\b|matplotlib\\b'\n"
            "print(sorted(m for m in sys.modules if re.match(bad, m)))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ---------------------------------------------------------------- numeric sequences

@pytest.fixture(scope="module")
def seq_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("seq")
    write_wide(d / "train.csv", make_sequences(300, 1))
    write_wide(d / "test.csv", make_sequences(60, 2))
    write_wide(d / "rtrain.csv", make_sequences(300, 3), regression=True)
    write_wide(d / "rtest.csv", make_sequences(60, 4), regression=True)
    write_long(d / "ltrain.csv", make_sequences(200, 5))
    write_long(d / "ltest.csv", make_sequences(40, 6))
    return d


@pytest.fixture(scope="module")
def seq_run(seq_data):
    return tuneforge.fit(data=str(seq_data / "train.csv"), test=str(seq_data / "test.csv"), sequence_column="values",
                         out=str(seq_data / "run"), **SMALL, **QUICK)


@pytest.fixture(scope="module")
def reg_run(seq_data):
    return tuneforge.fit(data=str(seq_data / "rtrain.csv"), test=str(seq_data / "rtest.csv"), sequence_column="values",
                         task="regression", out=str(seq_data / "rrun"), **SMALL, **QUICK)


def test_sequence_classifier_predicts_lists_and_tables(seq_run, seq_data):
    steps = make_sequences(1, 9)[0][1]
    got = tuneforge.predict(seq_run.run_dir, [json.dumps(steps), str(seq_data / "test.csv"), "[1, 2, 3]"], top_k=2)
    assert got[0]["label"] in ("neg", "pos") and len(got[0]["top"]) == 2
    assert len(got) == 62 and got[1]["row"] == f"{seq_data / 'test.csv'}:2"
    assert "steps of 2" in got[-1]["error"]  # one number per step, the model takes two: said, not guessed
    # the table's rows answer what the fit measured on the same file
    truth = ["pos" if t > 0 else "neg" for _, _, t in make_sequences(60, 2)]
    acc = np.mean([g["label"] == t for g, t in zip(got[1:61], truth)])
    assert acc == pytest.approx(seq_run.report["test"]["accuracy"], abs=1e-9)


def test_sequence_models_evaluate_a_table(seq_run, reg_run, seq_data):
    ev = tuneforge.evaluate(seq_run.run_dir, seq_data / "test.csv", progress=False)
    assert ev["test"]["accuracy"] == pytest.approx(seq_run.report["test"]["accuracy"]) and ev["test"]["n"] == 60
    assert Path(ev["html_path"]).is_file()
    ev = tuneforge.evaluate(reg_run.run_dir, seq_data / "rtest.csv", progress=False)
    for k in ("rmse", "mae", "n"):
        assert ev["test"][k] == pytest.approx(reg_run.report["test"][k], rel=1e-4), k


def test_sequence_regressor_predicts_a_value_in_the_target_units(reg_run, seq_data):
    got = tuneforge.predict(reg_run.run_dir, [str(seq_data / "rtest.csv")])
    assert set(got[0]) == {"row", "values", "value"} and "top" not in got[0]
    targets = np.array([t for _, _, t in make_sequences(60, 4)])
    rmse = float(np.sqrt(np.mean((np.array([g["value"] for g in got]) - targets) ** 2)))
    assert rmse == pytest.approx(reg_run.report["test"]["rmse"], rel=1e-4)  # scaled back, not standardised


def test_sequence_bundles_batch_predict_tables(seq_run, reg_run, seq_data, tmp_path):
    counts = tuneforge.batch_predict(seq_run.run_dir, seq_data / "test.csv", tmp_path / "c.csv", progress=False)
    assert counts == {"rows": 60, "errors": 0, "output": str(tmp_path / "c.csv")}
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert rows[0]["id"] == "s2_0" and rows[0]["label"] in ("neg", "pos") and float(rows[0]["probability"]) >= 0.5
    tuneforge.batch_predict(reg_run.run_dir, seq_data / "rtest.csv", tmp_path / "r.jsonl", progress=False)
    got = [json.loads(l) for l in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(got) == 60 and all(isinstance(g["value"], float) for g in got)


def test_sequences_in_the_long_layout_are_grouped_by_id(seq_data, tmp_path):
    run = tuneforge.fit(data=str(seq_data / "ltrain.csv"), test=str(seq_data / "ltest.csv"), id_column="seq",
                        time_column="t", out=str(tmp_path / "run"), **{**SMALL, "epochs": 2}, **QUICK)
    got = tuneforge.predict(run.run_dir, [str(seq_data / "ltest.csv")])
    assert sorted(g["id"] for g in got) == sorted(s for s, _, _ in make_sequences(40, 6))
    ev = tuneforge.evaluate(run.run_dir, seq_data / "ltest.csv", progress=False)
    assert ev["test"]["accuracy"] == pytest.approx(run.report["test"]["accuracy"])


def test_sequence_bundles_export_to_onnx(seq_run, reg_run, tmp_path):
    steps = [s for _, s, _ in make_sequences(8, 11)]
    for run in (seq_run, reg_run):
        out = tmp_path / run.run_dir.name
        info = tuneforge.export(run.run_dir, out, format="onnx")
        assert info["onnx"]["max_abs_diff"] < 1e-4 and "model.onnx" in info["files"]
        eager, onnx = Predictor(out), Predictor(out, backend="onnx")
        a = eager.top_k([eager.prepare(values=s) for s in steps], 2)
        b = onnx.top_k([onnx.prepare(values=s) for s in steps], 2)
        assert [x.get("label", round(x.get("value", 0), 3)) for x in a] == [x.get("label", round(x.get("value", 0), 3)) for x in b]


def test_sequence_bundles_are_served(seq_run, reg_run, live_server):
    steps = make_sequences(1, 12)[0][1]
    for run in (seq_run, reg_run):
        url = live_server(create_app(run.run_dir), ready=True)
        r = httpx.post(url + "/v1/predict", json={"values": steps})
        assert r.status_code == 200, r.text
        want = tuneforge.predict(run.run_dir, [json.dumps(steps)])[0]
        got = r.json()
        if "value" in want:
            assert got["value"] == pytest.approx(want["value"], abs=1e-5)
        else:
            assert got["label"] == want["label"]
        bad = httpx.post(url + "/v1/predict", json={"values": [1, 2]})
        assert bad.status_code == 422 and "steps of 2" in bad.json()["detail"]


# ---------------------------------------------------------------- aligned image-text pairs

@pytest.fixture(scope="module")
def pair_run(tmp_path_factory):
    """A one-epoch alignment of 12 real Flickr8k images and their 60 captions (seconds)."""
    from tuneforge.tasks.align import workflow as A
    d = tmp_path_factory.mktemp("pair")
    names, _ = flickr_subset(d, 12)
    run = A.align(data=str(d / "captions.csv"), image_root=str(d / "images"), image_size=64, epochs=1, batch_size=16,
                  patience=0, test_fraction=0.25, val_fraction=0.0, out=str(d / "run"), threads=2, progress=False,
                  cache_dir=str(d / "cache"))
    return {"run": run.run_dir, "dir": d, "names": names}


def test_aligned_pair_predicts_embeddings(pair_run):
    img = pair_run["dir"] / "images" / pair_run["names"][0]
    got = tuneforge.predict(pair_run["run"], [str(img), "a dog runs on the grass"])
    assert [g["input"] for g in got] == ["image", "text"] and got[0]["path"] == str(img)
    e = np.array([g["embedding"] for g in got])
    assert e.shape == (2, 256) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    with pytest.raises(DataError, match="tuneforge retrieve"):  # image and text together: not an embedding
        Predictor(pair_run["run"]).prepare(img, "a dog")


def test_aligned_pair_evaluates_recall_at_k(pair_run):
    from tuneforge.tasks.align.workflow import evaluate_retrieval
    table = pair_run["dir"] / "captions.csv"
    ev = tuneforge.evaluate(pair_run["run"], table, progress=False)
    want = evaluate_retrieval(pair_run["run"], table, image_root=str(pair_run["dir"] / "images"))
    for d in ("text_to_image", "image_to_text"):
        for k in ("R@1", "R@5", "R@10"):
            assert ev["test"][d][k] == pytest.approx(want[d][k], abs=1e-6), (d, k)
    assert ev["data"]["images"] == 12 and Path(ev["html_path"]).is_file()


def test_aligned_pair_batch_embeds_images_and_captions(pair_run, tmp_path):
    counts = tuneforge.batch_predict(pair_run["run"], pair_run["dir"] / "captions.csv", tmp_path / "e.jsonl", progress=False)
    got = [json.loads(l) for l in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert counts["errors"] == 0 and counts["rows"] == 120  # each row's image and its caption
    assert {g["input"] for g in got} == {"image", "text"} and all(len(g["embedding"]) == 256 for g in got)


def test_aligned_pair_exports_and_serves(pair_run, tmp_path, live_server):
    info = tuneforge.export(pair_run["run"], tmp_path / "st")
    assert {"model.safetensors", "tokenizer/tokenizer.json"} <= set(info["files"])
    assert "Aligned image-text pair" in (tmp_path / "st" / "README.md").read_text()
    info = tuneforge.export(pair_run["run"], tmp_path / "onnx", format="onnx")
    assert info["onnx"]["max_abs_diff"] < 1e-4
    img = pair_run["dir"] / "images" / pair_run["names"][1]
    eager, onnx = Predictor(tmp_path / "onnx"), Predictor(tmp_path / "onnx", backend="onnx")
    items = lambda p: [p.prepare(text="two dogs play"), p.prepare(image=img)]
    a, b = np.array([r["embedding"] for r in eager.top_k(items(eager))]), np.array([r["embedding"] for r in onnx.top_k(items(onnx))])
    assert np.abs(a - b).max() < 1e-4
    url = live_server(create_app(tmp_path / "onnx"), ready=True)
    r = httpx.post(url + "/v1/predict", json={"text": "two dogs play"})
    assert r.status_code == 200 and np.abs(np.array(r.json()["embedding"]) - a[0]).max() < 1e-4
    both = httpx.post(url + "/v1/predict", files={"file": ("a.jpg", img.read_bytes(), "image/jpeg")}, data={"text": "x"})
    assert both.status_code == 422 and "tuneforge retrieve" in both.json()["detail"]


# ---------------------------------------------------------------- image+text batch (defect 2)

def test_batch_passes_image_and_text_of_a_fusion_table(fashion4, tmp_path):  # noqa: F811
    run = _fit(fashion4, tmp_path / "late", tmp_path / "cache", fusion="late", epochs=2)
    rows = list(csv.DictReader(open(fashion4, newline="")))[:8]
    table = tmp_path / "t.csv"
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["sku", "image", "productDisplayName"])
        w.writeheader()
        for i, r in enumerate(rows):
            # row 0 has no image: before, the text was dropped and the row failed
            w.writerow({"sku": i, "image": "" if i == 0 else str(FASHION / r["image"]), "productDisplayName": r["productDisplayName"]})
    counts = tuneforge.batch_predict(run.run_dir, table, tmp_path / "p.jsonl", top_k=2, progress=False)
    assert counts["errors"] == 0, (tmp_path / "p.jsonl").read_text()
    got = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    p = Predictor(run.run_dir)
    want = p.top_k([p.prepare(None if i == 0 else FASHION / r["image"], r["productDisplayName"]) for i, r in enumerate(rows)], 2)
    assert [g["sku"] for g in got] == [str(i) for i in range(8)]
    assert all(abs(g["top"][0]["probability"] - w["top"][0]["probability"]) < 1e-5 for g, w in zip(got, want))
    image_only = p.top_k([p.prepare(FASHION / r["image"]) for r in rows[1:]], 2)
    assert any(abs(g["top"][0]["probability"] - w["top"][0]["probability"]) > 1e-4 for g, w in zip(got[1:], image_only))
