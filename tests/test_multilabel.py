"""Multi-label text (`fit --multi-label`): on generated support messages whose labels are a
known function of their words (a keyword present -> its label), the model finds the rule; the
per-label thresholds come from validation only; predict, evaluate, serve and ONNX answer the
same labels; both table layouts parse and bad input is refused naming its file, line or flag."""
from __future__ import annotations

import json
import random
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

import tuneforge
from conftest import DATASETS
from tuneforge.core.data.multilabel import read_multilabel_file
from tuneforge.core.metrics import multilabel_metrics, tune_thresholds
from tuneforge.deploy.predictor import Predictor
from tuneforge.deploy.serve import ServeSettings, create_app
from tuneforge.errors import ConfigError, DataError

# a keyword in the text -> its label; a message may carry none, one or several
RULE = {"refund": "billing", "invoice": "billing", "card": "cards", "pin": "cards", "transfer": "payments",
        "abroad": "travel"}
FILLER = "please help me today with my account thanks hello the a this is about urgent question".split()


def messages(n: int, seed: int) -> list[tuple[str, list[str]]]:
    r = random.Random(seed)
    out = []
    for _ in range(n):
        words = r.sample(FILLER, 5) + r.sample(list(RULE), r.randint(0, 3))
        r.shuffle(words)
        out.append((" ".join(words), sorted({RULE[w] for w in words if w in RULE})))
    return out


def write_csv(path: Path, rows: list[tuple[str, list[str]]]) -> Path:
    path.write_text("text,labels\n" + "".join(f"{t},{'|'.join(ls)}\n" for t, ls in rows), encoding="utf-8")
    return path


