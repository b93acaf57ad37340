"""`tuneforge search --config search.yaml --out STUDY`: an Optuna study whose trials are ordinary
fits (tasks/launch.py, the path `tuneforge.fit` takes) into STUDY/trials/NNNN, run in this process.
An engine callback reports the objective's per-epoch value to the pruner and stops a trial it
prunes; a trial that fails keeps its folder with FAILED.txt; the best trial's bundle is copied to
STUDY/best. The study lives in an Optuna storage (STUDY/study.db by default; a database URL lets
several workers share it), with heartbeats: a trial whose worker died is failed and its settings
tried once more (at once on `--resume` when the dead worker was on this machine).

A trial is decided apart from run: `ask` turns the sampler's choice into a plain dict of settings
and `run_trial` fits with that dict, so that a multi-process trial can decide on rank 0 and
broadcast the dict (and its prune decisions) to every rank.
"""
from __future__ import annotations

import logging
import math
import os
import shlex
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
import yaml
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ...config import FitConfig, SearchConfig, build, flag, read_yaml, with_recipe
from ...core.engine import Callback, distributed
from ...core.fs import atomic_write_text, storage_errors
from ...core.leaderboard import lower_is_better
from ...core.run import setup
from ...errors import ConfigError, TuneforgeError
from ..launch import launch
from ..plugins import plugin_for
from . import report as study_report
from .space import Dimension, grid_space, parse_space

log = logging.getLogger("tuneforge")

# The validation metrics an objective may name (report.json's "val"); those minimised are
# `tuneforge runs`' lower-is-better ones (loss, rmse, mae).
OBJECTIVES = ("accuracy", "top5_accuracy", "macro_f1", "macro_precision", "macro_recall", "loss", "rmse", "mae", "r2",
              "mase", "micro_f1", "mAP", "subset_accuracy")
REGRESSION = ("rmse", "mae", "r2", "mase")  # mase: forecasts only (tasks/forecast)
MULTILABEL = ("micro_f1", "macro_f1", "mAP", "subset_accuracy", "loss")  # what a --multi-label fit reports


def objective_name(cfg) -> str:
    return (cfg.objective or "").removeprefix("val_")


# Heartbeats a running trial may miss before another worker fails it.
GRACE = 2
# Failed trials in a row after which a worker stops: the same error every time is not the settings'.
MAX_FAILED_IN_A_ROW = 3
# Settings that --resume may change (the budget, the heartbeat); the rest are the study's identity.
RESUME_SAFE = ("trials", "max_minutes", "heartbeat", "resume")


@dataclass
class Search:
    """One worker's study: settings, the base fit, the space, the folder and what is optimised."""
    cfg: SearchConfig
    fit: dict
    space: list[Dimension]
    raw_space: dict
    dir: Path
    name: str
    objective: str
    direction: str
    time_limited: bool  # the kind's fit reads --max-minutes: a trial can be given the time left


def search(config: SearchConfig | str | Path | None = None, **kwargs) -> dict:
    """Run (or join, or resume) the study until its budget is spent; returns its report. Under
    torchrun every trial is a multi-process fit: rank 0 runs the study (the sampler, the pruner,
    the storage) and sends each trial's settings to the other ranks (`_follow`)."""
    s = distributed.on_main(lambda: prepare(config, kwargs), lambda s: None)
    if not distributed.is_main():
        return _follow()
    setup(int(s.fit.get("threads") or 0))  # the console log, before the first trial's fit sets it up
    study = open_study(s)
    _fail_dead_workers(study, s)
    t0 = time.perf_counter()
    failed_in_a_row, stop_why = 0, None
    try:
        while (stop_why := _spent(study, s)) is None:
            before = _my_last(study)
            study.optimize(lambda trial: run_trial(s, trial, ask(trial, s.space)), n_trials=1,
                           catch=(Exception,), callbacks=[lambda st, ft: _after(s, st, ft)], gc_after_trial=True)
            last = _my_last(study)
            if last is None or (before is not None and last.number == before.number):
                continue
            failed_in_a_row = failed_in_a_row + 1 if last.state == TrialState.FAIL else 0
            if failed_in_a_row >= MAX_FAILED_IN_A_ROW:
                stop_why = f"{failed_in_a_row} trials in a row failed (the last: {last.user_attrs.get('error', 'see the log')})"
                log.warning("search: stopping: %s", stop_why)
                break
    except KeyboardInterrupt:
        _interrupted(study, s)
        raise
    finally:
        summary = None
        try:
            summary = study_report.write(s, study, shown_url(storage_url(s.cfg.storage, s.dir)), stop_why,
                                         time.perf_counter() - t0)
        finally:
            if distributed.world() > 1:
                distributed.shared({"done": summary})  # the other ranks' _follow ends with it
    log.info("search: %s; report %s", stop_why, summary["html_path"])
    return summary


