"""Named, measured defaults: `tuneforge fit --recipe NAME` fills every setting the user did not
give. A recipe is only a set of FitConfig values; nothing in one assumes an image size, a
class count or file names. Each entry states what it measured, where and with which command
(BENCHMARKS.md has the runs)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Recipe:
    doc: str
    measured: str
    settings: dict = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "fast": Recipe(
        "a small airbench-style CNN trained from scratch for two epochs at the model's 32 px: whitened "
        "patches, SGD-Nesterov one-cycle at a high rate, label smoothing 0.2, flip + 2 px crops, flip TTA",
        "CIFAR-10, 2-core CPU, cold start: 76.83% test in 3.3 min (one epoch: 68.26% in 2.0 min); the design's "
        "Keras pipeline 67.87% in 22.3 min (2026-11-28)",
        dict(model="fast-cnn", optimizer="sgd", lr=0.2, momentum=0.9, weight_decay=5e-4, batch_size=256, epochs=2,
             schedule="onecycle", warmup_epochs=0.25, label_smoothing=0.2, augment="flip,crop=2", tta=True,
             val_fraction=0.05),
    ),
    "design": Recipe(
        "the design document's Keras recipe on its CNN: Adam 1e-3, batch 32, 10 epochs, patience 3, "
        "shear/zoom/flip",
        "CIFAR-10, 2-core CPU, cold start: 69.44% test (71.36% with --tta) in 6.2 min; the Keras original "
        "67.87% in 22.3 min, same run (2026-11-28)",
        dict(model="seed-cnn", optimizer="adam", lr=1e-3, batch_size=32, epochs=10, patience=3,
             schedule="constant", weight_decay=0.0, augment="shear=0.2,zoom=0.2,flip"),
    ),
    "semi": Recipe(
        "few labels + many unlabeled images (with --unlabeled DIR --semi fixmatch): FixMatch with distribution "
        "alignment on fast-cnn, SGD 0.03, batch 32 labelled + 224 unlabeled, threshold 0.8, 100 steps an epoch, "
        "20 epochs (2,000 steps), flip TTA, no validation split (every label trains)",
        "CIFAR-10, 250 labels + 50,000 unlabeled, 2-core CPU, --max-minutes 20: 51.66% test vs 42.74% for the same "
        "settings on the 250 labels alone (2026-11-28; BENCHMARKS.md, Unlabeled data)",
        dict(model="fast-cnn", optimizer="sgd", lr=0.03, momentum=0.9, weight_decay=5e-4, batch_size=32, epochs=20,
             label_smoothing=0.0, tta=True, patience=0, val_fraction=0.0, semi_threshold=0.8, semi_steps=100,
             semi_align=True),
    ),
    "balanced": Recipe(
        "ImageNet EfficientNet-Lite0 fully fine-tuned at 64 px for 3 epochs (AdamW, cosine, warm-up, "
        "label smoothing, flip + pad-crop)",
        "CIFAR-10, 2-core CPU, cold start: 87.22% test (87.70% with --tta) in 21.5 min (2026-11-28)",
        dict(model="efficientnet_lite0", image_size=64, optimizer="adamw", lr=1e-3, batch_size=64, epochs=3,
             warmup_epochs=0.2, schedule="cosine", label_smoothing=0.1, augment="flip,crop=0.125"),
    ),
}