def fit(tmp: Path, test: Path, out: str, **kw):
    return tuneforge.fit(data=str(tmp / "train.csv"), test=str(test), multi_label=True, label_column="labels",
                         model="gru", epochs=8, lr=3e-3, out=str(tmp / out), progress=False, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multilabel")
    write_csv(tmp / "train.csv", messages(300, 0))
    test = write_csv(tmp / "test.csv", messages(120, 1))
    return tmp, test, fit(tmp, test, "run")



def assert_onnx_answers_as_torch(bundle: Path, items: list, k: int) -> None:
    """A multi-label bundle's ONNX graph gives torch's label sets and probabilities (its sigmoid
    included) on prepared `items`. (tests/test_multilabel_images.py checks image bundles with it.)"""
    torch_p = Predictor(bundle, backend="torch").top_k(items, k)
    onnx_p = Predictor(bundle, backend="onnx").top_k(items, k)
    for a, b in zip(torch_p, onnx_p):
        assert a["predicted"] == b["predicted"]
        assert {t["label"]: t["probability"] for t in a["top"]} == pytest.approx(
            {t["label"]: t["probability"] for t in b["top"]}, abs=1e-5)
        assert all(0 <= t["probability"] <= 1 for t in b["top"])  # the ONNX graph answers probabilities

def test_the_model_finds_the_rule_well_above_chance(trained):
    tmp, test, result = trained
    report = result.report
    m = report["test"]
    # predicting every label for every row (recall 1) is the chance anchor: F1 = 2p / (1 + p)
    y = np.array([[l in ls for l in ("billing", "cards", "payments", "travel")] for _, ls in messages(120, 1)])
    chance = 2 * y.mean() / (1 + y.mean())
    assert m["micro_f1"] >= 0.9 and m["micro_f1"] > chance + 0.3, (m["micro_f1"], chance)
    assert m["mAP"] >= 0.9 and m["subset_accuracy"] >= 0.7 and set(m["per_label"]) == {"billing", "cards", "payments", "travel"}
    assert all({"precision", "recall", "f1", "ap", "threshold", "support"} <= set(v) for v in m["per_label"].values())
    assert report["task"] == "multi-label" and report["config"]["monitor"] == "val_micro_f1"
    assert report["baseline"]["metric"] == "micro_f1" and report["baseline"]["test"]["micro_f1"] > chance
    bundle = json.loads((result.run_dir / "model" / "config.json").read_text())
    assert bundle["task"] == "text-multilabel" and len(bundle["thresholds"]) == 4
    html = (result.run_dir / "report.html").read_text()
    assert "Per-label metrics (test)" in html and "micro-F1" in html and "Model vs baseline" in html


def test_thresholds_are_tuned_on_validation_and_test_data_never_changes_them(trained):
    tmp, test, result = trained
    # a label whose positives score above 0.3 and negatives below 0.2 gets a threshold between them
    probs = np.array([[0.35], [0.8], [0.31], [0.1], [0.19], [0.05]])
    t = tune_thresholds(probs, np.array([[1], [1], [1], [0], [0], [0]]), min_positives=3)[0]
    assert 0.19 < t <= 0.31
    assert tune_thresholds(probs, np.zeros((6, 1)))[0] == 0.5  # no positive: nothing to tune on
    # a label with too few positives shares the threshold chosen on all labels together
    two = np.hstack([probs, [[0.9], [0.7], [0.2], [0.1], [0.6], [0.3]]])
    own, rare = tune_thresholds(two, np.array([[1, 1], [1, 1], [1, 0], [0, 0], [0, 0], [0, 0]]), min_positives=3)
    assert 0.19 < own <= 0.31 and 0.3 < rare <= 0.31  # shared: all 5 positives and one negative (0.6) in
    other = write_csv(tmp / "other_test.csv", [(t, []) for t, _ in messages(40, 7)])  # every label absent
    again = fit(tmp, other, "run_other_test", baseline=False)
    first = json.loads((result.run_dir / "model" / "config.json").read_text())["thresholds"]
    assert json.loads((again.run_dir / "model" / "config.json").read_text())["thresholds"] == first
    assert result.report["thresholds"] == again.report["thresholds"]


def test_predict_evaluate_serve_and_onnx_answer_the_same_labels(trained, tmp_path, live_server):
    tmp, test, result = trained
    run = result.run_dir
    answers = tuneforge.predict(run, texts=["I need a refund on my card", "hello thanks"])
    assert set(answers[0]["predicted"]) == {"billing", "cards"} and answers[0]["label"] == "billing|cards"
    assert answers[1]["predicted"] == [] and answers[1]["label"] == ""
    assert all("probability" in t and "threshold" in t for t in answers[0]["top"])
    ev = tuneforge.evaluate(run, test, out=tmp_path / "eval", progress=False)
    assert ev["test"]["micro_f1"] == pytest.approx(result.report["test"]["micro_f1"], abs=1e-6)

    onnx = tmp_path / "onnx"
    tuneforge.export(run, onnx, format="onnx")
    config = json.loads((onnx / "config.json").read_text())
    assert config["onnx"]["max_abs_diff"] < 1e-4 and config["thresholds"] == list(result.report["thresholds"].values())
    texts = [t for t, _ in messages(12, 3)]
    assert_onnx_answers_as_torch(onnx, [Predictor(onnx).task.prepare(text=t) for t in texts], 4)

    base = live_server(create_app(run / "model", ServeSettings(backend="torch")), ready=True)
    r = httpx.post(f"{base}/v1/predict", json={"text": "I need a refund on my card"}, timeout=30)
    assert r.status_code == 200, r.text
    assert set(r.json()["predicted"]) == {"billing", "cards"}
    page = httpx.get(f"{base}/").text
    assert "body.predicted" in page  # the try-it page lists the labels above their thresholds


def test_layouts_pipe_list_and_01_columns_parse_the_same(tmp_path):
    rows = [("refund please", ["billing"]), ("card abroad", ["cards", "travel"]), ("hello", [])]
    pipe = read_multilabel_file(write_csv(tmp_path / "a.csv", rows), "text", "labels")
    (tmp_path / "b.json").write_text(json.dumps([{"text": t, "intents": ls} for t, ls in rows], indent=2))
    listed = read_multilabel_file(tmp_path / "b.json", "text", "intents")
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t, "labels": ls}) + "\n" for t, ls in rows))
    jsonl = read_multilabel_file(tmp_path / "c.jsonl", "text", "labels")
    names = ["billing", "cards", "travel"]
    (tmp_path / "d.tsv").write_text("text\t" + "\t".join(names) + "\n" +
                                    "".join(t + "\t" + "\t".join(str(int(n in ls)) for n in names) + "\n" for t, ls in rows))
    columns = read_multilabel_file(tmp_path / "d.tsv", "text", "label", names)
    for s in (pipe, listed, jsonl, columns):
        assert s.classes == names and s.texts == [t for t, _ in rows]
        assert s.labels.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]  # "hello": no label, kept as a row
    # validation/test: a label train lacks is counted, the row stays with its other labels
    test = read_multilabel_file(write_csv(tmp_path / "t.csv", [("x", ["cards", "loans"])]), "text", "labels",
                                classes=names)
    assert test.unknown == {"loans": 1} and test.labels.tolist() == [[0, 1, 0]]
    m = multilabel_metrics(np.array([[5.0, -5, -5], [-5, 5, 5], [-5, -5, -5]]), pipe.labels, names)
    assert m["micro_f1"] == 1.0 and m["subset_accuracy"] == 1.0 and m["mAP"] == 1.0