# --------------------------------------------------------------------------- settings

def prepare(config: SearchConfig | str | Path | None, kwargs: dict) -> Search:
    """The checked settings, base fit and space of a new, joined or resumed study; search.yaml
    written for a new one."""
    layer = read_yaml(config) if isinstance(config, (str, os.PathLike)) else (config.explicit() if config else {})
    given = {**layer, **{k.replace("-", "_"): v for k, v in kwargs.items()}}
    if given.get("resume"):
        fit, space, cfg, folder = _resumed(given)
    else:
        fit, space = given.pop("fit", None), given.pop("space", None)
        cfg = build(SearchConfig, given).validate()
        folder = Path(cfg.out) if cfg.out else Path("runs") / f"search-{datetime.now():%Y%m%d-%H%M%S}"
    if not isinstance(fit, dict) or not fit:
        raise ConfigError("search: the --config file needs `fit:`, the settings of the fit to search around "
                          "(the keys of `tuneforge fit --config`)")
    fit = {str(k).replace("-", "_"): v for k, v in fit.items()}
    for key in ("out", "resume", "overwrite"):
        if key in fit:
            raise ConfigError(f"search: fit: {key}: the study gives each trial its own folder (OUT/trials/NNNN); "
                              f"drop it")
    try:
        base = build(FitConfig, with_recipe(fit)).validate()
    except ConfigError as e:
        raise ConfigError(f"search: fit: {e}") from None
    plugin = plugin_for(base)
    if plugin.name == "auto":
        raise ConfigError("search: fit: model: auto is a search of its own; name a model")
    reads = plugin.reads(FitConfig) | {"model"}
    dims = parse_space(space, fit, reads, plugin.name)
    if cfg.sampler == "grid":
        grid_space(dims)  # refused now, naming the key, rather than at the first trial
    if cfg.sampler == "cmaes" and find_spec("cmaes") is None:
        raise ConfigError("--sampler cmaes needs the cmaes package: pip install cmaes")
    regression = getattr(base, "task", None) == "regression" or plugin.name == "forecast"
    if objective_name(cfg) == "mase" and plugin.name != "forecast":
        raise ConfigError("--objective mase: only a forecast (--date-column, --target-column) reports MASE")
    multi = bool(getattr(base, "multi_label", False) or getattr(base, "label_columns", None))
    objective = (cfg.objective or ("rmse" if regression else "micro_f1" if multi else "accuracy")).removeprefix("val_")
    if objective not in OBJECTIVES:
        raise ConfigError(f"--objective {cfg.objective}: choose one of {', '.join(OBJECTIVES)} (validation metrics)")
    if multi and objective not in MULTILABEL:
        raise ConfigError(f"--objective {objective}: a multi-label fit does not report it; choose one of "
                          f"{', '.join(MULTILABEL)}")
    if not multi and objective in set(MULTILABEL) - {"macro_f1", "loss"}:
        raise ConfigError(f"--objective {objective}: reported by multi-label fits only (fit: multi_label: true)")
    if not multi and regression != (objective in REGRESSION) and objective != "loss":
        raise ConfigError(f"--objective {objective}: a {'regression' if regression else 'classification'} fit does "
                          f"not report it; choose {'rmse, mae, r2' if regression else 'accuracy, macro_f1'} or loss")
    direction = cfg.direction if cfg.direction != "auto" else ("minimize" if lower_is_better(objective) else "maximize")
    if cfg.trials is None and cfg.max_minutes is None and cfg.sampler != "grid":
        raise ConfigError("search: give a budget: --trials N and/or --max-minutes M")
    s = Search(cfg, fit, dims, space, folder, cfg.study or folder.resolve().name, objective, direction,
               "max_minutes" in reads)
    if not given.get("resume"):
        _claim(s)
    return s


