"""Training on what frozen layers computed once: pooled features of a frozen backbone (linear
probe, `--freeze backbone`) or the output maps of frozen early stages (`--freeze K`).

Frozen layers compute the same thing every epoch, so they run once instead: the epochs then
cost only the trainable rest. Batches are (features (B, V, D) or maps (B, V, C, h, w), labels);
view 1, when present, is the mirrored image: picking a view at random per sample is the
flip augmentation, and averaging both views is flip TTA. For maps, a random shift by up to
`shift` cells (reflect-padded) stands in for pad-and-crop of the pixels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import log_mean_softmax, random_crop


class CachedFeatures:
    forwards_model = True  # train_step only calls model(...): DistributedDataParallel can wrap it
    def __init__(self, label_smoothing: float = 0.0, flip: bool = False, tta: bool = False, shift: int = 0):
        self.label_smoothing, self.flip, self.tta, self.shift = label_smoothing, flip, tta, shift

    def train_step(self, model: nn.Module, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x, y = batch
        view = torch.randint(0, x.shape[1], (len(x),), generator=generator) if self.flip else torch.zeros(len(x), dtype=torch.long)
        x = x[torch.arange(len(x)), view]
        if self.shift and x.ndim == 4:
            x = random_crop(x.float(), self.shift, generator)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return {"loss": loss, "logits": logits, "targets": y}

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        if self.tta and x.shape[1] > 1:
            logits = log_mean_softmax([model(x[:, v]) for v in range(x.shape[1])])
        else:
            logits = model(x[:, 0])
        return {"loss": F.cross_entropy(logits, y), "logits": logits, "targets": y}
