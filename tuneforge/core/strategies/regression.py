"""Regression: the model's single output against a standardised numeric target (MSE).
Returns "predictions" (not "logits"), so the engine reports loss only; monitor val_loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Regression:
    forwards_model = True  # train_step only calls model(...): DistributedDataParallel can wrap it
    def train_step(self, model: nn.Module, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x, y = batch
        pred = model(x).float().squeeze(1)
        return {"loss": F.mse_loss(pred, y), "predictions": pred, "targets": y.unsqueeze(1)}

    def eval_step(self, model: nn.Module, batch) -> dict[str, torch.Tensor]:
        return self.train_step(model, batch)