def _resumed(given: dict) -> tuple[dict, dict, SearchConfig, Path]:
    """--resume STUDY: the settings recorded in STUDY/search.yaml; only the budget may change."""
    folder = Path(given["resume"])
    if not (folder / "search.yaml").is_file():
        raise ConfigError(f"--resume {folder}: not a study folder (no search.yaml)")
    recorded = read_yaml(folder / "search.yaml")
    fit, space = recorded.pop("fit", None), recorded.pop("space", None)
    for key, value in given.items():
        old = {"fit": fit, "space": space}.get(key, recorded.get(key))
        if key not in RESUME_SAFE and key != "out" and value != old:
            raise ConfigError(f"--resume {folder}: {flag(key)} {value!r} (the study has {old!r}): a resumed study "
                              f"keeps its settings; only {', '.join(flag(k) for k in RESUME_SAFE[:-1])} may change")
    safe = {k: v for k, v in given.items() if k in RESUME_SAFE}
    cfg = build(SearchConfig, recorded, safe, {"out": str(folder)}).validate()
    return fit, space, cfg, folder


def _claim(s: Search) -> None:
    """A new study's folder (empty or new), or the folder of a study this worker joins (same
    storage and study name); search.yaml records the resolved settings for --resume."""
    record = {"fit": s.fit, "space": s.raw_space, **s.cfg.to_dict(), "out": str(s.dir), "resume": None,
              "study": s.name, "objective": s.objective, "direction": s.direction}
    if s.dir.exists() and any(s.dir.iterdir()):
        old = read_yaml(s.dir / "search.yaml") if (s.dir / "search.yaml").is_file() else None
        if old is None:
            raise ConfigError(f"--out {s.dir}: holds files and is not a study folder (no search.yaml); choose a new "
                              f"or empty --out")
        joins = s.cfg.storage is not None and old.get("storage") == s.cfg.storage and old.get("study") == s.name
        if not joins:
            raise ConfigError(f"--out {s.dir}: holds a study already; continue it with `tuneforge search --resume "
                              f"{s.dir}`, or choose another --out")
        return
    # search.yaml first: a worker started at the same moment on the same folder sees a study, not stray files
    atomic_write_text(s.dir / "search.yaml", yaml.safe_dump(record, sort_keys=False))
    with storage_errors(s.dir):
        (s.dir / "trials").mkdir(exist_ok=True)


# --------------------------------------------------------------------------- storage and study

def storage_url(url: str | None, folder: Path) -> str:
    """The SQLAlchemy URL: STUDY/study.db by default; a postgresql:// URL through psycopg (3)
    when psycopg2, SQLAlchemy's default driver for it, is not installed."""
    if url is None:
        return f"sqlite:///{(folder / 'study.db').resolve()}"
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres") and find_spec("psycopg2") is None and find_spec("psycopg"):
        return f"postgresql+psycopg://{rest}"
    return url


def shown_url(url: str) -> str:
    """The URL without its password, for logs and reports."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def open_study(s: Search) -> optuna.Study:
    """Create or load the study in its storage, with heartbeats and one retry of a dead worker's trial."""
    url = storage_url(s.cfg.storage, s.dir)
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the trials are said through tuneforge's log
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    last: Exception | None = None
    for attempt in range(3):  # workers started together race to create the tables and the study
        try:
            storage = RDBStorage(url, engine_kwargs=engine, heartbeat_interval=s.cfg.heartbeat,
                                 grace_period=GRACE * s.cfg.heartbeat,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1))
            study = optuna.create_study(storage=storage, sampler=_sampler(s), pruner=_pruner(s.cfg.pruner, s.cfg.prune_after),
                                        study_name=s.name, direction=s.direction, load_if_exists=True)
            break
        except (sqlalchemy.exc.SQLAlchemyError, ModuleNotFoundError) as e:
            last = e
            time.sleep(0.5 + attempt)
    else:
        first = (str(last).strip().splitlines() or [type(last).__name__])[0]
        raise ConfigError(f"--storage {shown_url(s.cfg.storage or url)}: cannot open the study: {first}")
    if study.direction.name.lower() != s.direction:
        raise ConfigError(f"--study {s.name}: exists in this storage with direction {study.direction.name.lower()}, "
                          f"not {s.direction}; give another --study")
    log.info("search: study %r in %s, %s %s, sampler %s, pruner %s", s.name, shown_url(url), s.direction,
             s.objective, s.cfg.sampler, s.cfg.pruner)
    return study


