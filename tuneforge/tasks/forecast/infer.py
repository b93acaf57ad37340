"""Forecasts at inference (`forecast` bundles): the input is the last W rows of the series (a
JSON list of values, or of steps `[[target, feature...], ...]`; or a table in the training
layout, whose last W rows are used), at least W of them; the answer is the target `horizon`
rows after the last one, in the target's units. The graph adds the last value back (an input,
`last`), so ONNX answers the same number as PyTorch."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.data.forecast import read_series, targets, windows
from ...core.data.sequences import parse_values
from ...core.data.text import is_table
from ...errors import DataError
from ..registry import Labelled, Task, register_task


class ForecastGraph(nn.Module):
    """Standardised window, its mask and the last value -> the forecast in the target's units."""

    def __init__(self, model: nn.Module, mean: float, std: float, residual: bool):
        super().__init__()
        self.model, self.mean, self.std, self.keep = model, mean, std, 1.0 if residual else 0.0

    def forward(self, values: torch.Tensor, attention_mask: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        z = self.model({"values": values, "attention_mask": attention_mask})[:, :1]
        return z * self.std + self.mean + self.keep * last.unsqueeze(1)


@register_task("forecast")
class ForecastTask(Task):
    inputs = ("values",)
    input_names = ("values", "attention_mask", "last")
    output_name = "forecast"
    score = "regression"

    def __init__(self, config: dict):
        super().__init__(config)
        scale = self.pre.get("scale") or {}
        self.mean = np.asarray(scale.get("mean", [0.0]), np.float32)
        self.std = np.asarray(scale.get("std", [1.0]), np.float32)
        self.change = tuple(scale.get("target", (0.0, 1.0)))
        self.f: dict = config.get("forecast") or {}
        self.window, self.horizon = int(self.f.get("window", 1)), int(self.f.get("horizon", 1))
        self.target = (0.0, self.change[1])  # outputs are already in the target's units (api's loss: / std)
        self.mase_scale = self.f.get("mase_scale")

    def prepare(self, image=None, text: str | None = None, values: Any = None) -> dict[str, np.ndarray]:
        raw = values if values is not None else text
        width = len(self.mean)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            raise DataError(f'this model forecasts from the last {self.window} values of the series: send JSON '
                            f'{{"values": [...]}}' + (f" (steps of {width} numbers: {', '.join(self.f.get('features', []))})"
                                                     if width > 1 else ""))
        try:
            steps = parse_values(raw) if isinstance(raw, str) else \
                [[float(x) for x in (s if isinstance(s, (list, tuple)) else [s])] for s in raw]
        except (ValueError, TypeError, json.JSONDecodeError, RecursionError):
            raise DataError(f"not a list of numbers: {str(raw)[:80]!r}") from None
        if any(len(s) != width for s in steps):
            raise DataError(f"each step of this model's series has {width} number(s) "
                            f"({', '.join(self.f.get('features', []))})")
        if len(steps) < self.window:
            raise DataError(f"this model forecasts from the last {self.window} values (its --window); got {len(steps)}")
        x = np.asarray(steps[-self.window:], np.float64)
        return {"values": ((x - self.mean) / self.std).astype(np.float32),
                "attention_mask": np.ones(self.window, np.int64), "last": np.float32(x[-1, 0])}

    def graph(self, model: nn.Module) -> nn.Module:
        return ForecastGraph(model, float(self.change[0]), float(self.change[1]), bool(self.f.get("residual", True))).eval()

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {"values": {0: "batch"}, "attention_mask": {0: "batch"}, "last": {0: "batch"}, self.output_name: {0: "batch"}}

    def example_batch(self, n: int = 2) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(0)
        steps = self.mean + self.std * rng.normal(size=(n, self.window, len(self.mean)))
        return self.collate([self.prepare(values=s.tolist()) for s in steps])

    def values(self, outputs: np.ndarray) -> np.ndarray:
        return outputs.reshape(len(outputs), -1)[:, 0].astype(np.float64)

    def results(self, outputs: np.ndarray, items: list[dict[str, np.ndarray]], k: int = 5) -> list[dict]:
        return [{"value": round(float(v), 6), "horizon": self.horizon} for v in self.values(outputs)]

    # --- tables in the training layout ---

    def _series(self, path: Path):
        f = self.f
        if not (f.get("date_column") and f.get("target_column")):
            raise DataError(f"{self.config.get('_dir', 'bundle')}: the bundle does not name its date and target columns")
        return read_series(path, f["date_column"], f["target_column"], f.get("features"), self.data.get("encoding", "utf-8"))

    def rows(self, items: list[str]) -> list[dict]:
        """A table: one forecast from its last W rows (after its last date); else the values given."""
        out: list[dict] = []
        for it in map(str, items):
            p = Path(it)
            if is_table(p):
                s = self._series(p)
                out.append({"after": s.dates[-1], "values": s.values[-self.window:].tolist()})
            else:
                out.append({"values": it})
        return out

    def table_rows(self, path: Path, column: str | None = None) -> list[dict]:
        """`batch` on a series: the forecast from every origin with W rows behind it."""
        s = self._series(path)
        ts = np.arange(self.window - 1, len(s.dates))
        return [{"after": s.dates[t], "values": w.tolist()} for t, w in zip(ts, windows(s.values, ts, self.window))]

    def folder_rows(self, path: Path) -> list[dict]:
        raise DataError(f"{path}: a forecasting model reads a table (the series)")

    def labelled(self, data: str | Path, **options) -> Labelled:
        """Every origin of the series with its target H rows later (in the series' units)."""
        s = self._series(Path(data))
        ts = np.arange(self.window - 1, len(s.dates) - self.horizon)
        if not len(ts):
            raise DataError(f"{data}: too few rows for the window ({self.window}) and horizon ({self.horizon})")
        rows = [{"after": s.dates[t], "values": w.tolist()} for t, w in zip(ts, windows(s.values, ts, self.window))]
        dates = [s.dates[t] for t in ts]
        return Labelled(rows, targets(s.target, ts, self.horizon), {"test": len(ts), "file": str(data)},
                        {"texts": dates, "paths": dates}, Path(data).name)
