"""Forecasting windows from one time series: a date column orders the rows, a target column is
forecast `horizon` rows ahead from the last `window` rows.

No look-ahead: the example of origin t has the features of rows t-W+1..t only and the target
of row t+H. The split is by time and by the target's row: train's targets come before val's,
val's before test's (fractions of the rows, the last ones for test), so a window never sees a
target of a later split; its features may come from an earlier split, which is the past at
its origin. The naive (last value), seasonal-naive and MASE references are computed here too,
in the series' own units."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from ...errors import DataError
from .text import read_rows


@dataclass
class Series:
    dates: list[str]        # as written in the file, sorted
    values: np.ndarray      # (N, F) float64; column 0 is the target
    names: list[str]        # the feature columns, the target first
    path: str = ""

    @property
    def target(self) -> np.ndarray:
        return self.values[:, 0]


def _date_key(text: str, where: str):
    """Dates sort as dates (ISO or not), numbers as numbers."""
    t = text.strip()
    try:
        return (0, float(t))
    except ValueError:
        pass
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d"):
        try:
            return (1, datetime.strptime(t, fmt).timestamp())
        except ValueError:
            continue
    raise DataError(f"{where}: {text!r} is not a date (YYYY-MM-DD, MM/DD/YYYY ...) or a number")


def read_series(path, date_column: str, target_column: str, feature_columns: list[str] | None = None,
                encoding: str = "utf-8") -> Series:
    """A table of one series: rows sorted by `date_column`; the target first, then the other
    feature columns (default: the target alone). A missing or non-numeric value is an error
    naming its line (a forecast needs every step)."""
    feats = [target_column] + [c for c in (feature_columns or []) if c != target_column]
    rows, nos, _ = read_rows(path, None, encoding, need=(date_column, *feats))
    keyed = []
    for row, no in zip(rows, nos):
        where = f"{path} line {no}"
        try:
            vals = [float(row[c]) for c in feats]
        except (TypeError, ValueError):
            bad = next(c for c in feats if not _is_number(row[c]))
            raise DataError(f"{where}: column {bad!r} holds {row[bad]!r}, not a number") from None
        if not np.all(np.isfinite(vals)):
            raise DataError(f"{where}: a value is not finite")
        keyed.append((_date_key(row[date_column], where), row[date_column], vals))
    keyed.sort(key=lambda k: k[0])
    for a, b in zip(keyed, keyed[1:]):
        if a[0] == b[0]:
            raise DataError(f"{path}: date {b[1]!r} appears twice in column {date_column!r} (one row per date)")
    return Series([k[1] for k in keyed], np.asarray([k[2] for k in keyed], np.float64).reshape(len(keyed), len(feats)),
                  feats, str(path))


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def origins(n: int, window: int, horizon: int, val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """The origins t of each split's examples (features t-W+1..t, target t+H), split by the
    target's row: targets in the first (1 - val - test) of the rows train, the next val, the last
    test. Origins run in time order; none is shared."""
    first = window - 1                     # the first origin with a whole window
    ts = np.arange(first, n - horizon)     # every origin whose target exists
    if len(ts) < 3:
        raise DataError(f"the series has {n} rows: too few for --window {window} and --horizon {horizon}")
    val_start = int(round(n * (1 - val_fraction - test_fraction)))
    test_start = int(round(n * (1 - test_fraction)))
    target = ts + horizon
    out = {"train": ts[target < val_start]}
    if val_fraction > 0:
        out["val"] = ts[(target >= val_start) & (target < test_start)]
    if test_fraction > 0:
        out["test"] = ts[target >= test_start]
    for name, t in out.items():
        if len(t) == 0:
            raise DataError(f"the {name} split of a {n}-row series has no examples with --window {window} "
                            f"--horizon {horizon}; use a longer series or larger fractions")
    return out


def windows(values: np.ndarray, ts: np.ndarray, window: int) -> np.ndarray:
    """(len(ts), W, F): the rows t-W+1..t of each origin t, and nothing after t."""
    idx = ts[:, None] + np.arange(-window + 1, 1)[None, :]
    return values[idx]


def targets(target: np.ndarray, ts: np.ndarray, horizon: int) -> np.ndarray:
    return target[ts + horizon]


def naive(target: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Tomorrow = today: the last value known at each origin."""
    return target[ts]


def seasonal_naive(target: np.ndarray, ts: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """The value one season before the target's row, from the last whole season known at the
    origin: y[t + H - m*ceil(H/m)] (never after t)."""
    back = season * -(-horizon // season)
    return target[np.maximum(ts + horizon - back, 0)]


def mase_scale(target: np.ndarray, ts_train: np.ndarray, horizon: int) -> float:
    """The in-sample naive forecast's MAE over the training examples (|y[t+H] - y[t]|): a
    forecast with MASE below 1 beats 'the value H steps ahead = the value now' on the scale
    of the training period."""
    scale = float(np.abs(target[ts_train + horizon] - target[ts_train]).mean())
    return scale if scale > 0 else 1.0


def scores(pred: np.ndarray, true: np.ndarray, scale: float) -> dict:
    """RMSE, MAE, R² (scikit-learn) and MASE of forecasts in the series' units."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    mae = float(mean_absolute_error(true, pred))
    return {"n": int(len(true)), "rmse": float(np.sqrt(mean_squared_error(true, pred))), "mae": mae,
            "r2": float(r2_score(true, pred)) if len(true) > 1 else float("nan"), "mase": mae / scale}
