"""Text tables (CSV/TSV/JSONL, or a folder of train/val/test tables): pretrained encoders
(minilm, hf:PATH, LoRA) or from-scratch lstm/gru/transformer on a vocabulary built from train;
and the classic model, `--model tfidf` (TF-IDF n-grams + a linear classifier, scikit-learn),
which reads only the run, model name, table and tfidf settings (no epochs: nothing steps)."""
from ..plugins import Plugin, register_plugin

PLUGIN = register_plugin(Plugin(
    "text", groups=("run", "optim", "model", "table", "text", "lora", "vocab", "arch", "semi", "ema", "baseline",
                    "decision"),
    detect="tuneforge.tasks.text.fit:detect", fit="tuneforge.tasks.text.fit:fit_text", tasks=("text-classification",),
    infer="tuneforge.tasks.text.infer", help="a text table: --text-column/--label-column or --columns"))

# registered after `text`, so asked before it (plugins.plugin_for): a text table with --model tfidf
TFIDF = register_plugin(Plugin(
    "tfidf", groups=("run", "model", "table", "tfidf"), detect="tuneforge.tasks.text.classic:detect",
    fit="tuneforge.tasks.text.classic:fit_classic", tasks=("text-tfidf",), infer="tuneforge.tasks.text.tfidf_infer",
    unread=("precision", "grad_clip", "max_minutes", "pretrained", "weights", "init", "freeze", "cache_features",
            "dropout"),
    help="a text table with --model tfidf: TF-IDF n-grams + a linear classifier, fitted by scikit-learn"))
