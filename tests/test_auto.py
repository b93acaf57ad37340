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


def _check_baseline(report: dict) -> dict:
    """report.json's baseline is the leaderboard's baseline member (one figure, the same split), and the
    chosen model is never below it on validation."""
    base = report["baseline"]
    [row] = [r for r in report["leaderboard"] if r.get("baseline")]
    assert row["status"] == "trained" and base["name"] == row["name"], (base, row)
    assert (base["val"], base["test"]) == (row["val"], row["test"])
    assert report["val"]["accuracy"] >= base["val"]["accuracy"] and base["winner_on_val"] in ("model", "tie"), base
    assert base["model"]["val"]["accuracy"] == report["val"]["accuracy"]
    assert not any("baseline" in w.lower() for w in report["warnings"]), report["warnings"]
    return row


@pytest.mark.e2e
def test_text_choice_never_reads_the_test_table(sst2_tables, tmp_path):
    # a budget that binds nothing on 150 sentences: both runs train the same members at the same size
    a = _auto(sst2_tables / "train.tsv", tmp_path / "a", 3, test=str(sst2_tables / "test_a.tsv"), columns="text,label")
    b = _auto(sst2_tables / "train.tsv", tmp_path / "b", 3, test=str(sst2_tables / "test_b.tsv"), columns="text,label")
    chosen = _check_leaderboard(a.report)
    assert _check_leaderboard(b.report)["name"] == chosen["name"]
    assert {r["name"] for r in a.report["leaderboard"] if r["status"] == "trained"} >= {"tfidf", "minilm-frozen"}
    assert _check_baseline(a.report)["name"] == "tfidf"
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
    assert _check_baseline(run.report)["name"] == "lite0-probe"
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


@pytest.fixture(scope="module")
def fashion_table(tmp_path_factory) -> Path:
    """40 rows each of three fashion_products masterCategory classes; image paths as in metadata.csv
    (relative to the dataset folder: --image-root)."""
    import csv
    d = tmp_path_factory.mktemp("auto-fashion")
    with open(DATASETS / "fashion_products" / "metadata.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    keep = {"Apparel": [], "Footwear": [], "Accessories": []}
    for r in rows:
        if len(keep.get(r["masterCategory"], [None] * 40)) < 40:
            keep[r["masterCategory"]].append(r)
    with open(d / "table.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for group in keep.values() for r in group)
    return d / "table.csv"


def _fashion_auto(table: Path, out: Path, budget: float) -> tuneforge.FitResult:
    return _auto(table, out, budget, image_column="image", text_column="productDisplayName",
                 label_column="masterCategory", image_root=str(DATASETS / "fashion_products"), test_fraction=0.2)


@pytest.mark.slow
@pytest.mark.e2e
def test_image_text_portfolio_never_below_its_baseline(fashion_table, tmp_path):
    # 120 rows: both members' encoder loads dominate (~40 s on a quiet machine); a budget that binds nothing
    report = _fashion_auto(fashion_table, tmp_path / "run", 3).report
    chosen = _check_leaderboard(report)
    assert _check_baseline(report)["name"] == "tfidf"
    board = {r["name"]: r for r in report["leaderboard"]}
    assert board["fusion-late"]["status"] == "trained", board
    # every member scored the same rows: the split the run wrote once
    val_rows = (tmp_path / "run" / "data" / "val.jsonl").read_text(encoding="utf-8").splitlines()
    assert board["tfidf"]["val"]["n"] == board["fusion-late"]["val"]["n"] == len(val_rows) > 0
    assert board["tfidf"]["test"]["n"] == board["fusion-late"]["test"]["n"] == 24  # 20% of 120 rows
    # each bundle (a text-only TF-IDF or the fusion model) evaluates on an image+text table as it was scored
    for name in ("tfidf", "fusion-late"):
        ev = tuneforge.evaluate(tmp_path / "run" / "members" / name, tmp_path / "run" / "data" / "val.jsonl",
                                out=tmp_path / f"eval-{name}", progress=False)
        assert ev["test"]["accuracy"] == pytest.approx(board[name]["val"]["accuracy"], abs=1e-6), name
    # the TF-IDF bundle predicts on the dataset's own table: its title column, not its lines
    preds = tuneforge.predict(tmp_path / "run" / "members" / "tfidf", [fashion_table])
    assert len(preds) == 120 and preds[0]["text"] == "Turtle Check Men Navy Blue Shirt"
    preds = tuneforge.predict(tmp_path / "run", [tmp_path / "run" / "data" / "test.jsonl"])
    assert len(preds) == 24 and {p["label"] for p in preds} <= {"Apparel", "Footwear", "Accessories"}
