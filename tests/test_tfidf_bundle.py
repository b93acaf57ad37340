"""`fit --model tfidf` as a first-class text model (issue 17): fitted through `tuneforge fit` and
the CLI on a small real SST-2 folder, its bundle holds no pickle, and predict, evaluate, batch,
serve and ONNX export give what the fit measured."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

import tuneforge
from conftest import DATASETS
from tuneforge.cli import main
from tuneforge.core.bundle import load_bundle
from tuneforge.deploy.predictor import Predictor
from tuneforge.deploy.serve.app import create_app
from tuneforge.errors import ConfigError

QUICK = dict(progress=False, tensorboard=False, threads=2)
BUNDLE_FILES = {"README.md", "config.json", "manifest.json", "model.safetensors", "tfidf_vocab.json"}


def _lines(name: str, start: int, n: int) -> list[str]:
    path = DATASETS / "sst2" / name
    if not path.is_file():
        pytest.fail(f"real test data missing: {path} (set TUNEFORGE_DATASETS to the datasets folder)")
    return path.read_text(encoding="utf-8").splitlines(keepends=True)[start:start + n]


@pytest.fixture(scope="module")
def sst2(tmp_path_factory) -> Path:
    """The README's `--data sst2/` layout, small: 3,000 training sentences, 400 dev (val), 400 test."""
    d = tmp_path_factory.mktemp("sst2")
    (d / "sentiment-train").write_text("".join(_lines("sentiment-train", 0, 3000)), encoding="utf-8")
    (d / "sentiment-dev").write_text("".join(_lines("sentiment-dev", 0, 400)), encoding="utf-8")
    (d / "sentiment-test").write_text("".join(_lines("sentiment-test", 0, 400)), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def run(sst2, tmp_path_factory):
    return tuneforge.fit(data=str(sst2), columns="text,label", model="tfidf",
                         out=str(tmp_path_factory.mktemp("runs") / "tfidf"), **QUICK)


def _test_texts(sst2: Path) -> tuple[list[str], np.ndarray]:
    rows = [line.rstrip("\n").rpartition("\t") for line in (sst2 / "sentiment-test").read_text(encoding="utf-8").splitlines()]
    return [t for t, _, _ in rows], np.array([int(y) for _, _, y in rows])


def test_fit_reports_val_and_test_well_above_chance_with_no_epochs(run):
    report = json.loads((run.run_dir / "report.json").read_text())
    for split in ("val", "test"):
        assert report[split]["n"] == 400
        assert report[split]["accuracy"] > 0.66, report[split]  # chance ~0.5; 3,000 sentences give ~0.72
        assert report[split]["macro_f1"] > 0.64
    assert report["model"] == "tfidf" and report["epochs_run"] is None and run.history == []
    assert report["tfidf"]["analyzer"] == "word" and "space-separated" in report["tfidf"]["why"]
    assert "fitted on 400 validation texts" in report["tfidf"]["calibration"]
    assert (run.run_dir / "split.json").is_file() and (run.run_dir / "report.html").is_file()
    assert "TF-IDF model" in (run.run_dir / "report.html").read_text()


def test_cli_fit_is_the_same_fit(run, sst2, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["fit", "--data", str(sst2), "--columns", "text,label", "--model", "tfidf", "--out", str(out),
                 "--no-progress", "--threads", "2"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["test_accuracy"] == run.report["test"]["accuracy"]  # deterministic: the same model
    assert json.loads((out / "report.json").read_text())["val"]["accuracy"] == run.report["val"]["accuracy"]


def test_the_bundle_holds_no_pickle(run):
    model_dir = run.run_dir / "model"
    assert {p.name for p in model_dir.iterdir()} == BUNDLE_FILES
    raw = (model_dir / "model.safetensors").read_bytes()
    assert raw[8:10] == b'{"' and not raw.startswith((b"\x80", b"PK"))  # safetensors header; no pickle, no torch zip
    config = json.loads((model_dir / "config.json").read_text())
    assert config["task"] == "text-tfidf" and config["classes"] == ["0", "1"]
    assert set(config["files"]) == {"tfidf_vocab.json"} and config["preprocessing"]["analyzer"] == "word"
    vocab = json.loads((model_dir / "tfidf_vocab.json").read_text(encoding="utf-8"))
    assert len(vocab["vocabulary"]) == config["model_args"]["vocab_size"] > 1000


def test_predict_equals_the_fit_time_model_and_the_report(run, sst2):
    texts, labels = _test_texts(sst2)
    got = tuneforge.predict(run.run_dir, texts=texts, top_k=2)
    pred = np.array([int(g["label"]) for g in got])
    assert (pred == labels).mean() == pytest.approx(run.report["test"]["accuracy"], abs=1e-12)
    # the probabilities are the fitted module's softmax (run.model: the weights fit measured)
    fitted = load_bundle(run.run_dir)[0]
    featurizer = Predictor(run.run_dir).task.featurizer
    with torch.no_grad():
        p = torch.softmax(run.model(*featurizer.batch(texts)), 1).numpy()
        p_bundle = torch.softmax(fitted(*featurizer.batch(texts)), 1).numpy()
    np.testing.assert_allclose(p, p_bundle, atol=1e-7)
    shown = np.array([[t["probability"] for t in sorted(g["top"], key=lambda t: t["label"])] for g in got])
    np.testing.assert_allclose(shown, p, atol=1e-6)


def test_evaluate_and_batch_give_what_the_fit_measured(run, sst2, tmp_path):
    ev = tuneforge.evaluate(run.run_dir, sst2 / "sentiment-test", out=tmp_path / "ev", progress=False)
    assert ev["test"]["n"] == 400
    for k in ("accuracy", "macro_f1"):
        assert ev["test"][k] == pytest.approx(run.report["test"][k], abs=1e-12), k
    table = tmp_path / "test.tsv"  # batch takes tables by their suffix
    table.write_text((sst2 / "sentiment-test").read_text(encoding="utf-8"), encoding="utf-8")
    counts = tuneforge.batch_predict(run.run_dir, table, tmp_path / "p.jsonl", progress=False)
    assert counts["rows"] == 400 and counts["errors"] == 0
    texts, _ = _test_texts(sst2)
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["label"] for r in rows] == [g["label"] for g in tuneforge.predict(run.run_dir, texts=texts)]


def test_served_answers_equal_predict(run, sst2, live_server):
    texts, _ = _test_texts(sst2)
    url = live_server(create_app(run.run_dir))
    want = tuneforge.predict(run.run_dir, texts=texts[:8], top_k=2)
    for text, w in zip(texts[:8], want):
        r = httpx.post(url + "/v1/predict", json={"text": text})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["label"] == w["label"] and body["top"] == w["top"]
    bad = httpx.post(url + "/v1/predict", json={"text": "   "})
    assert 400 <= bad.status_code < 500 and "text" in bad.text
    # a text with no known term answers the bias: still a prediction, not an error
    assert httpx.post(url + "/v1/predict", json={"text": "qqqq zzzz"}).status_code == 200


def test_onnx_export_matches_pytorch(run, sst2, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    config = tuneforge.export(run.run_dir, out, format="onnx")
    assert config["onnx"]["max_abs_diff"] < 1e-4 and config["onnx"]["checked_on"] >= 8
    assert {p.name for p in out.iterdir()} == BUNDLE_FILES | {"model.onnx"}
    texts, _ = _test_texts(sst2)
    texts = texts[:100] + ["qqqq zzzz"]  # no known term: all padding
    onnx_p, torch_p = Predictor(out, backend="onnx"), Predictor(run.run_dir)
    rows = [{"text": t} for t in texts]
    np.testing.assert_allclose(onnx_p.outputs(rows, batch_size=32), torch_p.outputs(rows, batch_size=32), atol=1e-4)
    assert [g["label"] for g in tuneforge.predict(out, texts=texts)] == [g["label"] for g in tuneforge.predict(run.run_dir, texts=texts)]


def test_loading_and_serving_the_bundle_imports_no_training_code(run):
    code = ("import re, sys\n"
            "from tuneforge.deploy.predictor import Predictor\n"
            "import tuneforge.deploy.serve.app\n"
            f"p = Predictor({str(run.run_dir)!r})\n"
            "print(p.top_k([p.prepare(text='a fine film')])[0]['label'])\n"
            "bad = r'tuneforge\\.core\\.(engine|strategies|run|report|metrics)\\b|tuneforge\\.tasks\\.\\w+\\.(fit|classic)$|sklearn\\b'\n"
            "print(sorted(m for m in sys.modules if re.match(bad, m)))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    label, loaded = out.stdout.strip().splitlines()
    assert label in ("0", "1") and loaded == "[]", out.stdout


def test_models_lists_tfidf(capsys):
    assert main(["models"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("tfidf "))
    assert "text" in line and "TF-IDF" in line and "seconds" in line


@pytest.mark.parametrize("setting, value, group", [("epochs", 3, "optim"), ("freeze", "backbone", "model"),
                                                    ("max_length", 64, "text")])
def test_settings_a_tfidf_fit_never_reads_are_refused_naming_the_flag(sst2, tmp_path, setting, value, group):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=rf"--{setting.replace('_', '-')} is not read when fitting tfidf data \(it is a {group}"):
        tuneforge.fit(data=str(sst2), columns="text,label", model="tfidf", out=str(out), **{setting: value}, **QUICK)
    assert not out.exists()  # refused before anything is written


def test_cli_refuses_epochs_naming_the_flag(sst2, tmp_path, capsys):
    code = main(["fit", "--data", str(sst2), "--columns", "text,label", "--model", "tfidf", "--epochs", "3",
                 "--out", str(tmp_path / "r"), "--no-progress"])
    assert code == 2 and "--epochs is not read when fitting tfidf data" in capsys.readouterr().err


def test_tfidf_settings_reach_the_fit(sst2, tmp_path):
    r = tuneforge.fit(data=str(sst2), columns="text,label", model="tfidf", tfidf_analyzer="char_wb", tfidf_ngrams="2,4",
                      tfidf_classifier="logreg", tfidf_c=5.0, out=str(tmp_path / "r"), **QUICK)
    info = r.report["tfidf"]
    assert (info["analyzer"], info["ngram_range"], info["classifier"], info["C"]) == ("char_wb", [2, 4], "logreg", 5.0)
    assert r.report["test"]["accuracy"] > 0.6
    with pytest.raises(ConfigError, match="--tfidf-ngrams"):
        tuneforge.fit(data=str(sst2), columns="text,label", model="tfidf", tfidf_ngrams="2", out=str(tmp_path / "x"), **QUICK)


def test_chinese_texts_get_jieba_words_and_characters_and_round_trip_through_the_bundle(tmp_path):
    src = DATASETS / "tnews"
    if not (src / "train.tsv").is_file():
        pytest.fail(f"real test data missing: {src} (set TUNEFORGE_DATASETS to the datasets folder)")
    lines = (src / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "train.tsv").write_text("".join(lines[:4000]), encoding="utf-8")
    (tmp_path / "test.tsv").write_text("".join(lines[4000:4300]), encoding="utf-8")
    r = tuneforge.fit(data=str(tmp_path / "train.tsv"), test=str(tmp_path / "test.tsv"), columns="text,label",
                      model="tfidf", out=str(tmp_path / "run"), **QUICK)
    info = r.report["tfidf"]
    assert (info["analyzer"], info["segmenter"], info["classifier"]) == ("word+char", "jieba", "svm+nb")
    assert "CJK" in info["why"] and "chosen on validation" in info["nb_choice"]
    card = json.loads((r.run_dir / "model" / "config.json").read_text(encoding="utf-8"))
    assert card["preprocessing"]["segmenter"] == "jieba" and card["tfidf"]["classifier"] == "svm+nb"
    test = r.report["test"]
    majority = max(m["support"] for m in test["per_class"].values()) / test["n"]
    assert test["accuracy"] > majority + 0.15, (test["accuracy"], majority)  # ~0.12 majority; ~0.4 here
    texts = [line.rpartition("\t")[0] for line in lines[4000:4300]]
    got = tuneforge.predict(r.run_dir, texts=texts)
    truth = [line.rstrip("\n").rpartition("\t")[2] for line in lines[4000:4300]]
    known = [i for i, t in enumerate(truth) if t in r.report["classes"]]
    acc = np.mean([got[i]["label"] == truth[i] for i in known])
    assert acc == pytest.approx(test["accuracy"], abs=1e-12)
