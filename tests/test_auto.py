"""`--model auto --time-budget MIN` on small real data: the leaderboard (val and test of every
member), the choice by validation only (a changed test table changes neither the choice nor a
validation number), the run's bundle is the chosen member's, the budget holds, and the setting
is refused for other models naming the flag."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import tuneforge
from conftest import DATASETS
from tuneforge.errors import ConfigError

# What the run may take beyond its budget: stopping the member that is still running when it runs out,
# copying the winner's bundle, writing the report.
MARGIN_S = 15


def _lines(name: str, start: int, n: int) -> list[str]:
    return (DATASETS / "sst2" / name).read_text(encoding="utf-8").splitlines()[start:start + n]


@pytest.fixture(scope="module")
def sst2_tables(tmp_path_factory) -> Path:
    """150 SST-2 training sentences; two test tables: 40 dev sentences, and 40 others with every label flipped."""
    d = tmp_path_factory.mktemp("auto-sst2")
    (d / "train.tsv").write_text("\n".join(_lines("sentiment-train", 0, 150)) + "\n", encoding="utf-8")
    (d / "test_a.tsv").write_text("\n".join(_lines("sentiment-dev", 0, 40)) + "\n", encoding="utf-8")
    flipped = [f"{t}\t{1 - int(y)}" for t, y in (l.rsplit("\t", 1) for l in _lines("sentiment-dev", 40, 40))]
    (d / "test_b.tsv").write_text("\n".join(flipped) + "\n", encoding="utf-8")
    return d


def _auto(data: Path, out: Path, budget: float, **kw) -> tuneforge.FitResult:
    return tuneforge.fit(data=str(data), model="auto", time_budget=budget, out=str(out), progress=False,
                         tensorboard=False, threads=2, **kw)


def _check_leaderboard(report: dict) -> dict:
    board = report["leaderboard"]
    trained = [r for r in board if r["status"] == "trained"]
    assert trained, board
    for r in trained:
        assert 0 <= r["val"]["accuracy"] <= 1 and 0 <= r["test"]["accuracy"] <= 1 and r["wall_s"] > 0, r
        assert (Path(report["html_path"]).parent / r["run"] / "report.json").is_file()
    best = max(trained, key=lambda r: (r["val"]["accuracy"], r["val"]["macro_f1"]))
    chosen = [r for r in board if r["chosen"]]
    assert len(chosen) == 1 and (chosen[0]["val"]["accuracy"], chosen[0]["val"]["macro_f1"]) == \
        (best["val"]["accuracy"], best["val"]["macro_f1"])
    assert report["val"]["accuracy"] == chosen[0]["val"]["accuracy"]
    assert report["test"]["accuracy"] == chosen[0]["test"]["accuracy"]
    return chosen[0]


def test_text_choice_never_reads_the_test_table(sst2_tables, tmp_path):
    # a budget that binds nothing on 150 sentences: both runs train the same members at the same size
    a = _auto(sst2_tables / "train.tsv", tmp_path / "a", 3, test=str(sst2_tables / "test_a.tsv"), columns="text,label")
    b = _auto(sst2_tables / "train.tsv", tmp_path / "b", 3, test=str(sst2_tables / "test_b.tsv"), columns="text,label")
    chosen = _check_leaderboard(a.report)
    assert _check_leaderboard(b.report)["name"] == chosen["name"]
    assert {r["name"] for r in a.report["leaderboard"] if r["status"] == "trained"} >= {"tfidf", "minilm-frozen"}
    val = lambda r: [(m["name"], m["status"], m.get("val")) for m in r.report["leaderboard"]]
    assert val(a) == val(b)
    assert [m.get("test") for m in a.report["leaderboard"]] != [m.get("test") for m in b.report["leaderboard"]]
    # the run's bundle is the chosen member's, used as any run's
    assert json.loads((tmp_path / "a" / "model" / "config.json").read_text())["model"] == \
        json.loads((tmp_path / "a" / chosen["run"] / "model" / "config.json").read_text())["model"]
    preds = tuneforge.predict(tmp_path / "a", texts=["a moving , beautifully acted film .", "dull and lifeless ."])
    assert [p["label"] for p in preds] and all(p["label"] in ("0", "1") for p in preds)
    html = (tmp_path / "a" / "report.html").read_text(encoding="utf-8")
    assert "Leaderboard" in html and chosen["name"] in html


def test_images_within_budget(cifar3, tmp_path):
    budget = 0.3
    run = _auto(cifar3, tmp_path / "run", budget, cache_dir="")
    chosen = _check_leaderboard(run.report)
    board = run.report["leaderboard"]
    if board[0]["wall_s"] < budget * 60:
        assert run.report["wall_s"] <= budget * 60 + MARGIN_S, board
    else:  # the first member is waited for past the budget (a run ends with a model); nothing else then runs
        assert all(r["status"] in ("skipped", "stopped") for r in board[1:]), board
    img = next((cifar3 / "test" / "frog").iterdir())
    [pred] = tuneforge.predict(tmp_path / "run", [img])
    assert pred["label"] in ("airplane", "frog", "truck")
    assert chosen["name"] in {"lite0-probe", "fast-cnn", "lite0-finetune"}


def test_time_budget_needs_model_auto(sst2_tables, tmp_path):
    with pytest.raises(ConfigError, match="--time-budget"):
        tuneforge.fit(data=str(sst2_tables / "train.tsv"), columns="text,label", model="tfidf", time_budget=1,
                      out=str(tmp_path / "r"), progress=False)
    with pytest.raises(ConfigError, match="--time-budget"):
        tuneforge.fit(data=str(sst2_tables / "train.tsv"), columns="text,label", model="auto",
                      out=str(tmp_path / "r2"), progress=False)
    assert not (tmp_path / "r").exists() and not (tmp_path / "r2").exists()
