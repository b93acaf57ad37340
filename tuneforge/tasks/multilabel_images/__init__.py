"""Multi-label images: a table (CSV/TSV/JSONL) of image paths (relative to the table's folder)
whose label column holds several labels separated by '|' (or one 0/1 column per label,
--label-columns), fitted with --multi-label (an X-ray can show several findings):

    tuneforge fit --data findings.csv --image-column path --label-column labels --multi-label

Sigmoid outputs, per-label thresholds tuned on validation, the metrics, report section and
answers of text multi-label. Registered after the image+text kind, so asked before it."""
from ..plugins import Plugin, register_plugin

PLUGIN = register_plugin(Plugin(
    "image-multilabel", groups=("run", "optim", "model", "image", "table", "heads", "fusion", "baseline"),
    detect="tuneforge.tasks.multilabel_images.fit:detect", fit="tuneforge.tasks.multilabel_images.fit:fit",
    resolve="tuneforge.tasks.multilabel_images.fit:resolve", tasks=("image-multilabel",),
    infer="tuneforge.tasks.multilabel_images.infer",
    unread=("text_column", "columns", "tta", "head_init", "label_names", "modalities", "image_root", "image_model",
            "text_model", "fusion", "fusion_dim", "image_freeze", "text_freeze", "image_lr", "text_lr", "modality_dropout",
            "min_class_count", "test_fraction"),
    help="images with several labels each: a table of image paths (--image-column) and --label-column, --multi-label"))