def _sampler(s: Search) -> optuna.samplers.BaseSampler:
    seed = s.cfg.seed
    if s.cfg.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(s.space), seed=seed)
    if s.cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.cfg.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(name: str, after: int) -> optuna.pruners.BasePruner:
    """`after`: epochs before any trial may be stopped. Epochs are reported as steps from 1, and
    Optuna prunes from step n_warmup_steps on."""
    if name == "median":
        # two trials seen whole before any is compared
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=after + 1)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=after + 1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=after + 1)
    return optuna.pruners.NopPruner()


# --------------------------------------------------------------------------- budget and dead workers

def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(worker: str) -> bool:
    """Whether the worker process `host:pid` may still be running (a process of another machine: yes)."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_dead_workers(study: optuna.Study, s: Search) -> None:
    """Trials left RUNNING by a worker of this machine that is gone (kill -9, power cut): failed
    now, not after the heartbeat's grace period, and their settings queued once more."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker is None or _alive(worker):
            continue
        why = f"the worker ({worker}) died during this trial; its settings are tried once more"
        try:
            storage.set_trial_user_attr(trial._trial_id, "state_reason", why)
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        retry(study, storage.get_trial(trial._trial_id))
        _write_failed(Path(trial.user_attrs.get("run_dir") or s.dir / "trials" / f"{trial.number:04d}"), why)
        log.warning("search: trial %d: %s", trial.number, why)


def _spent(study: optuna.Study, s: Search) -> str | None:
    """Why no further trial starts (the budget is spent), or None."""
    optuna.storages.fail_stale_trials(study)  # silent workers of other machines
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    n = _trial_budget(s)
    if n is not None and done + running >= n:
        return f"{done} trial(s) finished" + (f", {running} running elsewhere" if running else "") + f" of {n}"
    left = _minutes_left(study, s)
    if left is not None and left <= 0:
        return f"--max-minutes {s.cfg.max_minutes} spent ({done} trial(s) finished)"
    return None


class BudgetTaken(Exception):
    """A worker asked for a trial the budget no longer has room for (recorded as failed, never run)."""


def _surplus(trial: optuna.Trial, s: Search) -> bool:
    """Whether this trial is one too many. Two workers can both see one trial left in `_spent` and
    both ask for it; the storage numbers trials atomically, so the later number gives way."""
    n = _trial_budget(s)
    if n is None:
        return False
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    ahead = sum(t.number < trial.number and t.state in live for t in trial.study.get_trials(deepcopy=False))
    return ahead >= n


def _trial_budget(s: Search) -> int | None:
    if s.cfg.sampler != "grid":
        return s.cfg.trials
    size = math.prod(len(v) for v in grid_space(s.space).values())
    return min(s.cfg.trials, size) if s.cfg.trials else size


def _minutes_left(study: optuna.Study, s: Search) -> float | None:
    """--max-minutes less the minutes the study's trials took (over workers and resumes)."""
    if s.cfg.max_minutes is None:
        return None
    spent = sum(float(t.user_attrs.get("wall_s", 0.0)) for t in study.get_trials(deepcopy=False)) / 60
    return s.cfg.max_minutes - spent


def _my_last(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """This worker's latest trial."""
    me = _worker()
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == me]
    return mine[-1] if mine else None


# --------------------------------------------------------------------------- one trial

def ask(trial: optuna.Trial, space: list[Dimension]) -> dict:
    """The trial's settings, decided by the sampler (or given by an enqueued retry)."""
    return {d.name: d.suggest(trial) for d in space}


