"""Regression: the model's single output against a standardised numeric target (MSE, or Huber
with --loss huber). Returns "predictions" (not "logits"), so the engine reports loss only;
monitor val_loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = {"mse": F.mse_loss, "huber": F.huber_loss}  # huber: delta 1 on the standardised target


class Regression:
    forwards_model = True  # train_step only calls model(...): DistributedDataParallel can wrap it

    def __init__(self, loss: str = "mse"):
        self.loss = LOSSES[loss]

    def train_step(self, model: nn.Module, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x, y = batch
        if torch.is_tensor(x) and x.dtype == torch.uint8:  # images: [0, 1] floats, as Supervised feeds them
            x = x.float().div_(255.0)
        pred = model(x).float().squeeze(1)
        return {"loss": self.loss(pred, y), "predictions": pred, "targets": y.unsqueeze(1)}

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        return self.train_step(model, batch)
