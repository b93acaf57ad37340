"""Image + text tables: a fusion model (late, gated or cross-attention) of an image and a text
encoder, or one of them alone as the baseline on the same rows (--modalities)."""
from ..plugins import Plugin, register_plugin


def detect(cfg) -> bool:
    return bool(cfg.modalities or cfg.image_column or cfg.model == "fusion")


PLUGIN = register_plugin(Plugin(
    "image+text", groups=("run", "optim", "model", "image", "table", "text", "fusion", "baseline"),
    detect="tuneforge.tasks.multimodal:detect", fit="tuneforge.tasks.multimodal.fit:fit_multimodal",
    tasks=("image-text-classification",), infer="tuneforge.tasks.multimodal.infer",
    unread=("tta", "head_init", "channels_last", "limit_per_class", "columns", "skip_bad_rows", "weights", "init"),
    help="an image+text table: --image-column, --text-column, --label-column (--modalities)"))
