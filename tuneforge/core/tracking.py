"""`--track mlflow`: a run's settings, per-epoch metrics, report and bundle in MLflow, beside
TensorBoard and the run folder (which stay the record; tracking copies them).

Where: $MLFLOW_TRACKING_URI when set, else ./mlruns/ (an SQLite store mlruns/mlflow.db, the
artifacts in mlruns/artifacts/: MLflow 3 refuses a plain file store by default); the experiment
is $MLFLOW_EXPERIMENT_NAME or "tuneforge", the MLflow run is named after the run folder.

    tracker = track(cfg, run_dir, resuming)  # None unless cfg.track == "mlflow"; starts the MLflow run
    callbacks.append(EpochMetrics(run))      # logs to run.tracker
    tracker.finish(report, run.dir)      # report metrics, report files and model/ as artifacts

mlflow (the optional extra `tuneforge[mlflow]`) is imported only here, only when tracking.
A resumed run continues its MLflow run (its id is kept in RUN/tracking.json).
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from .engine.callbacks import Callback
from .fs import atomic_write_text

log = logging.getLogger("tuneforge")

EXPERIMENT = "tuneforge"
STATE = "tracking.json"
# report.json's sections whose numbers are logged as "SPLIT/METRIC" at the end
SPLITS = ("val", "test")


def tracking_uri(cwd: Path | None = None) -> str:
    """$MLFLOW_TRACKING_URI, else the SQLite store in ./mlruns/."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return "sqlite:///" + str(((cwd or Path.cwd()) / "mlruns" / "mlflow.db").resolve())


def _numbers(d: dict, prefix: str = "") -> dict[str, float]:
    return {prefix + k: float(v) for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


class MlflowTracker:
    """One MLflow run for one tuneforge run: params at start, metrics as they come, artifacts at the end.
    A store that fails once training runs (a locked database, a server gone) is warned about and
    tracking stops there: the run itself goes on (its folder is the record)."""

    broken = False
    ended = False

    def __init__(self, cfg: Any, run_dir: Path, resuming: bool):
        import mlflow
        self.mlflow = mlflow
        self.uri = tracking_uri()
        self.client = mlflow.MlflowClient(self.uri)
        state = self._state(run_dir) if resuming else {}
        if state.get("uri") == self.uri and state.get("run_id"):
            self.run_id = state["run_id"]  # the resumed run's epochs continue the same curves
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            experiment = self._experiment()
            self.run_id = self.client.create_run(experiment, run_name=run_dir.resolve().name,
                                                 tags={"tuneforge.run_dir": str(run_dir.resolve())}).info.run_id
            self._params(cfg.to_dict())
        atomic_write_text(run_dir / STATE, json.dumps({"uri": self.uri, "run_id": self.run_id}) + "\n")
        log.info("--track mlflow: run %s in %s", self.run_id, self.uri)

    @staticmethod
    def _state(run_dir: Path) -> dict:
        try:
            return json.loads((run_dir / STATE).read_text())
        except (OSError, ValueError):
            return {}

    def _experiment(self) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        artifacts = None
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # the default store keeps its artifacts beside it
            artifacts = (Path.cwd() / "mlruns" / "artifacts").resolve().as_uri()
        try:
            return self.client.create_experiment(name, artifact_location=artifacts)
        except self.mlflow.exceptions.MlflowException:  # another worker made it first
            return self.client.get_experiment_by_name(name).experiment_id

    def _params(self, settings: dict) -> None:
        from mlflow.entities import Param
        params = [Param(k, json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in settings.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _guarded(self, what: str, action) -> None:
        if self.broken:
            return
        try:
            action()
        except Exception as e:  # noqa: BLE001 - any failure of the store: the training run matters more
            self.broken = True
            log.warning("--track mlflow: %s failed (%s: %s); no more tracking for this run (its folder has "
                        "everything)", what, type(e).__name__, e)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        self._guarded("logging metrics", lambda: self.client.log_batch(
            self.run_id, metrics=[Metric(k, v, now, step or 0) for k, v in metrics.items()]))

    def finish(self, report: dict, run_dir: Path) -> None:
        self.ended = True
        self._guarded("logging the report and bundle", lambda: self._finish(report, run_dir))

    def _finish(self, report: dict, run_dir: Path) -> None:
        """The report's val/test numbers (as "val/accuracy"...), wall and fit seconds, then the
        report files and the bundle as artifacts; the MLflow run ends FINISHED (KILLED for Ctrl-C)."""
        metrics = {f"{split}/{k}": v for split in SPLITS if isinstance(report.get(split), dict)
                   for k, v in _numbers(report[split]).items() if k != "n"}
        metrics.update(_numbers({k: report.get(k) for k in ("wall_s", "fit_s", "epochs_run", "best_epoch")}))
        if metrics:
            self.log_metrics(metrics)
        for name in ("config.yaml", "report.json", "report.html", "metrics.jsonl"):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        for folder in ("plots", "model"):
            if (run_dir / folder).is_dir():
                self.client.log_artifacts(self.run_id, str(run_dir / folder), folder)
        self.client.set_terminated(self.run_id, "KILLED" if report.get("stopped_because") == "interrupted" else "FINISHED")

    def end(self, status: str) -> None:
        self.ended = True
        self._guarded("ending the run", lambda: self.client.set_terminated(self.run_id, status))


class EpochMetrics(Callback):
    """Each epoch's record (metrics.jsonl's row: train_loss, val_accuracy, lr...) at step = epoch,
    to the run's tracker (`run.tracker`, started when the run's config.yaml is committed)."""

    def __init__(self, run: Any):
        self.run = run

    def on_epoch_end(self, engine, record: dict) -> None:
        if self.run.tracker is not None:
            self.run.tracker.log_metrics(_numbers({k: v for k, v in record.items() if k != "epoch"}),
                                         step=record["epoch"])


def track(cfg: Any, run_dir: Path, resuming: bool) -> MlflowTracker | None:
    """The tracker `cfg.track` asks for (None: no tracking)."""
    if getattr(cfg, "track", None) != "mlflow":
        return None
    return MlflowTracker(cfg, run_dir, resuming)