class Pruning(Callback):
    """Reports the objective's per-epoch counterpart (val_accuracy for accuracy-like objectives,
    val_loss for loss, RMSE, MAE; negated for R2) to the trial after each epoch, and stops the
    fit when the pruner says so; `reason` then says why."""

    def __init__(self, trial: optuna.Trial, objective: str, pruner: str):
        self.trial, self.pruner = trial, pruner
        self.key = "val_loss" if lower_is_better(objective) or objective == "r2" else "val_accuracy"
        self.sign = -1.0 if objective == "r2" else 1.0
        self.reason: str | None = None

    def on_epoch_end(self, engine, record: dict) -> None:
        if self.key == "val_accuracy" and "val_micro_f1" in record:
            self.key = "val_micro_f1"  # a multi-label fit's per-epoch score (it has no accuracy)
        if self.key not in record or self.pruner == "none":
            return
        value = float(record[self.key])
        self.trial.report(self.sign * value, record["epoch"])
        if self.trial.should_prune():
            self.reason = (f"pruned by the {self.pruner} pruner at epoch {record['epoch']}/{engine.epochs}: "
                           f"{self.key} {value:.4g} is worse than the other trials at that epoch")
            engine.request_stop(self.reason)


def _follow() -> dict:
    """A rank other than 0 of a multi-process search: fits each trial together with rank 0, with the
    settings rank 0's sampler chose (sent by `run_trial`), until rank 0's study ends. Rank 0's
    pruning callback stops the trial on every rank (the engine shares its stop decision); rank 0
    records the trial, errors included. Returns rank 0's report of the study."""
    while "trial" in (sent := distributed.shared(None)):
        try:
            launch(None, sent["trial"])
        except Exception as e:  # rank 0 hit it too and records it as the trial's failure
            log.debug("search: this rank's part of a trial ended with %s", e)
    if sent["done"] is None:
        raise TuneforgeError("search: rank 0 ended without its report (its error is in its log)")
    return sent["done"]


def run_trial(s: Search, trial: optuna.Trial, params: dict) -> float:
    """One fit with the trial's settings into STUDY/trials/NNNN; its objective value. A pruned
    trial raises optuna.TrialPruned, a failed one its error (FAILED.txt in its folder)."""
    folder = s.dir / "trials" / f"{trial.number:04d}"
    trial.set_user_attr("worker", _worker())
    if _surplus(trial, s):
        trial.set_user_attr("state_reason", "not run: other workers took the study's last trials")
        raise BudgetTaken(f"trial {trial.number}: the --trials budget was taken by other workers")
    trial.set_user_attr("run_dir", str(folder))
    trial.set_user_attr("command", command(s, params, trial.number))
    retry_of = trial.study._storage.get_trial(trial._trial_id).system_attrs.get("failed_trial")
    if retry_of is not None:
        trial.set_user_attr("retry_of", retry_of)
    kwargs = {**s.fit, **params, "out": str(folder)}
    left = _minutes_left(trial.study, s)
    if left is not None and s.time_limited:
        kwargs["max_minutes"] = round(min(left, kwargs.get("max_minutes") or left), 3)
    said = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    log.info("search: trial %d: %s%s", trial.number, said, f" (retry of trial {retry_of})" if retry_of is not None else "")
    pruning = Pruning(trial, s.objective, s.cfg.pruner)
    t0 = time.perf_counter()
    try:
        if distributed.world() > 1:
            distributed.shared({"trial": kwargs})  # the same settings for every rank's part of the trial (_follow)
        result = launch(None, kwargs, callbacks=(pruning,))
        report = result.report
        trial.set_user_attr("wall_s", round(time.perf_counter() - t0, 2))
        epochs = report.get("epochs_run")
        trial.set_user_attr("epochs", epochs if epochs is not None else len(result.history))
        if report.get("stopped_because") == "interrupted":  # the engine took the Ctrl-C, ending the epoch
            raise KeyboardInterrupt
        value = objective_value(report, s.objective, trial.number)
        trial.set_user_attr("objective", value)
        if not pruning.reason and not math.isfinite(value):
            raise ConfigError(f"--objective {s.objective}: trial {trial.number}'s value is {value}")
    except KeyboardInterrupt:
        trial.set_user_attr("state_reason", "interrupted (Ctrl-C)")
        _write_failed(folder, "interrupted (Ctrl-C) during this trial; its settings are tried once more on --resume")
        raise
    except Exception as e:
        trial.set_user_attr("wall_s", round(time.perf_counter() - t0, 2))
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        error = why if isinstance(e, TuneforgeError) else f"{type(e).__name__}: {why}"
        trial.set_user_attr("error", error)
        trial.set_user_attr("state_reason", "failed: " + error)
        _write_failed(folder, f"failed: {error}\n\nsettings: {said}\n")
        log.warning("search: trial %d failed: %s", trial.number, error)
        raise
    if pruning.reason:
        trial.set_user_attr("state_reason", pruning.reason)
        log.info("search: trial %d %s", trial.number, pruning.reason)
        raise optuna.TrialPruned(pruning.reason)
    trial.set_user_attr("state_reason", report.get("stopped_because") or "")
    return value


