"""A strategy turns a batch into a loss: `train_step(model, batch, generator)` and
`eval_step(model, batch)` return {"loss": ..., and for classifiers "logits", "targets"}.
Supervised, self-supervised, semi-supervised and contrastive training differ only here;
the engine, checkpoints, callbacks and reports are shared."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from ...registry import Registry
from .contrastive import Contrastive
from .supervised import Supervised


class Strategy(Protocol):
    def train_step(self, model: nn.Module, batch, generator: torch.Generator) -> dict[str, torch.Tensor]: ...

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]: ...

    # Optional: `after_step(model)`, called by the engine right after each optimizer step.


STRATEGIES: Registry = Registry("strategy", "--strategy")
STRATEGIES.register("supervised", "cross-entropy on labelled batches, with batch augmentation")(Supervised)
# Unlabeled data (issue 5): self-supervised (tuneforge pretrain) and semi-supervised (fit --semi)
from .semi import FixMatch, MeanTeacher, PseudoLabel  # noqa: E402
from .ssl import BYOL, SimCLR  # noqa: E402
STRATEGIES.register("simclr", "self-supervised: NT-Xent between two views of each image")(SimCLR)
STRATEGIES.register("byol", "self-supervised: predict an EMA target's projection of the other view")(BYOL)
STRATEGIES.register("fixmatch", "semi-supervised: confident weak-view pseudo-labels learnt on strong views")(FixMatch)
STRATEGIES.register("pseudo-label", "semi-supervised: the model's confident labels of plain images")(PseudoLabel)
STRATEGIES.register("mean-teacher", "semi-supervised: match an EMA teacher's predictions")(MeanTeacher)
STRATEGIES.register("contrastive", "symmetric InfoNCE of image and text embeddings (tuneforge align)")(Contrastive)

__all__ = ["Strategy", "Supervised", "Contrastive", "STRATEGIES"]
