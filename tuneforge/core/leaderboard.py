"""`tuneforge runs DIR...`: a leaderboard of run folders (a study's trials, separate fits),
read from what every run leaves (config.yaml, report.json, metrics.jsonl, failed.json), never
by loading a model: this module imports no torch and no training code.

    rows = leaderboard(["runs/", "study/trials"], sort="val_macro_f1", top=5)
    print(render(rows, "csv"))

A row is a flat dict: "run" (the folder), "model", "task" (the bundle's task), "state",
"stopped_because", "epochs_run", "best_epoch", "wall_s", "settings" (the key settings and every
setting that differs between the runs of a model), "error" (a failed run's), and one "SPLIT_METRIC" key per
number of report.json's val and test sections ("val_accuracy", "test_macro_f1", "val_rmse"...).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

# FAILED: written by core/run.py's Run when an error ends a run that keeps its folder;
# FAILED_TRIAL: by `tuneforge search` into a trial's folder (the trial's error, as text)
REPORT, CONFIG, HISTORY, FAILED, FAILED_TRIAL = "report.json", "config.yaml", "metrics.jsonl", "failed.json", "FAILED.txt"
# Folders below DIR searched for run folders: STUDY/trials/0007 is two levels down.
MAX_DEPTH = 3
# Shown for every run that has them; any other setting only when it differs between the rows.
KEY_SETTINGS = ("recipe", "lr", "epochs", "batch_size", "freeze", "optimizer")
# Where a run is, not what it trains: never a "differing setting".
_NOT_SETTINGS = {"data", "val", "test", "out", "resume", "overwrite", "progress", "threads", "tensorboard",
                 "eval_batch_size", "cache_dir", "unlabeled", "image_root", "init", "weights", "track"}
# Metrics where smaller is better (sorted ascending).
_LOWER_IS_BETTER = {"loss", "rmse", "mae", "mse", "mase", "error", "perplexity", "ece", "s"}  # s: seconds (wall_s)
# The table's metric columns, in this order, when any row has them (csv and json carry all).
TABLE_METRICS = ("accuracy", "micro_f1", "macro_f1", "mAP", "loss", "rmse", "mae", "r2", "mase")


def is_run(folder: Path) -> bool:
    """A run folder: config.yaml written by a run (a study's own search.yaml and report are not
    one) with a report, or the per-epoch log of a run that has not finished; or a search trial
    that failed, with or without the run it started."""
    if (folder / FAILED_TRIAL).is_file():
        return True
    if not (folder / CONFIG).is_file():
        return False
    return any((folder / f).exists() for f in (REPORT, HISTORY, FAILED, "checkpoints"))


def find_runs(dirs: list[str | Path]) -> list[Path]:
    """Every run folder given or below the given folders (depth MAX_DEPTH, not inside a run
    folder), in the order given then by name; a path that is missing or holds no run is refused
    naming it."""
    found: list[Path] = []
    for d in dirs:
        path = Path(d)
        if not path.exists():
            raise ConfigError(f"runs: {path}: no such folder")
        if not path.is_dir():
            raise ConfigError(f"runs: {path}: not a folder (give a run folder or a folder of run folders)")
        runs = _walk(path, MAX_DEPTH)
        if not runs:
            raise ConfigError(f"runs: {path}: no run folder in it (a run folder holds {CONFIG} and {REPORT}, or "
                              f"{HISTORY} while it trains), searched {MAX_DEPTH} levels down")
        found += [r for r in runs if r not in found]
    return found


def _walk(folder: Path, depth: int) -> list[Path]:
    if is_run(folder):
        return [folder]
    if depth == 0:
        return []
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except PermissionError:
        return []
    return [r for child in children for r in _walk(child, depth - 1)]


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # being written, or cut short by a kill: read as absent
    return doc if isinstance(doc, dict) else None


def _history(folder: Path) -> list[dict]:
    """metrics.jsonl's complete lines (a line being written is skipped)."""
    try:
        lines = (folder / HISTORY).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def state_of(report: dict | None, failed: dict | None) -> str:
    """finished, stopped early (patience, --max-minutes, a callback's or a pruner's stop),
    interrupted (Ctrl-C), failed (an error after its first epoch: failed.json), or unfinished
    (still training, or killed)."""
    if report is not None:
        why = report.get("stopped_because")
        if why in (None, "max_epochs"):
            return "finished"
        return "interrupted" if why == "interrupted" else "stopped early"
    if failed is not None:
        return "interrupted" if failed.get("error") == "interrupted" else "failed"
    return "unfinished"


