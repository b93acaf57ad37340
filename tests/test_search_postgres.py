"""Several workers share one study on a real PostgreSQL server (a throw-away cluster in a
temporary folder, conftest.py's `postgres_url`): first Optuna itself, two processes on one
study; then `tuneforge search --storage URL --study NAME` started twice."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_leaderboard import _table

ROOT = Path(__file__).resolve().parents[1]

# One Optuna worker: 3 trials of a quadratic on the shared study, each trial tagged with the worker's pid.
_WORKER = """
import os, sys, time
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(storage=sys.argv[1], study_name=sys.argv[2], load_if_exists=True)
def objective(trial):
    trial.set_user_attr("pid", os.getpid())
    x = trial.suggest_float("x", -5, 5)
    time.sleep(0.2)  # the two workers' trials overlap
    return (x - 2) ** 2
study.optimize(objective, n_trials=3)
"""


def _start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def _wait(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"worker failed:\n{out[-2000:]}\n{err[-4000:]}"


def test_two_optuna_workers_share_a_postgres_study(postgres_url):
    import optuna
    # Optuna's tables made once, first: two workers making them at the same moment collide in
    # PostgreSQL's catalog (UniqueViolation on pg_type), which `tuneforge search` must survive
    optuna.create_study(storage=postgres_url, study_name="quadratic")
    procs = [_start([sys.executable, "-c", _WORKER, postgres_url, "quadratic"]) for _ in range(2)]
    _wait(procs)
    trials = optuna.load_study(study_name="quadratic", storage=postgres_url).get_trials()
    assert sorted(t.number for t in trials) == list(range(6))  # distinct numbers, none lost
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    pids = [t.user_attrs["pid"] for t in trials]
    assert sorted(pids.count(p.pid) for p in procs) == [3, 3]  # both workers ran their share


@pytest.mark.slow  # two workers each start tuneforge (torch, scikit-learn) and write a study report
@pytest.mark.skipif(importlib.util.find_spec("tuneforge.tasks.search") is None,
                    reason="tuneforge search is not in this tree yet")
def test_two_tuneforge_search_workers_share_a_postgres_study(postgres_url, tmp_path):
    import optuna

    import tuneforge
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({
        "fit": {"data": str(_table(tmp_path / "t.csv")), "model": "tfidf", "progress": False, "threads": 1},
        "space": {"tfidf_c": {"log_uniform": [0.01, 10.0]}}}))
    outs = [tmp_path / f"worker{i}" for i in range(2)]
    # started together on an empty database: both find no study, both make it
    procs = [_start([sys.executable, "-m", "tuneforge.cli", "search", "--config", str(config), "--out", str(out),
                     "--storage", postgres_url, "--study", "tfidf-c", "--trials", "6"]) for out in outs]
    _wait(procs)
    trials = optuna.load_study(study_name="tfidf-c", storage=postgres_url).get_trials()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    numbers = sorted(t.number for t in done)
    assert len(done) == 6 and numbers == sorted(set(numbers))
    # every completed trial is a finished run folder in one of the two workers' study folders
    rows = tuneforge.runs(*(out / "trials" for out in outs if (out / "trials").is_dir()))
    assert sorted(Path(r["run"]).name for r in rows if r["state"] == "finished") == [f"{n:04d}" for n in numbers]
    assert len({json.dumps(r["settings"]) for r in rows}) > 1  # the workers tried different settings