def test_bad_input_is_refused_naming_the_file_line_or_flag(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,labels\nrefund,billing\ncard,cards||travel\n")
    with pytest.raises(DataError, match=r"bad\.csv line 3: an empty label"):
        read_multilabel_file(bad, "text", "labels")
    cols = tmp_path / "cols.csv"
    cols.write_text("text,billing,cards\nrefund,1,0\ncard,0,yes\n")
    with pytest.raises(DataError, match=r"--label-columns: .*cols\.csv.*no column 'travel'"):
        read_multilabel_file(cols, "text", "label", ["billing", "travel"])
    with pytest.raises(DataError, match=r"cols\.csv line 3: column 'cards' holds 'yes'"):
        read_multilabel_file(cols, "text", "label", ["billing", "cards"])
    empty = write_csv(tmp_path / "empty.csv", [("hello", []), ("thanks", [])])
    with pytest.raises(DataError, match=r"empty\.csv: no row carries a label in column 'labels'"):
        read_multilabel_file(empty, "text", "labels")
    # a record without the label field carries no label (NLU++'s layout) unless it is the first:
    # then the column is not there at all, a wrong --label-column
    later = tmp_path / "later.json"
    later.write_text(json.dumps([{"text": "a", "intents": ["x"]}, {"text": "b"}]))
    assert read_multilabel_file(later, "text", "intents").labels.tolist() == [[1], [0]]
    first = tmp_path / "first.json"
    first.write_text(json.dumps([{"text": "b"}, {"text": "a", "intents": ["x"]}]))
    with pytest.raises(DataError, match=r"first\.json record 1: no field 'intents'"):
        read_multilabel_file(first, "text", "intents")
    with pytest.raises(DataError, match=r"later\.json record 1: no field 'txt'"):
        read_multilabel_file(later, "txt", "intents")
    with pytest.raises(ConfigError, match="--monitor val_micro_f1 is for multi-label"):
        tuneforge.fit(data=str(write_csv(tmp_path / "s.csv", [("a b", ["x"])] * 4)), label_column="labels",
                      model="gru", monitor="val_micro_f1", out=str(tmp_path / "r"), progress=False)


@pytest.mark.slow
@pytest.mark.e2e
def test_the_nlupp_example_runs_as_written_on_a_slice(tmp_path, monkeypatch):
    """examples/customer_service/MULTILABEL.md's commands, in order, on 15 messages of each training
    fold and 6 of each test fold (the serve line is exercised above on a multi-label bundle)."""
    doc = (Path(__file__).resolve().parents[1] / "examples" / "customer_service" / "MULTILABEL.md").read_text()
    block = doc.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [l.split("  #")[0].strip() for l in block.splitlines() if l.strip() and not l.startswith("#")]
    (tmp_path / "nlupp").mkdir()
    for i in range(20):
        records = json.loads((DATASETS / "nlupp_banking" / f"fold{i}.json").read_text(encoding="utf-8"))
        (tmp_path / "nlupp" / f"fold{i}.json").write_text(json.dumps(records[:15 if i < 10 else 6]))
    monkeypatch.chdir(tmp_path)
    printed = {}
    for line in lines:
        words = shlex.split(line)
        if words[:2] == ["tuneforge", "serve"]:
            continue
        cmd = [sys.executable, *words[1:]] if words[0] == "python" else [sys.executable, "-m", "tuneforge", *words[1:]]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{line}\n{r.stderr[-2000:]}"
        printed[words[1]] = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    report = json.loads((tmp_path / "runs" / "nlupp" / "report.json").read_text())
    p = report["test"]["labels_per_row"] / len(report["classes"])
    assert report["test"]["n"] == 60 and report["test"]["micro_f1"] > 2 * p / (1 + p) + 0.1  # above the chance anchor
    answer = printed["predict"][0]
    assert set(answer["predicted"]) <= set(report["classes"]) and answer["label"] == "|".join(answer["predicted"])
    assert printed["evaluate"][-1]["micro_f1"] == pytest.approx(report["test"]["micro_f1"], abs=1e-6)


def test_search_optimises_a_multi_label_metric(trained, tmp_path):
    tmp, test, result = trained
    fit = {"data": str(tmp / "train.csv"), "multi_label": True, "label_column": "labels", "model": "gru", "epochs": 2,
           "baseline": False, "progress": False}
    with pytest.raises(ConfigError, match="--objective accuracy: a multi-label fit does not report it"):
        tuneforge.search(fit=fit, space={"lr": {"choice": [3e-3]}}, out=tmp_path / "s0", trials=1, objective="accuracy")
    found = tuneforge.search(fit=fit, space={"lr": {"choice": [3e-3]}}, out=tmp_path / "s", trials=1, objective="mAP")
    assert found["objective"] == "mAP" and found["direction"] == "maximize"
    trial = json.loads((Path(found["best"]["run_dir"]) / "report.json").read_text())
    assert found["best"]["value"] == pytest.approx(trial["val"]["mAP"])
