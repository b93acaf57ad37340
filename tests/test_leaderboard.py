"""`tuneforge runs`: the leaderboard of real run folders (two TF-IDF fits, a GRU fit that failed
after its first epoch, the same left as a killed run leaves it), sorted, as csv and json, and the
Python API's rows; a path with no run is refused naming it."""
from __future__ import annotations

import csv
import io
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tuneforge
from tuneforge.cli import main
from tuneforge.core.leaderboard import lower_is_better

QUICK = {"progress": False, "tensorboard": False, "threads": 1}


def _table(path: Path, rows: int = 200, seed: int = 0) -> Path:
    """A two-class table whose sentiment word is right 80% of the time (C changes the val scores)."""
    r = random.Random(seed)
    pos, neg = "good great fine lovely superb nice".split(), "bad awful poor terrible sad ugly".split()
    noise = "the a movie film plot actor scene day".split()
    lines = []
    for _ in range(rows):
        label = r.choice("pn")
        word = r.choice(pos if label == "p" else neg)
        if r.random() < 0.2:
            word = r.choice(neg if label == "p" else pos)
        lines.append(" ".join(r.sample(noise, 3) + [word]) + "," + label)
    path.write_text("text,label\n" + "\n".join(lines) + "\n")
    return path


class Boom(tuneforge.Callback):
    """Fails the run when epoch 2 ends (epoch 1 is saved by then)."""

    def on_epoch_end(self, engine, record):
        if record["epoch"] == 2:
            raise RuntimeError("disk on fire")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """study/trials/{0000,0001}: TF-IDF fits with C 10 and 0.1; study/other/gru-failed: a GRU
    fit failed in epoch 2; study/other/gru-killed: its copy without failed.json (what kill -9 leaves);
    study/trials/0002: a failed search trial."""
    root = tmp_path_factory.mktemp("study")
    data = _table(root / "t.csv")
    for i, c in enumerate((10.0, 0.1)):
        tuneforge.fit(data=str(data), model="tfidf", tfidf_c=c,
                      out=str(root / "trials" / f"000{i}"), **QUICK)
    with pytest.raises(RuntimeError, match="disk on fire"):
        tuneforge.fit(data=str(data), model="gru", epochs=3, embed_dim=8, hidden_size=8,
                      num_layers=1, lr=0.01, baseline=False, out=str(root / "other" / "gru-failed"),
                      callbacks=[Boom()], **QUICK)
    shutil.copytree(root / "other" / "gru-failed", root / "other" / "gru-killed")
    (root / "other" / "gru-killed" / "failed.json").unlink()
    # a search trial that failed before its fit opened a run folder: `tuneforge search` writes FAILED.txt
    (root / "trials" / "0002").mkdir()
    (root / "trials" / "0002" / "FAILED.txt").write_text("ConfigError: --lr must be > 0\n")
    return root


def test_rows_sorted_with_states_settings_and_metrics(study):
    rows = tuneforge.runs(study)
    by_run = {Path(r["run"]).name: r for r in rows}
    assert set(by_run) == {"0000", "0001", "0002", "gru-failed", "gru-killed"}
    assert by_run["0002"]["state"] == "failed" and by_run["0002"]["error"] == "ConfigError: --lr must be > 0"
    assert rows[-1]["run"].endswith("0002")  # no metric: last
    c01, c10 = by_run["0001"], by_run["0000"]
    # val accuracy, descending (the default), read from each report.json
    accs = [r.get("val_accuracy") for r in rows]
    assert accs[:4] == sorted(accs[:4], reverse=True) and [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    for name in ("0000", "0001"):
        report = json.loads((study / "trials" / name / "report.json").read_text())
        assert by_run[name]["val_accuracy"] == report["val"]["accuracy"]
        assert by_run[name]["val_macro_f1"] == report["val"]["macro_f1"]
        assert by_run[name]["wall_s"] == report["wall_s"] and by_run[name]["state"] == "finished"
    assert c01["val_accuracy"] != c10["val_accuracy"]  # the order is a real one
    assert c01["task"] == "text-tfidf" and c01["model"] == "tfidf"
    # what differs between the runs of a model is shown; a TF-IDF fit has no epochs to show
    assert c01["settings"] == {"tfidf_c": 0.1} and c10["settings"] == {"tfidf_c": 10.0}
    assert by_run["gru-failed"]["settings"] == {"lr": 0.01, "epochs": 3, "batch_size": 64, "freeze": "none",
                                                "optimizer": "adamw"}
    failed, killed = by_run["gru-failed"], by_run["gru-killed"]
    assert failed["state"] == "failed" and "disk on fire" in failed["error"]
    assert killed["state"] == "unfinished" and killed["error"] is None
    assert failed["epochs_run"] == 2 and failed["val_loss"] > 0  # from metrics.jsonl: 2 epochs logged

    # ascending for a loss, and --top
    by_loss = tuneforge.runs(study / "other", study / "trials", sort="val_loss", top=3)
    losses = [r["val_loss"] for r in by_loss]
    assert len(by_loss) == 3 and losses == sorted(losses)
    assert lower_is_better("val_loss") and lower_is_better("test_rmse") and not lower_is_better("val_macro_f1")


def test_cli_csv_json_table_and_refusals(study, capsys, tmp_path):
    assert main(["runs", str(study / "trials"), "--format", "csv", "--sort", "val.macro_f1"]) == 0
    rows = [r for r in csv.DictReader(io.StringIO(capsys.readouterr().out)) if r["state"] != "failed"]
    f1 = {n: json.loads((study / "trials" / n / "report.json").read_text())["val"]["macro_f1"] for n in ("0000", "0001")}
    assert [Path(r["run"]).name for r in rows] == sorted(f1, key=f1.get, reverse=True)
    assert [float(r["val_macro_f1"]) for r in rows] == sorted(f1.values(), reverse=True)
    assert {r["tfidf_c"] for r in rows} == {"0.1", "10.0"} and rows[0]["state"] == "finished"

    assert main(["runs", str(study), "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(tuneforge.runs(study), default=str))

    assert main(["runs", str(study), "--top", "2", "--sort", "val_loss"]) == 0  # not a terminal: the plain table
    lines = capsys.readouterr().out.splitlines()
    best = tuneforge.runs(study, sort="val_loss")[0]
    assert lines[0].split()[:4] == ["#", "run", "model", "state"] and len(lines) == 3
    assert lines[1].split()[1] == best["run"] and f"{best['val_loss']:.4f}" in lines[1]

    missing = tmp_path / "nope"
    assert main(["runs", str(study), str(missing)]) == 2
    assert f"{missing}: no such folder" in capsys.readouterr().err
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    assert main(["runs", str(tmp_path / "empty")]) == 2
    assert f"{tmp_path / 'empty'}: no run folder in it" in capsys.readouterr().err
    assert main(["runs", str(study), "--sort", "val_r2"]) == 2
    assert "--sort val_r2: no run has this metric" in capsys.readouterr().err


def test_runs_help():
    out = subprocess.run([sys.executable, "-m", "tuneforge.cli", "runs", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--sort METRIC" in out and "{table,csv,json}" in out and "--top K" in out