def objective_value(report: dict, objective: str, number: int) -> float:
    """The objective read from the trial's report.json (its validation split)."""
    val = report.get("val")
    if not isinstance(val, dict) or not val:
        raise ConfigError(f"--objective {objective}: trial {number} has no validation scores (give the fit a "
                          f"validation split: val or val_fraction)")
    if objective not in val or not isinstance(val[objective], (int, float)):
        have = ", ".join(k for k, v in val.items() if isinstance(v, (int, float)) and k != "n")
        raise ConfigError(f"--objective {objective}: trial {number}'s validation scores are {have}")
    return float(val[objective])


def _write_failed(folder: Path, text: str) -> None:
    with storage_errors(folder):
        folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "FAILED.txt", text.rstrip() + "\n")


def _interrupted(study: optuna.Study, s: Search) -> None:
    """Ctrl-C: the trial that was running is failed (by Optuna) and its settings queued once more."""
    last = _my_last(study)
    if last is not None and last.state == TrialState.FAIL and "error" not in last.user_attrs:
        RetryHeartbeatStaleTrialCallback(max_retry=1)(study, last)
    log.warning("search: interrupted; continue with: tuneforge search --resume %s", s.dir)


def _after(s: Search, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """After each trial: the log line, and the bundle of the best trial so far into STUDY/best."""
    if trial.state != TrialState.COMPLETE:
        return
    best = study.best_trial
    log.info("search: trial %d: %s %.4g (best: trial %d, %.4g)", trial.number, s.objective, trial.value,
             best.number, best.value)
    if best.number == trial.number:
        keep_best(s, trial)


def keep_best(s: Search, trial: optuna.trial.FrozenTrial) -> None:
    """Copy the trial's bundle to STUDY/best through a temp folder and renames: a reader (predict,
    serve) sees the old bundle or the new one, whole."""
    src = Path(trial.user_attrs["run_dir"]) / "model"
    best, tmp, old = s.dir / "best", s.dir / f".best.{os.getpid()}.tmp", s.dir / f".best.{os.getpid()}.old"
    with storage_errors(best):
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        if best.exists():
            os.replace(best, old)
        os.replace(tmp, best)
        shutil.rmtree(old, ignore_errors=True)
    atomic_write_text(s.dir / "best.txt", f"trial {trial.number}: {s.objective} {trial.value:.6g}\n"
                                          f"{trial.user_attrs.get('command', '')}\n")


def command(s: Search, params: dict, number: int) -> str:
    """A `tuneforge fit` command line that trains the trial's settings again."""
    fields = {f.name: f for f in FitConfig.offered()}
    out = f"runs/{s.name}-trial-{number:04d}"
    words = ["tuneforge", "fit"]
    for key, value in {**s.fit, **params, "out": out}.items():
        f = fields.get(key)
        if value is None or f is None:
            continue
        name = flag(key)
        if isinstance(value, bool):
            words.append(name if value else "--no-" + name[2:])
        elif isinstance(value, list):
            words += [w for v in value for w in (name, str(v))] if f.metadata.get("append") else [name, *map(str, value)]
        else:
            words += [name, str(value)]
    return shlex.join(words)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
