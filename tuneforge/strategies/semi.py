"""Semi-supervised strategies: a labelled batch (cross-entropy) plus `mu` times as many
unlabeled images whose loss comes from the model's own (or its teacher's) predictions.
Batches are `((labelled, unlabeled), labels)` (`data.unlabeled.SemiLoader`); the model is a
`SemiModel` (the trainable student, an optional EMA teacher, a step counter), so checkpoints
hold all of it and `--resume` stays exact.

  fixmatch      (Sohn et al., 2020) hard pseudo-label from the weak view where its confidence
                >= threshold, learnt on the strong view (RandAugment + Cutout)
  pseudo-label  (Lee, 2013) the model is its own teacher: hard pseudo-labels from the plain
                (un-augmented) image where confident, learnt on the weak view; the unlabeled
                weight ramps up linearly so early, wrong labels count less
  mean-teacher  (Tarvainen & Valpola, 2017) an EMA of the student is the teacher; the student's
                class probabilities on one weak view must match the teacher's on another (MSE),
                ramped up; the teacher is the final model

Views come from a `Views` object: pixels (weak/strong image augmentations) or cached frozen
features (a random cached view is the weak view; that plus feature dropout is the strong
one), so the same strategies train a whole network or a head on frozen features. Images from
classes absent from the labelled set are what the confidence threshold is for: they rarely
reach it, and the counts per class (reported) show where pseudo-labels went."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..augment.views import strong_view, weak_view
from .supervised import to_float


class PixelViews:
    def __init__(self, crop: float = 0.125):
        self.crop = crop

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        return to_float(x)

    def weak(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        return weak_view(to_float(x), g, self.crop)

    def strong(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        return strong_view(to_float(x), g, self.crop)


class FeatureViews:
    """Cached features (B, V, D) (V=2: the image and its mirror, from `extract_features`)."""

    def __init__(self, dropout: float = 0.5):
        self.dropout = dropout

    def plain(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].float()

    def weak(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        view = torch.randint(0, x.shape[1], (len(x),), generator=g)
        return x[torch.arange(len(x)), view].float()

    def strong(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        x = self.weak(x, g)
        keep = torch.rand(x.shape, generator=g) >= self.dropout
        return x * keep / (1 - self.dropout)


class SemiModel(nn.Module):
    """The trainable student, an optional EMA teacher (no gradients) and the step counter that
    drives ramp-ups and EMA warm-up (a buffer, so it is checkpointed)."""

    def __init__(self, student: nn.Module, teacher: bool = False):
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student).requires_grad_(False) if teacher else None
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        return self.student(x)

    def eval_model(self) -> nn.Module:
        return self.teacher if self.teacher is not None else self.student

    def train(self, mode: bool = True) -> "SemiModel":
        self.training = mode
        self.student.train(mode)  # a StageTail / Classifier keeps its frozen stages in eval mode
        if self.teacher is not None:
            self.teacher.train(mode)
        return self

    @torch.no_grad()
    def ema_update(self, decay: float) -> None:
        """teacher <- decay * teacher + (1 - decay) * student; the decay is min(decay, 1 - 1/(t+1))
        so the teacher follows closely at the start (Tarvainen & Valpola); buffers copied."""
        d = min(decay, 1 - 1 / (int(self.steps) + 1))
        s = [p for p in self.student.parameters()]
        t = [p for p in self.teacher.parameters()]
        torch._foreach_lerp_(t, s, 1 - d)
        for bt, bs in zip(self.teacher.buffers(), self.student.buffers()):
            bt.copy_(bs)

    def copy_teacher_to_student(self) -> None:
        if self.teacher is not None:
            self.student.load_state_dict(self.teacher.state_dict())


class _Semi:
    """Shared parts: labelled loss, pseudo-label bookkeeping, evaluation through `base`
    (the supervised strategy for the same inputs, with its TTA)."""

    uses_teacher = False

    def __init__(self, base, views, num_classes: int, threshold: float = 0.95, weight: float = 1.0,
                 label_smoothing: float = 0.0, rampup_steps: int = 0, ema: float = 0.999):
        self.base, self.views, self.num_classes = base, views, num_classes
        self.threshold, self.weight, self.label_smoothing = threshold, weight, label_smoothing
        self.rampup_steps, self.ema = rampup_steps, ema
        self.reset_counts()

    def reset_counts(self) -> None:
        """Counts since the last reset (the callback resets them each epoch)."""
        self.counts = torch.zeros(self.num_classes, dtype=torch.long)
        self.seen = 0

    def _count(self, pseudo: torch.Tensor, mask: torch.Tensor) -> None:
        self.counts += torch.bincount(pseudo[mask], minlength=self.num_classes)
        self.seen += len(mask)

    def _ramp(self, model: SemiModel) -> float:
        if not self.rampup_steps:
            return 1.0
        t = min(1.0, int(model.steps) / self.rampup_steps)
        return math.exp(-5 * (1 - t) ** 2)  # the sigmoid-shaped ramp-up of Laine & Aila / Tarvainen

    def _supervised(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)

    def eval_step(self, model: SemiModel, batch) -> dict[str, torch.Tensor]:
        return self.base.eval_step(model.eval_model(), batch)


class FixMatch(_Semi):
    def train_step(self, model: SemiModel, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        (xl, xu), y = batch
        v, g = self.views, generator
        with torch.no_grad():
            probs = model.student(v.weak(xu, g)).float().softmax(1)
        conf, pseudo = probs.max(1)
        mask = conf >= self.threshold
        logits = model.student(torch.cat([v.weak(xl, g), v.strong(xu, g)]))
        lab, unl = logits[:len(xl)], logits[len(xl):]
        loss_u = (F.cross_entropy(unl.float(), pseudo, reduction="none") * mask).mean()
        self._count(pseudo, mask)
        model.steps += 1
        return {"loss": self._supervised(lab, y) + self.weight * loss_u, "logits": lab.detach(), "targets": y}


class PseudoLabel(_Semi):
    def train_step(self, model: SemiModel, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        (xl, xu), y = batch
        v, g = self.views, generator
        with torch.no_grad():
            probs = model.student(v.plain(xu)).float().softmax(1)
        conf, pseudo = probs.max(1)
        mask = conf >= self.threshold
        logits = model.student(torch.cat([v.weak(xl, g), v.weak(xu, g)]))
        lab, unl = logits[:len(xl)], logits[len(xl):]
        loss_u = (F.cross_entropy(unl.float(), pseudo, reduction="none") * mask).mean()
        self._count(pseudo, mask)
        w = self.weight * self._ramp(model)
        model.steps += 1
        return {"loss": self._supervised(lab, y) + w * loss_u, "logits": lab.detach(), "targets": y}


class MeanTeacher(_Semi):
    uses_teacher = True

    def train_step(self, model: SemiModel, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if int(model.steps):
            model.ema_update(self.ema)  # the optimizer has stepped: the teacher follows
        (xl, xu), y = batch
        v, g = self.views, generator
        with torch.no_grad():
            t_probs = model.teacher(v.weak(xu, g)).float().softmax(1)
        logits = model.student(torch.cat([v.weak(xl, g), v.weak(xu, g)]))
        lab, unl = logits[:len(xl)], logits[len(xl):]
        consistency = F.mse_loss(unl.float().softmax(1), t_probs, reduction="none").sum(1).mean()
        conf, pseudo = t_probs.max(1)
        self._count(pseudo, conf >= self.threshold)  # soft targets; counted where the teacher is confident
        w = self.weight * self._ramp(model)
        model.steps += 1
        return {"loss": self._supervised(lab, y) + w * consistency, "logits": lab.detach(), "targets": y}


SEMI_METHODS = {"fixmatch": FixMatch, "pseudo-label": PseudoLabel, "mean-teacher": MeanTeacher}
# Per-method defaults of --semi-weight: mean teacher's MSE on probabilities is ~10x smaller than a CE.
DEFAULT_WEIGHT = {"fixmatch": 1.0, "pseudo-label": 1.0, "mean-teacher": 10.0}
