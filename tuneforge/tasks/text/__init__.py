"""Text tables (CSV/TSV/JSONL, or a folder of train/val/test tables): pretrained encoders
(minilm, hf:PATH, LoRA) or from-scratch lstm/gru/transformer on a vocabulary built from train."""
from ..plugins import Plugin, register_plugin

PLUGIN = register_plugin(Plugin(
    "text", groups=("run", "optim", "model", "table", "text", "lora", "vocab", "arch", "semi", "ema"),
    detect="tuneforge.tasks.text.fit:detect", fit="tuneforge.tasks.text.fit:fit_text", tasks=("text-classification",),
    infer="tuneforge.tasks.text.infer", help="a text table: --text-column/--label-column or --columns"))
