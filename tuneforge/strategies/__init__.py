"""A strategy turns a batch into a loss: `train_step(model, batch, generator)` and
`eval_step(model, batch)` return {"loss": ..., and for classifiers "logits", "targets"}.
Supervised, self-supervised, semi-supervised and contrastive training differ only here;
the engine, checkpoints, callbacks and reports are shared."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from ..registry import Registry
from .contrastive import Contrastive
from .supervised import Supervised


class Strategy(Protocol):
    def train_step(self, model: nn.Module, batch, generator: torch.Generator) -> dict[str, torch.Tensor]: ...

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]: ...


STRATEGIES: Registry = Registry("strategy", "--strategy")
STRATEGIES.register("supervised", "cross-entropy on labelled batches, with batch augmentation")(Supervised)
STRATEGIES.register("contrastive", "symmetric InfoNCE of image and text embeddings (tuneforge align)")(Contrastive)

__all__ = ["Strategy", "Supervised", "Contrastive", "STRATEGIES"]
