"""Text tables (CSV/TSV/JSONL, or a folder of train/val/test tables): pretrained encoders
(minilm, hf:PATH, LoRA) or from-scratch lstm/gru/transformer on a vocabulary built from train."""
from pathlib import Path

from ...core.data.text import is_text_data
from ...core.models import model_spec
from ..registry import Plugin, register_plugin
from . import infer  # noqa: F401  registers the "text-classification" Task


def detect(cfg) -> bool:
    return is_text_data(cfg.data, cfg.text_column) or (
        cfg.data is not None and Path(cfg.data).is_dir() and model_spec(cfg.model).modality == "text")


PLUGIN = register_plugin(Plugin(
    "text", groups=("run", "optim", "model", "table", "text", "lora", "vocab", "arch", "semi", "ema"), detect=detect,
    fit="tuneforge.tasks.text.fit:fit_text", tasks=("text-classification",),
    help="a text table: --text-column/--label-column or --columns"))
