"""Supervised training of a fusion model (image + text, `tuneforge fit --modalities`): dict
batches, cross-entropy, and modality dropout, so that a model trained on rows with both inputs
still predicts from either one alone."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ..augment import Augment


class FusionSupervised:
    """Cross-entropy on dict batches, with modality dropout: a row that has both inputs loses
    one of them (chosen evenly) with probability `modality_dropout`. Raw images (a trained
    image encoder) get the batch augmentations."""
    forwards_model = True  # train_step only calls model(...): DistributedDataParallel can wrap it

    def __init__(self, modality_dropout: float = 0.0, label_smoothing: float = 0.0, augment: str = "none"):
        self.p, self.label_smoothing = modality_dropout, label_smoothing
        self.augment = Augment(augment)
        if self.augment.mixes:  # a mixed row would need both its image and its text mixed
            raise ConfigError("--augment: mixup and cutmix are for image classification, not image+text fits")

    def train_step(self, model, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x, y = batch
        x = dict(x)
        if "images" in x:
            x["images"] = self.augment(x["images"].float().div_(255.0), generator)
        if self.p > 0 and "has_image" in x and "has_text" in x:
            both = (x["has_image"] > 0) & (x["has_text"] > 0)
            drop = (torch.rand(len(y), generator=generator) < self.p).to(both.device) & both
            which = (torch.rand(len(y), generator=generator) < 0.5).to(both.device)
            x["has_image"] = x["has_image"] * ~(drop & which)
            x["has_text"] = x["has_text"] * ~(drop & ~which)
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        return {"loss": loss, "logits": logits, "targets": y}

    def eval_step(self, model, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = model(x)
        return {"loss": F.cross_entropy(logits.float(), y), "logits": logits, "targets": y}
