"""Forecasting one series (issue 20): windows without look-ahead, the split by time, the naive
and seasonal-naive references and MASE on hand-checkable numbers, and a forecast bundle through
fit, predict, evaluate, batch, serve and ONNX export; the finance example's commands on a slice."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

import tuneforge
from tuneforge.cli import main
from tuneforge.core.data import forecast as fc
from tuneforge.deploy.predictor import Predictor
from tuneforge.deploy.serve.app import create_app
from tuneforge.errors import ConfigError, DataError

QUICK = dict(progress=False, tensorboard=False, threads=2)
ROOT = Path(__file__).resolve().parents[1]
VIX = Path("/work/shared/datasets/finance_vix/vix-daily.csv")


def test_a_window_never_sees_past_its_origin():
    values = np.arange(40, dtype=np.float64)[:, None] * 1.5
    ts = np.arange(4, 35)
    before = fc.windows(values, ts, 5)
    assert (before[:, -1, 0] == values[ts, 0]).all() and before.shape == (31, 5, 1)  # the last row is the origin's
    for t in (4, 17, 30):  # rewriting everything after t changes no window of an origin <= t
        changed = values.copy()
        changed[t + 1:] = -999.0
        after = fc.windows(changed, ts, 5)
        assert np.array_equal(after[ts <= t], before[ts <= t])
        assert (after[ts > t] != before[ts > t]).any()
    # the target is exactly H rows after the origin, never the origin itself
    assert np.array_equal(fc.targets(values[:, 0], ts, 3), values[ts + 3, 0])


def test_the_split_is_by_time_and_targets_never_cross_it():
    n, w, h = 100, 10, 5
    ts = fc.origins(n, w, h, val_fraction=0.2, test_fraction=0.2)
    val_start, test_start = 60, 80
    assert ts["train"][0] == w - 1 and (np.diff(np.concatenate(list(ts.values()))) == 1).all()  # in time order
    assert (ts["train"] + h < val_start).all()                     # train's targets end before val's rows
    assert ((ts["val"] + h >= val_start) & (ts["val"] + h < test_start)).all()
    assert (ts["test"] + h >= test_start).all() and ts["test"][-1] + h == n - 1
    with pytest.raises(DataError, match="--window 50 --horizon 5"):
        fc.origins(60, 50, 5, 0.2, 0.2)


def test_naive_seasonal_naive_and_mase_by_hand():
    y = np.array([10, 12, 11, 13, 15, 14, 16, 18], dtype=np.float64)
    ts = fc.origins(len(y), window=2, horizon=1, val_fraction=0.0, test_fraction=0.25)
    assert ts["train"].tolist() == [1, 2, 3, 4] and ts["test"].tolist() == [5, 6]  # targets rows 2..5 | 6, 7
    assert fc.naive(y, ts["test"]).tolist() == [14, 16]                          # tomorrow = today
    assert fc.seasonal_naive(y, ts["test"], 1, 2).tolist() == [15, 14]           # y[t+1-2]
    assert fc.seasonal_naive(y, ts["test"], 3, 2).tolist() == [15, 14]           # y[t+3-4]: never after t
    assert fc.seasonal_naive(y, ts["test"], 2, 2).tolist() == [14, 16]           # y[t+2-2]: the naive one
    # in-sample naive MAE on train's targets: |11-12|, |13-11|, |15-13|, |14-15| = 1, 2, 2, 1 -> 1.5
    scale = fc.mase_scale(y, ts["train"], 1)
    assert scale == 1.5
    s = fc.scores(fc.naive(y, ts["test"]), fc.targets(y, ts["test"], 1), scale)
    # errors 16-14 = 2, 18-16 = 2: MAE 2, RMSE 2, MASE 2 / 1.5
    assert s["mae"] == 2 and s["rmse"] == 2 and s["mase"] == pytest.approx(4 / 3) and s["n"] == 2


def write_series(path: Path, n: int = 420, seed: int = 0) -> np.ndarray:
    """A daily series a window predicts well: a 7-day cycle on a slow random walk."""
    rng = np.random.default_rng(seed)
    level = 50 + np.cumsum(rng.normal(0, 0.3, n))
    y = level + 4 * np.sin(2 * np.pi * np.arange(n) / 7)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["day", "value", "other"])
        start = np.datetime64("2020-01-01")
        for i in rng.permutation(n):  # shuffled rows: the date column orders them
            w.writerow([str(start + i), f"{y[i]:.4f}", f"{rng.normal():.3f}"])
    return y


@pytest.fixture(scope="module")
def fc_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("fc")
    y = write_series(d / "series.csv")
    run = tuneforge.fit(data=str(d / "series.csv"), date_column="day", target_column="value", window=14, horizon=2,
                        season=7, epochs=6, batch_size=32, embed_dim=16, hidden_size=16, num_layers=1, lr=5e-3,
                        patience=0, out=str(d / "run"), **QUICK)
    return run, d, y


def test_a_forecast_fit_reports_the_references_and_mase(fc_run):
    run, d, y = fc_run
    r = run.report
    assert r["task"] == "forecast" and run.config.monitor == "val_loss" and run.config.model == "gru"
    refs = r["forecast"]["baselines"]
    assert set(refs) == {"naive", "seasonal_naive", "ridge"}
    for name in ("naive", "seasonal_naive", "ridge"):
        assert set(refs[name]["test"]) >= {"rmse", "mae", "r2", "mase", "n"}
    # a 7-day cycle: the ridge on the window and the seasonal-naive forecast beat "2 days ahead = today"
    assert refs["ridge"]["test"]["mase"] < 0.5 * refs["naive"]["test"]["mase"]
    assert refs["seasonal_naive"]["test"]["mase"] < refs["naive"]["test"]["mase"]
    assert r["test"]["mase"] < refs["naive"]["test"]["mase"]  # the GRU learnt the cycle too
    # MASE is the split's MAE over the training period's naive MAE
    assert r["test"]["mase"] == pytest.approx(r["test"]["mae"] / r["forecast"]["mase_scale"])
    html = (run.run_dir / "report.html").read_text()
    assert "Model vs references" in html and "seasonal-naive" in html and "Predicted vs true" in html


def test_a_forecast_bundle_predicts_evaluates_batches_and_exports(fc_run, tmp_path):
    run, d, y = fc_run
    last = y[-14:].tolist()
    got = tuneforge.predict(run.run_dir, [str(d / "series.csv"), json.dumps(last), "[1, 2]"])
    assert got[0]["after"] == "2021-02-23" and got[0]["horizon"] == 2
    assert got[1]["value"] == pytest.approx(got[0]["value"], abs=1e-3)  # the table's last 14 rows = those values
    assert "last 14 values" in got[2]["error"]
    # evaluate on the whole series: every origin, MASE on the bundle's training scale
    ev = tuneforge.evaluate(run.run_dir, d / "series.csv", progress=False)
    assert ev["test"]["n"] == 420 - 14 - 2 + 1 and "mase" in ev["test"]
    counts = tuneforge.batch_predict(run.run_dir, d / "series.csv", tmp_path / "f.jsonl", progress=False)
    rows = [json.loads(l) for l in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert counts["rows"] == 420 - 13 and rows[-1]["value"] == pytest.approx(got[0]["value"], abs=1e-5)
    info = tuneforge.export(run.run_dir, tmp_path / "onnx", format="onnx")
    assert info["onnx"]["max_abs_diff"] < 1e-4
    predictor = Predictor(tmp_path / "onnx", backend="onnx")
    onnx = predictor.top_k([predictor.prepare(values=last)])[0]
    assert onnx["value"] == pytest.approx(got[1]["value"], abs=1e-4)  # the last value is added inside the graph


def test_a_forecast_bundle_is_served(fc_run, live_server):
    run, d, y = fc_run
    url = live_server(create_app(run.run_dir), ready=True)
    r = httpx.post(url + "/v1/predict", json={"values": y[-20:].tolist()})  # more rows than the window: the last 14
    assert r.status_code == 200, r.text
    want = tuneforge.predict(run.run_dir, [json.dumps(y[-14:].tolist())])[0]["value"]
    assert r.json()["value"] == pytest.approx(want, abs=1e-5) and r.json()["horizon"] == 2
    bad = httpx.post(url + "/v1/predict", json={"values": [1, 2, 3]})
    assert bad.status_code == 422 and "--window" in bad.json()["detail"]
    page = httpx.get(url + "/").text
    assert "body.value" in page  # the try-it page shows the number


def test_forecast_settings_are_checked(tmp_path):
    write_series(tmp_path / "s.csv", 60)
    with pytest.raises(ConfigError, match="forecasting takes gru, lstm, transformer"):
        tuneforge.fit(data=str(tmp_path / "s.csv"), date_column="day", target_column="value", model="resnet18", **QUICK)
    with pytest.raises(DataError, match="'price'"):
        tuneforge.fit(data=str(tmp_path / "s.csv"), date_column="day", target_column="price", **QUICK)
    with pytest.raises(ConfigError, match="--window must be >= 2"):
        tuneforge.fit(data=str(tmp_path / "s.csv"), date_column="day", target_column="value", window=1, **QUICK)


def _example_commands() -> list[str]:
    text = (ROOT / "examples" / "finance" / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    return [l.strip() for b in blocks for l in b.replace("\\\n", " ").splitlines() if l.strip().startswith("tuneforge ")]


@pytest.mark.slow
@pytest.mark.skipif(not VIX.is_file(), reason="the VIX data set is not here")
def test_the_finance_example_runs_on_a_slice(tmp_path, monkeypatch, capsys):
    """Every `tuneforge` command of examples/finance/README.md, literally but on the last 400 days
    of VIX, one epoch and a small GRU."""
    lines = VIX.read_text().splitlines()
    (tmp_path / "vix.csv").write_text("\n".join([lines[0], *lines[-400:]]) + "\n")
    monkeypatch.chdir(tmp_path)
    commands = _example_commands()
    assert len(commands) >= 4 and any("--horizon 5" in c for c in commands)
    for command in commands:
        argv = command.split("#")[0].replace("../shared/datasets/finance_vix/vix-daily.csv", str(tmp_path / "vix.csv")).split()[1:]
        if argv[0] == "fit":
            argv += ["--epochs", "1", "--embed-dim", "8", "--hidden-size", "8", "--no-progress"]
        assert main(argv) == 0, command
    assert (tmp_path / "runs" / "vix-1d" / "report.html").is_file() and (tmp_path / "runs" / "vix-1d-onnx" / "model.onnx").is_file()
    assert "../shared/datasets/finance_vix/vix-daily.csv" in " ".join(commands)  # the slice stood in for the real file


def test_a_search_minimises_mase_over_forecasts(tmp_path):
    pytest.importorskip("optuna")
    write_series(tmp_path / "s.csv", 200)
    fit = {"data": str(tmp_path / "s.csv"), "date_column": "day", "target_column": "value", "window": 7, "epochs": 2,
           "embed_dim": 8, "hidden_size": 8, "num_layers": 1, "progress": False, "tensorboard": False}
    report = tuneforge.search(fit=fit, space={"window": {"choice": [7, 14]}}, out=tmp_path / "study", trials=2,
                              pruner="none", sampler="grid", objective="mase")
    values = [r["value"] for r in report["trials"] if r["state"] == "complete"]
    assert len(values) == 2 and report["best"]["value"] == min(values)  # lower is better
    for r in report["trials"]:
        trial = json.loads((tmp_path / "study" / "trials" / f"{r['number']:04d}" / "report.json").read_text())
        assert r["value"] == pytest.approx(trial["val"]["mase"])
    with pytest.raises(ConfigError, match="only a forecast"):
        tuneforge.search(fit={**fit, "data": str(tmp_path / "x.csv"), "date_column": None, "target_column": None,
                              "task": "regression", "model": "gru", "sequence_column": "v"},
                         space={"lr": {"choice": [0.01]}}, out=tmp_path / "s2", trials=1, objective="mase")
