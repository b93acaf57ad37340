"""Forecasting one time series: --date-column orders its rows, --target-column is forecast
--horizon rows ahead from the last --window rows, by a sequence model (gru, lstm, transformer)
on windows built without look-ahead and split by time (tuneforge/core/data/forecast.py); the
naive, seasonal-naive and ridge forecasts are reported beside it, with MASE."""
from ..plugins import Plugin, register_plugin


def detect(cfg) -> bool:
    return bool(cfg.date_column or cfg.target_column)


PLUGIN = register_plugin(Plugin(
    "forecast", groups=("run", "optim", "model", "table", "text", "arch", "sequence", "target", "forecast", "baseline"),
    detect="tuneforge.tasks.forecast:detect", fit="tuneforge.tasks.forecast.fit:fit",
    resolve="tuneforge.tasks.forecast.fit:resolve", tasks=("forecast",), infer="tuneforge.tasks.forecast.infer",
    unread=("text_column", "label_column", "columns", "skip_bad_rows", "max_length", "sequence_column", "id_column",
            "time_column", "init", "cache_features", "freeze", "weights", "pretrained", "test", "val"),
    help="one time series: --date-column and --target-column (--horizon, --window)"))
