"""Plain supervised classification: uint8 batch -> [0, 1] floats -> augment -> cross-entropy.
With mixup/cutmix in the augmentation the batch is mixed last and the loss is the soft-label
cross-entropy against the mixed (label-smoothed) one-hot targets, as in timm; the targets
reported for the train accuracy are then each image's dominant label."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import Augment, flip_tta
from ..augment.policies import mixed_targets, soft_cross_entropy


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]; float inputs pass through."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class Supervised:
    forwards_model = True  # train_step only calls model(...): DistributedDataParallel can wrap it
    def __init__(self, augment: Augment | str = "none", label_smoothing: float = 0.0, tta: bool = False):
        self.augment = augment if isinstance(augment, Augment) else Augment(augment)
        self.label_smoothing = label_smoothing
        self.tta = tta

    def train_step(self, model: nn.Module, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x, y = batch
        lam = None
        if torch.is_tensor(x):  # images; text and sequence batches are dicts of ids/values and masks
            x = self.augment(to_float(x), generator)
            if self.augment.mixes:
                x, lam = self.augment.mix(x, generator)
        logits = model(x)
        if lam is None:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
            return {"loss": loss, "logits": logits, "targets": y}
        loss = soft_cross_entropy(logits, mixed_targets(y, lam, logits.shape[1], self.label_smoothing))
        return {"loss": loss, "logits": logits, "targets": y if lam >= 0.5 else y.flip(0)}

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        x = to_float(x) if torch.is_tensor(x) else x
        logits = model(x)
        if self.tta and torch.is_tensor(x):
            logits = flip_tta(model, x, logits)
        return {"loss": F.cross_entropy(logits.float(), y), "logits": logits, "targets": y}