def _metrics(report: dict) -> dict[str, float]:
    """"SPLIT_METRIC" for every number in report.json's val and test sections."""
    out: dict[str, float] = {}
    for split in ("val", "test"):
        section = report.get(split)
        if not isinstance(section, dict):
            continue
        for k, v in section.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n":
                out[f"{split}_{k}"] = v
    return out


def _best_record(history: list[dict], monitor: str) -> dict:
    """The epoch early stopping would keep (the monitored value's best), else the last."""
    scored = [r for r in history if isinstance(r.get(monitor), (int, float))]
    if not scored:
        return history[-1] if history else {}
    pick = min if lower_is_better(monitor) else max
    return pick(scored, key=lambda r: r[monitor])


def read_run(folder: Path) -> dict[str, Any]:
    """One row: what the run folder says about itself."""
    report, failed = _read_json(folder / REPORT), _read_json(folder / FAILED)
    if failed is None and (folder / FAILED_TRIAL).is_file():
        failed = {"error": (folder / FAILED_TRIAL).read_text(encoding="utf-8", errors="replace").strip()}
    try:
        config = yaml.safe_load((folder / CONFIG).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    bundle = _read_json(folder / "model" / "config.json") or {}
    row: dict[str, Any] = {"run": str(folder), "model": (report or {}).get("model") or config.get("model"),
                           "task": bundle.get("task") or (report or {}).get("task"),
                           "state": state_of(report, failed), "stopped_because": (report or {}).get("stopped_because"),
                           "epochs_run": None, "best_epoch": None, "wall_s": None, "settings": {}, "error": None,
                           "_config": config if isinstance(config, dict) else {}}
    if report is not None:
        row.update(epochs_run=report.get("epochs_run"), best_epoch=report.get("best_epoch"),
                   wall_s=report.get("wall_s"), **_metrics(report))
        return row
    # unfinished or failed: what its epochs logged, at the epoch early stopping would keep
    history = _history(folder)
    best = _best_record(history, str(row["_config"].get("monitor") or "val_accuracy"))
    row.update(epochs_run=len(history) or None, best_epoch=best.get("epoch"),
               wall_s=round(sum(r.get("epoch_s", 0.0) for r in history), 2) if history else None,
               **{k: v for k, v in best.items() if k.startswith("val_") and isinstance(v, (int, float))})
    if failed is not None:
        row["error"] = failed.get("error")
    return row


def _with_settings(rows: list[dict]) -> None:
    """Each row's "settings": KEY_SETTINGS it has, and every setting whose value differs between
    the rows (what a study searched over, what separate fits changed)."""
    configs = [r.pop("_config") for r in rows]
    for row, config in zip(rows, configs):
        # compared with the runs of the same model: another model's settings differ by default values it never reads
        peers = [c for r, c in zip(rows, configs) if r["model"] == row["model"]]
        differing = {k for k in set().union(*peers) - _NOT_SETTINGS
                     if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in peers}) > 1}
        order = [*KEY_SETTINGS, *sorted(differing - set(KEY_SETTINGS))]
        # a model fitted without epochs (--model tfidf) reads no training settings: their defaults are noise
        trained = row["epochs_run"] is not None
        row["settings"] = {k: config[k] for k in order if k in config and config[k] is not None
                           and (k in differing or (k in KEY_SETTINGS and (trained or k == "recipe")))}


def lower_is_better(metric: str) -> bool:
    """By the metric's words: val_loss, test_rmse, wall_s ascending; val_macro_f1 descending."""
    return bool(set(metric_name(metric).lower().split("_")) & _LOWER_IS_BETTER)


def metric_name(name: str) -> str:
    """`val_accuracy`, `val.accuracy` and `val/accuracy` are one metric."""
    return name.strip().replace(".", "_").replace("/", "_").replace("-", "_")


