"""Text tables (CSV/TSV/JSONL, or a folder of train/val/test tables): pretrained encoders
(minilm, hf:PATH, LoRA) or from-scratch lstm/gru/transformer on a vocabulary built from train;
and the classic model, `--model tfidf` (TF-IDF n-grams + a linear classifier, scikit-learn),
which reads only the run, model name, table and tfidf settings (no epochs: nothing steps)."""
from ...errors import ConfigError
from ..plugins import Plugin, register_plugin


def resolve(cfg, given=()) -> None:
    """Regression (--task regression) selects on the validation loss (there is no accuracy);
    --label-columns is multi-label; multi-label selects epochs on the validation micro-F1 unless
    --monitor says otherwise."""
    if cfg.label_columns:
        cfg.multi_label = True
    if cfg.multi_label and cfg.task == "regression":
        raise ConfigError("--multi-label and --task regression: a label column holds labels or one number, not both")
    if cfg.target_recall and (cfg.multi_label or cfg.task == "regression"):
        raise ConfigError("--target-recall chooses one class's threshold of a single-label classifier: not with "
                          + ("--multi-label (each label's threshold is tuned on validation already)" if cfg.multi_label
                             else "--task regression"))
    if cfg.task == "regression":
        cfg.monitor = "val_loss"
    if cfg.multi_label and "monitor" not in given:
        cfg.monitor = "val_micro_f1"
    if cfg.monitor == "val_micro_f1" and not cfg.multi_label:
        raise ConfigError("--monitor val_micro_f1 is for multi-label fits (--multi-label or --label-columns)")


PLUGIN = register_plugin(Plugin(
    "text", groups=("run", "optim", "model", "table", "text", "lora", "vocab", "arch", "semi", "ema", "baseline", "target",
                    "heads", "decision"),
    detect="tuneforge.tasks.text.fit:detect", fit="tuneforge.tasks.text.fit:fit_text",
    tasks=("text-classification", "text-regression", "text-multilabel"),
    resolve="tuneforge.tasks.text:resolve",
    infer="tuneforge.tasks.text.infer", help="a text table: --text-column/--label-column or --columns"))

# registered after `text`, so asked before it (plugins.plugin_for): a text table with --model tfidf
TFIDF = register_plugin(Plugin(
    "tfidf", groups=("run", "model", "table", "tfidf"), detect="tuneforge.tasks.text.classic:detect",
    fit="tuneforge.tasks.text.classic:fit_classic", tasks=("text-tfidf",), infer="tuneforge.tasks.text.tfidf_infer",
    unread=("precision", "grad_clip", "max_minutes", "pretrained", "weights", "init", "freeze", "cache_features",
            "dropout", "nproc", "sync_bn", "device"),  # scikit-learn, in one process, on the CPU
    help="a text table with --model tfidf: TF-IDF n-grams + a linear classifier, fitted by scikit-learn"))
