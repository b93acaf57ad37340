"""`fit` for one time series (plugin `forecast`):

    tuneforge fit --data vix-daily.csv --date-column DATE --target-column CLOSE --horizon 1 --window 30

Windows of the last W rows (standardised with the training rows' mean and std) -> the target H
rows ahead, by default as its change from the last value (--residual), standardised too; the
sequence model (gru, lstm, transformer) trains on them with the shared Engine (MSE or Huber,
selected on the validation loss). The naive (last value), seasonal-naive and ridge forecasts are
scored on the same test origins: RMSE, MAE, R² and MASE (scaled by the naive forecast's MAE on
train, so below 1 beats 'the value in H rows = the value now')."""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ...config import FitConfig
from ...core.baseline import Baseline, compare
from ...core.data.forecast import Series, mase_scale, naive, origins, read_series, scores, seasonal_naive, targets, windows
from ...core.data.text_loader import SequenceBatchLoader
from ...core.models import create_model, model_spec
from ...core.run import FitResult, Run, finish, train_model
from ...core.strategies.regression import Regression
from ...errors import ConfigError

log = logging.getLogger("tuneforge")

MODELS = ("gru", "lstm", "transformer")


def resolve(cfg: FitConfig, given=()) -> None:
    """A forecast is a regression selected on the validation loss; its default model is a GRU."""
    if "model" not in given:
        cfg.model = "gru"
    cfg.task, cfg.monitor = "regression", "val_loss"


def _features(cfg: FitConfig) -> list[str] | None:
    return [c.strip() for c in cfg.feature_columns.split(",")] if cfg.feature_columns else None


def load_series(cfg: FitConfig) -> Series:
    if not (cfg.date_column and cfg.target_column):
        raise ConfigError("forecasting needs --date-column (the order of the rows) and --target-column (the value forecast)")
    if cfg.model not in MODELS:
        raise ConfigError(f"--model {cfg.model}: forecasting takes {', '.join(MODELS)}")
    return read_series(cfg.data, cfg.date_column, cfg.target_column, _features(cfg), cfg.encoding)


def ridge_forecast(x: dict[str, np.ndarray], y_train: np.ndarray) -> dict[str, np.ndarray]:
    """The linear reference: ridge regression on the flattened standardised window -> the same
    (standardised) target as the model."""
    from sklearn.linear_model import Ridge
    flat = {n: v.reshape(len(v), -1) for n, v in x.items()}
    model = Ridge(alpha=1.0).fit(flat["train"], y_train)
    return {n: model.predict(v) for n, v in flat.items() if n != "train"}


