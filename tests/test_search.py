"""`tuneforge search` (tuneforge/tasks/search): a small study on real images finds its best trial
and writes a bundle predict reads; a worker killed with kill -9 mid-trial resumes with no trial
lost or duplicated; the median pruner stops an absurd learning rate before its last epoch; an
invalid space is refused naming its key."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

import tuneforge
from tuneforge.cli import main
from tuneforge.errors import ConfigError
from tuneforge.tasks.search.study import shown_url, storage_url

ROOT = Path(__file__).resolve().parents[1]


def _fit(cifar3: Path, epochs: int = 2) -> dict:
    """fast-cnn at 16 px on 3 CIFAR-10 classes: a trial takes a few seconds, with a validation set
    large enough to select on (45 images)."""
    return {"data": str(cifar3), "model": "fast-cnn", "image_size": 16, "epochs": epochs, "batch_size": 32,
            "val_fraction": 0.25, "baseline": False, "tensorboard": False, "progress": False, "threads": 2}


def _val(trial_dir: Path, key: str = "accuracy") -> float:
    return json.loads((trial_dir / "report.json").read_text())["val"][key]


def test_a_study_finds_its_best_trial_and_its_bundle_predicts(cifar3, tmp_path):
    out = tmp_path / "study"
    report = tuneforge.search(fit=_fit(cifar3), space={"lr": {"log_uniform": [1e-3, 1e-2]},
                                                       "batch_size": {"choice": [16, 32]}},
                              out=out, trials=4, pruner="none", seed=1)
    rows = report["trials"]
    assert [r["number"] for r in rows] == [0, 1, 2, 3] and report["counts"]["complete"] == 4
    # each trial is an ordinary run folder; the objective is read from its own report.json
    values = {r["number"]: _val(out / "trials" / f"{r['number']:04d}") for r in rows}
    assert {r["number"]: r["value"] for r in rows} == values
    assert report["best"]["value"] == max(values.values())
    assert values[report["best"]["number"]] == max(values.values())
    assert all((out / "trials" / f"{n:04d}" / "report.html").is_file() for n in values)
    assert all(r["epochs"] == 2 and r["wall_s"] > 0 and r["command"].startswith("tuneforge fit --data") for r in rows)
    best_params = report["best"]["params"]
    assert f"--lr {best_params['lr']}" in report["best"]["command"]
    # best/ is the best trial's bundle: it predicts as that trial's run folder does
    image = next((cifar3 / "test" / "frog").iterdir())
    got = tuneforge.predict(out / "best", [image])[0]
    want = tuneforge.predict(out / "trials" / f"{report['best']['number']:04d}", [image])[0]
    assert got["label"] == want["label"] and got["top"] == want["top"]
    # the study's report: the leaderboard, the plots, the command of the best trial
    html = (out / "report.html").read_text()
    assert "Leaderboard" in html and "Parameter importances" in html and report["best"]["command"] in html
    saved = json.loads((out / "report.json").read_text())
    assert [r["number"] for r in saved["trials"]] == [0, 1, 2, 3]
    assert (out / "plots" / "search_history.png").is_file() and (out / "plots" / "search_slice_0.png").is_file()
    assert set(saved["importances"].get("values", {})) <= {"lr", "batch_size"}
    assert yaml.safe_load((out / "search.yaml").read_text())["space"]["batch_size"] == {"choice": [16, 32]}
    # a second start on the same folder is refused, pointing at --resume
    with pytest.raises(ConfigError, match="--resume"):
        tuneforge.search(fit=_fit(cifar3), space={"lr": {"uniform": [1e-3, 1e-2]}}, out=out, trials=1)


@pytest.mark.slow  # a worker process of its own (imports) and four trials: ~20 s quiet
def test_kill_9_mid_trial_then_resume_loses_and_repeats_no_trial(cifar3, tmp_path):
    out, config = tmp_path / "study", tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({"fit": _fit(cifar3, epochs=3), "space": {"lr": {"log_uniform": [1e-3, 1e-2]}}}))
    cmd = [sys.executable, "-m", "tuneforge", "search", "--config", str(config), "--out", str(out), "--trials", "3",
           "--pruner", "none", "--heartbeat", "1"]
    worker = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while not (out / "trials" / "0001").exists():  # trial 1 has started
        assert worker.poll() is None and time.time() < deadline, "the worker ended before its second trial"
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{out / 'study.db'}")
    assert study.trials[1].state == optuna.trial.TrialState.RUNNING  # killed mid-trial

    report = tuneforge.search(resume=out)
    rows = {r["number"]: r for r in report["trials"]}
    assert sorted(rows) == list(range(len(rows)))  # numbers without a gap
    assert rows[1]["state"] == "fail" and "died" in (out / "trials" / "0001" / "FAILED.txt").read_text()
    retries = [r for r in rows.values() if r["retry_of"] == 1]
    assert len(retries) == 1 and retries[0]["params"] == rows[1]["params"]  # tried again, once
    finished = [n for n, r in rows.items() if r["state"] in ("complete", "pruned")]
    assert len(finished) == 3 and len(rows) == 4
    assert sorted(p.name for p in (out / "trials").iterdir()) == [f"{n:04d}" for n in rows]
    assert all((out / "trials" / f"{n:04d}" / "report.json").is_file() for n in finished)


def test_the_median_pruner_stops_an_absurd_learning_rate(cifar3, tmp_path):
    # two sound rates first, then lr 50: Optuna's enqueued trials, in a storage outside the study folder
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    study = optuna.create_study(storage=url, study_name="prune", direction="minimize")
    for lr in (3e-3, 5e-3, 50.0):
        study.enqueue_trial({"lr": lr})
    report = tuneforge.search(fit=_fit(cifar3, epochs=3), space={"lr": {"log_uniform": [1e-3, 100.0]}},
                              out=tmp_path / "study", storage=url, study="prune", trials=3, objective="loss")
    rows = report["trials"]
    assert [r["params"]["lr"] for r in rows] == [3e-3, 5e-3, 50.0]
    assert [r["state"] for r in rows] == ["complete", "complete", "pruned"]
    # stopped at the first epoch the pruner may judge (--prune-after 1: after epoch 1), before its last
    assert [r["epochs"] for r in rows[:2]] == [3, 3] and rows[2]["epochs"] == 2
    # the pruned trial keeps its run folder, whose report says why it stopped
    pruned = json.loads((tmp_path / "study" / "trials" / "0002" / "report.json").read_text())
    assert pruned["stopped_because"].startswith("pruned by the median pruner at epoch")
    assert report["best"]["number"] in (0, 1) and report["epochs_trained"] == 6 + rows[2]["epochs"]


@pytest.mark.parametrize("space,key,why", [
    ({"lr_rate": {"uniform": [0.1, 0.2]}}, "lr_rate", "not a setting"),
    ({"lr": {"log_uniform": [0, 0.1]}}, "lr", "bounds > 0"),
    ({"lr": {"loguniform": [1e-4, 0.1]}}, "lr", "unknown distribution 'loguniform'"),
    ({"weight_decay": {"uniform": [0.1, 0.01]}}, "weight_decay", "low < high"),
    ({"batch_size": {"int": [0, 64], "step": 16}}, "batch_size", "--batch-size must be >= 1"),
    ({"optimizer": {"choice": ["adamw", "lamb"]}}, "optimizer", "'lamb'"),
    ({"tfidf_c": {"uniform": [0.1, 1.0]}}, "tfidf_c", "the image fit never reads --tfidf-c"),
    ({"out": {"choice": ["a", "b"]}}, "out", "set by the search"),
])
def test_an_invalid_space_is_refused_naming_its_key(cifar3, tmp_path, space, key, why):
    with pytest.raises(ConfigError, match=f"space: {key}: .*{why}"):
        tuneforge.search(fit=_fit(cifar3), space=space, out=tmp_path / "s", trials=2)
    assert not (tmp_path / "s").exists()  # refused before anything is written


def test_grid_needs_listed_values_and_a_budget_is_required(cifar3, tmp_path):
    with pytest.raises(ConfigError, match="--sampler grid: space: lr is a continuous"):
        tuneforge.search(fit=_fit(cifar3), space={"lr": {"uniform": [1e-3, 1e-2]}}, out=tmp_path / "s", sampler="grid")
    with pytest.raises(ConfigError, match="--trials N and/or --max-minutes"):
        tuneforge.search(fit=_fit(cifar3), space={"lr": {"uniform": [1e-3, 1e-2]}}, out=tmp_path / "s")
    with pytest.raises(ConfigError, match="--objective rmse"):
        tuneforge.search(fit=_fit(cifar3), space={"lr": {"uniform": [1e-3, 1e-2]}}, out=tmp_path / "s", trials=1,
                         objective="rmse")


def test_search_help_and_storage_urls(capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in ("--trials", "--max-minutes", "--storage", "--resume", "--sampler", "--pruner", "--objective", "space:"):
        assert word in text, word
    assert storage_url(None, Path("/x/s")) == "sqlite:////x/s/study.db"
    assert storage_url("postgresql://u:pw@db/optuna", Path(".")).startswith("postgresql")
    assert shown_url("postgresql+psycopg://u:pw@db:5432/optuna") == "postgresql+psycopg://u:***@db:5432/optuna"
