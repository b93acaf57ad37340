"""An exponential moving average of the weights for supervised fits (`--ema DECAY`, timm's
ModelEma): `EMAModel` holds the trained network and its average (both in the state dict, so
checkpoints and `--resume` carry the average exactly); `WithEMA` trains the network through
the wrapped strategy and evaluates the average, so validation, best-epoch selection and early
stopping all see the averaged weights; `EMAModel.finalize` puts them into the network that the
bundle saves."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMAModel(nn.Module):
    """The trained network (`student`, what `forward` runs) and its average (`ema`, no gradients)."""

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student
        self.ema = copy.deepcopy(student).requires_grad_(False)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        return self.student(x)

    def train(self, mode: bool = True) -> "EMAModel":
        self.training = mode
        self.student.train(mode)  # a StageTail / HeadOnly keeps its frozen parts in eval mode
        self.ema.train(mode)
        return self

    @torch.no_grad()
    def update(self, decay: float) -> None:
        """ema <- d * ema + (1 - d) * student over every floating parameter and buffer (BatchNorm's
        running statistics too, as timm); integer buffers are copied. d = min(decay, (1 + t) / (10 + t)),
        t the optimizer steps so far: TensorFlow's warm-up, without which a short fit's average
        would still be mostly its initialisation (at 0.999, e^-1 of it after 1000 steps)."""
        self.steps += 1
        t = int(self.steps)
        d = min(decay, (1 + t) / (10 + t))
        avg, now = self.ema.state_dict(), self.student.state_dict()
        floats = [name for name, v in avg.items() if v.is_floating_point()]
        torch._foreach_lerp_([avg[n] for n in floats], [now[n] for n in floats], 1 - d)
        for name, v in avg.items():
            if not v.is_floating_point():
                v.copy_(now[name])

    def finalize(self) -> None:
        """The average becomes the network (what the bundle saves and predictions use)."""
        self.student.load_state_dict(self.ema.state_dict())


class WithEMA:
    """`base`'s training on the network, its evaluation on the average, the average updated
    right after each optimizer step (the engine's `after_step`)."""

    def __init__(self, base, decay: float):
        self.base, self.decay = base, decay

    def train_step(self, model: EMAModel, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return self.base.train_step(model.student, batch, generator)

    def eval_step(self, model: EMAModel, batch) -> dict[str, torch.Tensor]:
        return self.base.eval_step(model.ema, batch)

    def after_step(self, model: EMAModel) -> None:
        if hasattr(self.base, "after_step"):
            self.base.after_step(model.student)
        model.update(self.decay)


def with_ema(trainable: nn.Module, strategy, decay: float | None) -> tuple[nn.Module, object]:
    """(trainable, strategy) as they are without a decay, else wrapped for an averaged fit."""
    if decay is None:
        return trainable, strategy
    return EMAModel(trainable), WithEMA(strategy, decay)
