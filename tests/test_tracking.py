"""`--track mlflow`: a GRU fit (the engine: per-epoch metrics) and a TF-IDF fit (no engine)
logged to a real MLflow store, read back by `mlflow.search_runs`. One test: importing MLflow
and creating its database take seconds."""
from __future__ import annotations

import json

import tuneforge
from tuneforge.core.tracking import tracking_uri

from test_leaderboard import QUICK, _table


def test_fits_are_tracked_in_mlflow(tmp_path, monkeypatch):
    import mlflow
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    data = _table(tmp_path / "t.csv")
    gru = tuneforge.fit(data=str(data), model="gru", epochs=2, embed_dim=8, hidden_size=8, num_layers=1,
                        baseline=False, out=str(tmp_path / "gru-run"), track="mlflow", **QUICK)
    tfidf = tuneforge.fit(data=str(data), model="tfidf", tfidf_c=0.1, out=str(tmp_path / "tfidf-run"),
                          track="mlflow", **QUICK)

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tuneforge"])
    assert sorted(runs["tags.mlflow.runName"]) == ["gru-run", "tfidf-run"]
    assert set(runs["status"]) == {"FINISHED"}
    client = mlflow.MlflowClient(uri)
    for result, name in ((gru, "gru-run"), (tfidf, "tfidf-run")):
        row = runs[runs["tags.mlflow.runName"] == name].iloc[0]
        # the resolved settings, as config.yaml holds them
        assert row["params.model"] == result.config.model and row["params.seed"] == "0"
        assert row["params.tfidf_c"] == str(result.config.tfidf_c)
        # the report's numbers, and its files and bundle as artifacts
        assert row["metrics.val/accuracy"] == result.report["val"]["accuracy"]
        assert row["metrics.val/macro_f1"] == result.report["val"]["macro_f1"]
        artifacts = {a.path for a in client.list_artifacts(row["run_id"])}
        assert {"report.json", "report.html", "config.yaml", "model"} <= artifacts
        bundle = {a.path for a in client.list_artifacts(row["run_id"], "model")}
        assert "model/config.json" in bundle and "model/model.safetensors" in bundle
        assert json.loads((result.run_dir / "tracking.json").read_text())["run_id"] == row["run_id"]
    # the engine's epochs, one point per epoch, as metrics.jsonl has them
    gru_id = runs[runs["tags.mlflow.runName"] == "gru-run"].iloc[0]["run_id"]
    history = client.get_metric_history(gru_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["val_loss"]) for r in gru.history]
    assert [m.step for m in client.get_metric_history(gru_id, "train_loss")] == [1, 2]
    # no tracking store set: ./mlruns/ beside the command
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}"
