"""Multi-label classification (`fit --multi-label`): one sigmoid per label, binary
cross-entropy against the row's 0/1 label vector. Batches are (inputs, (B, C) float targets);
inputs are what the model takes (token dicts, or uint8 images, scaled to [0, 1] and augmented
while training), or cached features (B, V, D) of a frozen encoder, of which view 0 is used.
Returns "logits" and 2-D "targets": the engine then reports the validation micro-F1 at 0.5
(`val_micro_f1`) instead of an accuracy."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import Augment
from .supervised import to_float


class MultiLabel:
    forwards_model = True  # train_step only calls model(...): DistributedDataParallel can wrap it

    def __init__(self, cached: bool = False, augment: Augment | str = "none"):
        self.cached = cached
        self.augment = augment if isinstance(augment, Augment) else Augment(augment)
        if self.augment.mixes:  # a mixed image carries a blend of two label sets: not a 0/1 target
            raise ValueError("multi-label training takes no mixup/cutmix augmentation")

    def _logits(self, model: nn.Module, x) -> torch.Tensor:
        return model(x[:, 0] if self.cached else x).float()

    def train_step(self, model: nn.Module, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x, y = batch
        if torch.is_tensor(x) and not self.cached:  # images; text batches are dicts of ids and masks
            x = self.augment(to_float(x), generator)
        return self._scored(model, x, y)

    def _scored(self, model: nn.Module, x, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self._logits(model, x)
        return {"loss": F.binary_cross_entropy_with_logits(logits, y.float()), "logits": logits, "targets": y}

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        return self._scored(model, to_float(x) if torch.is_tensor(x) and not self.cached else x, y)
