"""Numeric sequences: one row per sequence (--sequence-column) or one row per step (--id-column,
--time-column); classified or regressed (--task regression) by lstm/gru/transformer. The fit
shares the text fit's readers and loop (tuneforge/tasks/text/fit.py)."""
from ..plugins import Plugin, register_plugin


def detect(cfg) -> bool:
    return bool(cfg.sequence_column or cfg.id_column)


def resolve(cfg, given=()) -> None:
    """Regression selects on the validation loss (there is no accuracy)."""
    if cfg.task == "regression" and cfg.monitor != "val_loss":
        cfg.monitor = "val_loss"


PLUGIN = register_plugin(Plugin(
    "sequence", groups=("run", "optim", "model", "table", "text", "arch", "sequence", "target", "baseline"),
    detect="tuneforge.tasks.sequence:detect", fit="tuneforge.tasks.text.fit:fit_text",
    resolve="tuneforge.tasks.sequence:resolve", tasks=("sequence-classification", "sequence-regression"),
    infer="tuneforge.tasks.sequence.infer", unread=("text_column", "init", "cache_features"),
    help="numeric sequences: --sequence-column, or --id-column with --time-column"))
