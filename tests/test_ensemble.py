"""Ensembles of trained models (issues 17 and 20): `tuneforge ensemble` writes a bundle of member
bundles whose answers are the weighted mean of the members' probabilities; predict, evaluate,
batch and serve take it. Members here: a TF-IDF model and a small GRU on 5 real Banking77
intents (different preprocessing, same classes)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
import pytest

import tuneforge
from tuneforge.cli import main
from tuneforge.core.ensemble import simplex_grid
from tuneforge.deploy.predictor import EnsemblePredictor, Predictor, open_predictor
from tuneforge.errors import ConfigError
from tuneforge.tasks.registry import softmax

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
if not DATASETS.is_dir():
    DATASETS = Path("/work/shared/datasets")
KEEP = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked"]
QUICK = dict(text_column="text", label_column="category", progress=False, tensorboard=False, threads=2)


def _slice(dst: Path, split: str, classes: list[str], skip: int, n: int) -> Path:
    rows = list(csv.DictReader(open(DATASETS / "banking77" / f"{split}.csv", newline="", encoding="utf-8")))
    chosen = [r for c in classes for r in [r for r in rows if r["category"] == c][skip:skip + n]]
    path = dst / f"{split}-{len(classes)}-{skip}.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "category"])
        w.writeheader()
        w.writerows(chosen)
    return path


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    """train (40 a class), val (the next 15 training questions a class), test (20 a class)."""
    if not (DATASETS / "banking77").is_dir():
        pytest.fail(f"real test data missing: {DATASETS / 'banking77'}")
    d = tmp_path_factory.mktemp("b5")
    return {"train": _slice(d, "train", KEEP, 0, 40), "val": _slice(d, "train", KEEP, 40, 15),
            "test": _slice(d, "test", KEEP, 0, 20), "train4": _slice(d, "train", KEEP[:4], 0, 40)}


@pytest.fixture(scope="module")
def members(tables, tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("members")
    tfidf = tuneforge.fit(data=str(tables["train"]), val=str(tables["val"]), model="tfidf", out=str(d / "tfidf"), **QUICK)
    gru = tuneforge.fit(data=str(tables["train"]), val=str(tables["val"]), model="gru", epochs=3, embed_dim=16,
                        hidden_size=16, num_layers=1, max_length=24, batch_size=16, lr=3e-3, out=str(d / "gru"),
                        baseline=False, **QUICK)
    return [tfidf.run_dir, gru.run_dir]


@pytest.fixture(scope="module")
def ens(members, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ens") / "ensemble"
    tuneforge.ensemble(members, out, weights=[3, 1])
    return out


def _texts(path: Path) -> list[str]:
    return [r["text"] for r in csv.DictReader(open(path, encoding="utf-8"))]


def test_probabilities_are_the_weighted_mean_of_the_members(ens, members, tables):
    config = json.loads((ens / "config.json").read_text())
    assert config["format"] == "tuneforge-ensemble" and config["weights"] == [0.75, 0.25]
    assert config["combine"] == "classification" and config["classes"] == sorted(KEEP)
    rows = [{"text": t} for t in _texts(tables["test"])]
    p = open_predictor(ens, device="cpu")
    assert isinstance(p, EnsemblePredictor) and p.task.name == "text-tfidf"  # the first member's task reads the data
    got = softmax(p.outputs(rows).astype(np.float64))
    alone = []
    for m in members:
        single = Predictor(m / "model")
        prob = softmax(single.outputs(rows).astype(np.float64))
        alone.append(prob[:, [single.classes.index(c) for c in p.classes]])  # matched by class name
    want = 0.75 * alone[0] + 0.25 * alone[1]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert not np.allclose(alone[0], alone[1], atol=1e-2)  # two different models, so the mean is not either one
    # predict's answer is the mean's ranking and probability
    answers = tuneforge.predict(ens, texts=_texts(tables["test"])[:3], top_k=2, device="cpu")
    for a, w in zip(answers, want[:3]):
        assert a["label"] == p.classes[int(w.argmax())] and a["top"][0]["probability"] == pytest.approx(w.max(), abs=1e-5)


def test_evaluate_batch_and_the_bundle_files(ens, members, tables, tmp_path, capsys):
    assert main(["evaluate", str(ens), "--data", str(tables["test"]), "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["test"]["n"] == 100 and printed["accuracy"] == report["test"]["accuracy"] >= 0.6
    assert report["model"] == "ensemble(tfidf+gru)"
    assert main(["batch", str(ens), str(tables["test"]), "--output", str(tmp_path / "o.csv"), "--no-progress",
                 "--device", "cpu"]) == 0
    out = list(csv.DictReader(open(tmp_path / "o.csv")))
    assert len(out) == 100 and np.mean([r["label"] == r["category"] for r in out]) == report["test"]["accuracy"]
    # members copied whole: each still a bundle (own manifest, verified when loaded); nothing pickled
    for i, m in enumerate(members):
        names = sorted(p.relative_to(m / "model").as_posix() for p in (m / "model").rglob("*") if p.is_file())
        assert sorted(p.relative_to(ens / "members" / str(i)).as_posix()
                      for p in (ens / "members" / str(i)).rglob("*") if p.is_file()) == names
        assert Predictor(ens / "members" / str(i)).classes == sorted(KEEP)
    for f in ens.rglob("*.safetensors"):
        raw = f.read_bytes()
        assert raw[8:10] == b'{"' and not raw.startswith((b"\x80", b"PK"))  # safetensors header; no pickle, no torch zip
    assert not [f for f in ens.rglob("*") if f.suffix in (".pkl", ".pickle", ".pt", ".pth", ".joblib", ".bin")]
    with pytest.raises(ConfigError, match="an ensemble bundle has no single model"):
        tuneforge.load(ens)


def test_serve_and_its_page(ens, live_server):
    from fastapi.testclient import TestClient

    from tuneforge.deploy.serve import ServeSettings, create_app
    with TestClient(create_app(ens, ServeSettings(device="cpu"))) as client:
        import time
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        info = client.get("/v1/info").json()
        assert info["classes"] == sorted(KEEP) and info["inputs"] == ["text"] and info["model"] == "ensemble(tfidf+gru)"
        r = client.post("/v1/predict", json={"text": "my card has not arrived yet"}).json()
        direct = tuneforge.predict(ens, texts=["my card has not arrived yet"], device="cpu")[0]
        assert r["label"] == direct["label"] and r["top"][0] == direct["top"][0]
        assert "<html" in client.get("/").text.lower()


def test_mismatched_members_and_bad_weights_are_refused(members, tables, tmp_path):
    four = tuneforge.fit(data=str(tables["train4"]), model="tfidf", out=str(tmp_path / "four"), **QUICK)
    with pytest.raises(ConfigError, match=r"four/model: its classes differ .*it lacks pin_blocked"):
        tuneforge.ensemble([members[0], four.run_dir], tmp_path / "e")
    with pytest.raises(ConfigError, match="--weights: 3 weights for 2 members"):
        tuneforge.ensemble(members, tmp_path / "e", weights=[1, 1, 1])
    with pytest.raises(ConfigError, match="--weights: weights must be non-negative"):
        tuneforge.ensemble(members, tmp_path / "e", weights=[1, -1])
    assert main(["ensemble", str(members[0]), str(members[1]), "--out", str(tmp_path / "e"), "--weights", "a,b"]) == 2
    assert not (tmp_path / "e").exists()


def test_val_chooses_weights_reading_only_that_table(members, tables, tmp_path, monkeypatch):
    from tuneforge.tasks.text import infer
    read: list[str] = []
    original = infer.read_text_file
    monkeypatch.setattr(infer, "read_text_file", lambda path, *a, **k: read.append(str(path)) or original(path, *a, **k))
    config = tuneforge.ensemble(members, tmp_path / "e", val=tables["val"], device="cpu")
    assert read == [str(tables["val"])]  # neither the test table nor the members' training tables
    chosen = config["weights_chosen"]
    assert chosen["on"] == str(tables["val"].resolve()) and chosen["rows"] == 75 and chosen["grid_points"] == 12
    assert sum(config["weights"]) == pytest.approx(1) and min(config["weights"]) >= 0
    # the chosen weights are the grid's best on val: no other point has a higher accuracy
    assert chosen["chosen"]["accuracy"] >= max(chosen["equal_weights"]["accuracy"],
                                               *[m["accuracy"] for m in chosen["members_alone"]])
    assert json.loads((tmp_path / "e" / "config.json").read_text())["weights"] == config["weights"]
    with pytest.raises(ConfigError, match=r"--val: .*train-5-0.csv is the table .*tfidf/model was trained on"):
        tuneforge.ensemble(members, tmp_path / "t", val=tables["train"])


def test_grid_covers_the_simplex():
    g = simplex_grid(3)
    assert len(g) == 1 + 66 and np.allclose(g.sum(1), 1) and (g >= 0).all()
    assert np.allclose(g[0], 1 / 3) and any(np.allclose(p, [0.7, 0.2, 0.1]) for p in g)


def test_help_of_the_verb(capsys):
    with pytest.raises(SystemExit):
        main(["ensemble", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "RUN_OR_BUNDLE" in out and "--weights" in out and "--val" in out and "never the test set" in out.lower()


def test_onnx_export_runs_the_members_graphs(ens, tables, tmp_path):
    config = tuneforge.export(ens, tmp_path / "onnx", format="onnx")
    assert {"members/0/model.onnx", "members/1/model.onnx"} <= set(config["files"])
    rows = [{"text": t} for t in _texts(tables["test"])]
    p = open_predictor(tmp_path / "onnx", backend="onnx", device="cpu")
    assert p.backend == "onnx" and all(m._session is not None for m in p.members)
    want = softmax(open_predictor(ens, device="cpu").outputs(rows).astype(np.float64))
    np.testing.assert_allclose(softmax(p.outputs(rows).astype(np.float64)), want, atol=1e-5)
    with pytest.raises(ConfigError, match="a text-tfidf model is exported as fp32 ONNX only"):
        tuneforge.export(ens, tmp_path / "int8", format="onnx", quantize="int8")  # as the member alone is refused


TINY_GRU = dict(model="gru", embed_dim=8, hidden_size=8, num_layers=1, max_length=8, batch_size=16, lr=1e-2, epochs=2,
                progress=False, tensorboard=False, threads=2, baseline=False)


def test_regressors_and_multilabel_classifiers(tmp_path):
    """Values averaged in the target's units (members scale their targets on their own data);
    multi-label probabilities averaged with the thresholds."""
    words = ["good", "bad", "fine", "awful"]
    reg = [(f"{words[i % 4]} thing {i}", (i % 4) * 1.5) for i in range(48)]
    multi = [(f"{words[i % 4]} thing {i}", ["pos", "neg", "pos|mild", "neg"][i % 4]) for i in range(48)]
    for name, rows in (("reg", reg), ("multi", multi)):
        (tmp_path / f"{name}.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    runs = [tuneforge.fit(data=str(tmp_path / "reg.csv"), task="regression", seed=s, out=str(tmp_path / f"r{s}"),
                          **TINY_GRU).run_dir for s in (0, 1)]
    tuneforge.ensemble(runs, tmp_path / "re", weights=[1, 3])
    texts = [t for t, _ in reg[:8]]
    alone = [np.array([r["value"] for r in tuneforge.predict(run, texts=texts, device="cpu")]) for run in runs]
    got = np.array([r["value"] for r in tuneforge.predict(tmp_path / "re", texts=texts, device="cpu")])
    np.testing.assert_allclose(got, 0.25 * alone[0] + 0.75 * alone[1], atol=1e-5)
    report = tuneforge.evaluate(tmp_path / "re", tmp_path / "reg.csv", out=tmp_path / "rev", progress=False, device="cpu")
    assert report["test"]["n"] == 48 and report["test"]["rmse"] >= 0

    mruns = [tuneforge.fit(data=str(tmp_path / "multi.csv"), multi_label=True, seed=s, out=str(tmp_path / f"m{s}"),
                           **TINY_GRU).run_dir for s in (0, 1)]
    p = open_predictor(tuneforge.ensemble(mruns, tmp_path / "me")["_dir"], device="cpu")
    members = [Predictor(m / "model") for m in mruns]
    rows = [{"text": t} for t in texts]
    want = np.mean([m.outputs(rows)[:, [m.classes.index(c) for c in p.classes]] for m in members], axis=0)
    np.testing.assert_allclose(p.outputs(rows), want, atol=1e-6)
    th = np.mean([np.asarray(m.task.thresholds)[[m.classes.index(c) for c in p.classes]] for m in members], axis=0)
    np.testing.assert_allclose(p.task.thresholds, th)
    answer = p.iter_predict(rows[:1]).__next__()
    assert answer["predicted"] == [c for c, q, t in zip(p.classes, want[0], th) if q >= t]
    with pytest.raises(ConfigError, match=r"m0/model: a text-multilabel model \(multilabel of text\), but .*r0/model"):
        tuneforge.ensemble([runs[0], mruns[0]], tmp_path / "x")


@pytest.mark.e2e
def test_auto_text_ensemble_of_the_best_two(tmp_path, monkeypatch):
    """`--model auto` on text: the best two members on validation make an "ensemble" row, its
    weights chosen on the shared validation split; when chosen (forced here: which row wins on a
    small table is chance) the run's bundle is the ensemble bundle."""
    from tuneforge.tasks.auto import fit as auto_fit
    lines = (DATASETS / "sst2" / "sentiment-train").read_text(encoding="utf-8").splitlines()
    (tmp_path / "train.tsv").write_text("\n".join(lines[:150]) + "\n", encoding="utf-8")
    (tmp_path / "test.tsv").write_text("\n".join(lines[150:190]) + "\n", encoding="utf-8")
    choose = auto_fit._choose
    monkeypatch.setattr(auto_fit, "_choose", lambda board: "ensemble" if any(
        r["name"] == "ensemble" and r["status"] == "trained" for r in board) else choose(board))
    run = tuneforge.fit(data=str(tmp_path / "train.tsv"), test=str(tmp_path / "test.tsv"), columns="text,label",
                        model="auto", time_budget=3, out=str(tmp_path / "auto"), progress=False, tensorboard=False,
                        threads=2)
    board = run.report["leaderboard"]
    [row] = [r for r in board if r["name"] == "ensemble"]
    trained = sorted((r for r in board if r["status"] == "trained" and r["name"] != "ensemble"),
                     key=lambda r: (r["val"]["accuracy"], r["val"]["macro_f1"]), reverse=True)
    assert row["status"] == "trained" and row["chosen"] and row["members"] == [r["name"] for r in trained[:2]]
    assert sum(row["weights"]) == pytest.approx(1)
    config = json.loads((tmp_path / "auto" / "model" / "config.json").read_text())
    val = tmp_path / "auto" / "data" / "val.jsonl"
    assert config["format"] == "tuneforge-ensemble" and config["weights_chosen"]["on"] == str(val.resolve())
    # the row's val score is the bundle's own on the shared validation split; the run reports it
    ev = tuneforge.evaluate(tmp_path / "auto", val, out=tmp_path / "ev", progress=False, device="cpu")
    assert ev["test"]["accuracy"] == row["val"]["accuracy"] == run.report["val"]["accuracy"]
    assert run.report["test"]["accuracy"] == row["test"]["accuracy"] and run.report["chosen"] == "ensemble"
    assert tuneforge.predict(tmp_path / "auto", texts=["a moving , beautifully acted film ."])[0]["label"] in ("0", "1")
    assert isinstance(run.model, torch.nn.Module)