def fit(cfg: FitConfig, run: Run) -> FitResult:
    if model_spec(cfg.model).modality != "text":
        raise ConfigError(f"--model {cfg.model}: forecasting takes {', '.join(MODELS)}")
    t_data = time.perf_counter()
    series = load_series(cfg)
    W, H = cfg.window, cfg.horizon
    ts = origins(len(series.dates), W, H, cfg.val_fraction, cfg.forecast_test_fraction)
    y = series.target
    seen = series.values[: ts["train"][-1] + 1]  # the rows training's windows see
    mean, std = seen.mean(0), np.maximum(seen.std(0), 1e-6)
    x = {n: ((windows(series.values, t, W) - mean) / std).astype(np.float32) for n, t in ts.items()}
    last = {n: naive(y, t) if cfg.residual else np.zeros(len(t)) for n, t in ts.items()}
    true = {n: targets(y, t, H) for n, t in ts.items()}
    raw = {n: true[n] - last[n] for n in ts}     # what the model predicts: the change (or the level)
    ym, ys = float(raw["train"].mean()), float(max(raw["train"].std(), 1e-6))
    z = {n: torch.tensor((r - ym) / ys, dtype=torch.float32) for n, r in raw.items()}
    scale = mase_scale(y, ts["train"], H)
    data_s = time.perf_counter() - t_data
    log.info("data: %d rows of %s (%s .. %s); %s origins; window %d, horizon %d, %s (%.1fs)", len(y), series.names[0],
             series.dates[0], series.dates[-1], ", ".join(f"{len(t)} {n}" for n, t in ts.items()), W, H,
             "change from the last value" if cfg.residual else "level", data_s)

    torch.manual_seed(cfg.seed)
    model_args = {"embed_dim": cfg.embed_dim, "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
                  "pooling": cfg.pooling, "max_length": W, "input_dim": len(series.names)}
    model = create_model(cfg.model, 1, None, False, None, cfg.dropout, **model_args)

    def loader(name: str, train: bool = False) -> SequenceBatchLoader:
        return SequenceBatchLoader(list(torch.from_numpy(x[name])), z[name], cfg.batch_size if train else cfg.eval_batch_size,
                                   shuffle=train, seed=cfg.seed)

    engine, state = train_model(run, model, Regression(cfg.loss), loader("train", True),
                                loader("val") if "val" in ts else None, 2e-3)
    ridge = ridge_forecast(x, z["train"].numpy()) if cfg.baseline else {}
    report = {"model": cfg.model, "task": "forecast", "classes": None, "best_epoch": state.get("best_epoch"),
              "epochs_run": state["epoch"], "stopped_because": state["stopped_because"],
              "data": {**{n: len(t) for n, t in ts.items()}, "files": {"train": str(cfg.data)}, "rows": len(y),
                       "first_date": series.dates[0], "last_date": series.dates[-1], "load_s": round(data_s, 2),
                       "splits_by_date": {n: [series.dates[t[0] + H], series.dates[t[-1] + H]] for n, t in ts.items()}},
              "throughput": {"train_per_s": round(sum(h["images_per_s"] for h in state["history"]) / max(1, len(state["history"])), 1)},
              "forecast": {"horizon": H, "window": W, "season": cfg.season, "residual": cfg.residual, "target": series.names[0],
                           "features": series.names, "mase_scale": scale, "baselines": {}},
              "config": cfg.to_dict()}
    examples = None
    for name in ("val", "test"):
        if name not in ts:
            continue
        out = engine.predict(loader(name))
        pred = last[name] + (out["predictions"].numpy().astype(np.float64) * ys + ym)
        report[name] = {**scores(pred, true[name], scale), "loss": float(out["loss"])}
        refs = {"naive": naive(y, ts[name]), "seasonal_naive": seasonal_naive(y, ts[name], H, cfg.season)}
        if name in ridge:
            refs["ridge"] = last[name] + ridge[name] * ys + ym
        for ref, p in refs.items():
            report["forecast"]["baselines"].setdefault(ref, {})[name] = scores(p, true[name], scale)
        if name == "test" or "test" not in ts:  # report.html's predicted-vs-true plot
            examples = {"predictions": pred, "targets": true[name], "split": name}
    naive_scores = report["forecast"]["baselines"].get("naive", {})
    compare(report, Baseline("naive", f"the naive forecast (the value {H} rows ahead = the last value)", 0.0,
                             naive_scores.get("val"), naive_scores.get("test"), "no training"), run.warn)
    for name in ("val", "test"):
        if name in report:
            log.info("%s: MASE %.3f (naive %.3f, seasonal-naive %.3f), RMSE %.4g (naive %.4g)", name, report[name]["mase"],
                     naive_scores[name]["mase"], report["forecast"]["baselines"]["seasonal_naive"][name]["mase"],
                     report[name]["rmse"], naive_scores[name]["rmse"])
    pre = {"image_size": None, "max_length": W, "pad_id": 0, "tokenizer": None,
           "scale": {"mean": mean.tolist(), "std": std.tolist(), "target": [ym, ys]}}
    meta = {"task": "forecast", "model": cfg.model, "model_args": model_args, "classes": ["value"], "preprocessing": pre,
            "forecast": {"window": W, "horizon": H, "residual": cfg.residual, "season": cfg.season,
                         "date_column": cfg.date_column, "target_column": cfg.target_column, "features": series.names,
                         "mase_scale": scale, "last_date": series.dates[-1]},
            "metrics": {k: {m: report[k][m] for m in ("rmse", "mae", "mase", "n")} for k in ("val", "test") if k in report},
            "data": {"train_file": str(cfg.data), "train_rows": len(ts["train"]), "encoding": cfg.encoding}}
    return finish(run, model, report, state, meta, examples)