def default_sort(rows: list[dict]) -> str | None:
    """val accuracy where there is one, else val loss, else the first val or test metric."""
    present = [k for r in rows for k in r if k.startswith(("val_", "test_"))]
    for name in ("val_accuracy", "val_micro_f1", "val_loss", "val_rmse", "test_accuracy"):
        if name in present:
            return name
    return present[0] if present else None


def leaderboard(dirs: list[str | Path], sort: str | None = None, top: int | None = None) -> list[dict]:
    """The rows of every run folder in or below `dirs`, best first by `sort` (a "SPLIT_METRIC"
    name; direction told by the name: loss, rmse, mae... ascending), runs without it last;
    at most `top` rows."""
    if top is not None and top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    rows = [read_run(f) for f in find_runs(list(dirs))]
    _with_settings(rows)
    key = metric_name(sort) if sort else default_sort(rows)
    if sort and not any(key in r for r in rows):
        have = sorted({k for r in rows for k in r if k.startswith(("val_", "test_"))})
        raise ConfigError(f"--sort {sort}: no run has this metric; the runs have: {', '.join(have) or 'none'}")
    if key is not None:
        sign = 1 if lower_is_better(key) else -1
        rows.sort(key=lambda r: (r.get(key) is None, sign * r[key] if r.get(key) is not None else 0.0))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows[:top] if top else rows


# --------------------------------------------------------------------------- output

_FIXED = ("rank", "run", "model", "task", "state", "stopped_because", "epochs_run", "best_epoch", "wall_s")


def metric_columns(rows: list[dict], table: bool = False, sort: str | None = None) -> list[str]:
    """The metric keys of the rows: val ones first, then test; for the table only TABLE_METRICS
    (and the sort metric)."""
    present = {k for r in rows for k in r if k.startswith(("val_", "test_"))}
    out = []
    for split in ("val", "test"):
        names = [f"{split}_{m}" for m in TABLE_METRICS] if table else \
            sorted((k for k in present if k.startswith(split + "_")),
                   key=lambda k: (TABLE_METRICS.index(k.split("_", 1)[1]) if k.split("_", 1)[1] in TABLE_METRICS
                                  else len(TABLE_METRICS), k))
        out += [k for k in names if k in present]
    if sort and metric_name(sort) in present and metric_name(sort) not in out:
        out.append(metric_name(sort))
    return out


def _raw(value: Any) -> Any:
    """A csv cell: numbers at full precision, nothing for None."""
    return "" if value is None else value


def _cell(value: Any, digits: str = ".4f") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, digits)
    if isinstance(value, dict):  # settings: as a flag's value would be written
        return " ".join(f"{k}={_cell(v, 'g')}" for k, v in value.items())
    return str(value)


def render(rows: list[dict], fmt: str = "table", sort: str | None = None) -> str:
    """The rows as csv (settings as one "k=v k=v" column and one column per setting), json (the
    rows as the API returns them) or a plain-text table."""
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    settings = list(dict.fromkeys(k for r in rows for k in r["settings"]))
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        metrics = metric_columns(rows)
        w.writerow([*_FIXED, *settings, *metrics, "error"])
        for r in rows:
            w.writerow([_raw(r.get(k)) for k in _FIXED] + [_raw(r["settings"].get(k)) for k in settings]
                       + [_raw(r.get(k)) for k in metrics] + [_raw(r.get("error"))])
        return buf.getvalue()
    header, body = table_cells(rows, sort)
    widths = [max(len(h), *(len(line[i]) for line in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in body]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def table_cells(rows: list[dict], sort: str | None = None) -> tuple[list[str], list[list[str]]]:
    """The terminal table's header and cells (a rich table or plain text draws them)."""
    metrics = metric_columns(rows, table=True, sort=sort)
    header = ["#", "run", "model", "state", "epochs", "wall s", "settings", *metrics]
    body = [[str(r["rank"]), r["run"], _cell(r["model"]),
             r["state"] + (f" ({r['stopped_because']})" if r["state"] == "stopped early" else ""),
             _cell(r["epochs_run"]), _cell(r["wall_s"], ".1f"), _cell(r["settings"]), *(_cell(r.get(m)) for m in metrics)]
            for r in rows]
    return header, body
