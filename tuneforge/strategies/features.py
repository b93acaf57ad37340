"""Training a head on cached backbone features (linear probe, `--freeze backbone`).

With the backbone frozen its features never change, so they are computed once instead of
every epoch: the epochs then cost almost nothing. Batches are (features (B, V, D), labels);
view 1, when present, is the mirrored image: picking a view at random per sample is the
flip augmentation, and averaging both views is flip TTA."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import log_mean_softmax


class CachedFeatures:
    def __init__(self, label_smoothing: float = 0.0, flip: bool = False, tta: bool = False):
        self.label_smoothing, self.flip, self.tta = label_smoothing, flip, tta

    def train_step(self, model: nn.Module, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x, y = batch
        view = torch.randint(0, x.shape[1], (len(x),), generator=generator) if self.flip else torch.zeros(len(x), dtype=torch.long)
        logits = model(x[torch.arange(len(x)), view])
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return {"loss": loss, "logits": logits, "targets": y}

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        if self.tta and x.shape[1] > 1:
            logits = log_mean_softmax([model(x[:, v]) for v in range(x.shape[1])])
        else:
            logits = model(x[:, 0])
        return {"loss": F.cross_entropy(logits, y), "logits": logits, "targets": y}
