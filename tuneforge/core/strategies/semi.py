"""Semi-supervised strategies: a labelled batch (cross-entropy) plus `mu` times as many
unlabeled images whose loss comes from the model's own (or its teacher's) predictions.
Batches are `((labelled, unlabeled), labels)` (`data.unlabeled.SemiLoader`); the model is a
`SemiModel` (the trainable student, an optional EMA teacher, a step counter), so checkpoints
hold all of it and `--resume` stays exact.

  fixmatch      (Sohn et al., 2020) hard pseudo-label from the weak view where its confidence
                >= threshold, learnt on the strong view (RandAugment + Cutout); the threshold is
                fixed, or "auto": FreeMatch's self-adaptive one (`_Semi._select`)
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
from ..data.text_loader import concat_padded
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
        keep = (torch.rand(x.shape, generator=g) >= self.dropout).to(x.device)
        return x * keep / (1 - self.dropout)


class TextViews:
    """Token batches ({"input_ids", "attention_mask"} dicts). Weak view: the text as it is (the
    encoder's own dropout is the only noise; dropping words can flip a short review's sentiment,
    and FixMatch needs the weak-view label to be right). Strong view: `mask` of the real tokens
    replaced by [MASK] and `delete` of them deleted (attention mask set to 0, which is what
    deleting does to attention and mean pooling), the text analogue of RandAugment + Cutout
    (UDA/FixMatch for text use back-translation; it needs a translation model we do not have,
    and word masking is what the encoder saw in pretraining). Special tokens ([CLS], [SEP],
    padding) are never touched."""

    def __init__(self, special_ids: list[int], mask_id: int, mask: float = 0.2, delete: float = 0.1):
        self.special_ids, self.mask_id, self.mask, self.delete = special_ids, mask_id, mask, delete

    def plain(self, x: dict) -> dict:
        return x

    def weak(self, x: dict, g: torch.Generator | None) -> dict:
        return x

    def strong(self, x: dict, g: torch.Generator | None) -> dict:
        ids, att = x["input_ids"], x["attention_mask"]
        real = att.bool() & ~torch.isin(ids, torch.tensor(self.special_ids, dtype=ids.dtype, device=ids.device))
        r = torch.rand(ids.shape, generator=g).to(ids.device)  # drawn on the CPU generator, as every view
        masked = real & (r < self.mask)
        deleted = real & (r >= self.mask) & (r < self.mask + self.delete)
        return {"input_ids": ids.masked_fill(masked, self.mask_id), "attention_mask": att.masked_fill(deleted, 0)}

    @staticmethod
    def cat(a: dict, b: dict) -> dict:
        """Two padded batches as one, padded to the longer (padding is masked out)."""
        return concat_padded(a, b)


def _cat(views, a, b):
    """The labelled and unlabeled views as one forward batch (one pass through BatchNorm, as in
    FixMatch); text views pad dict batches to a common length."""
    return views.cat(a, b) if hasattr(views, "cat") else torch.cat([a, b])


class SemiModel(nn.Module):
    """The trainable student, an optional EMA teacher (no gradients) and the step counter that
    drives ramp-ups and EMA warm-up (a buffer, so it is checkpointed)."""

    def __init__(self, student: nn.Module, teacher: bool = False, num_classes: int = 0):
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student).requires_grad_(False) if teacher else None
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        # Running mean of the class probabilities on unlabeled batches (distribution alignment);
        # a buffer so that --resume continues it exactly.
        self.register_buffer("unlabeled_dist", torch.full((num_classes,), 1.0 / max(num_classes, 1)))
        # --semi-threshold auto (FreeMatch): EMAs of the mean confidence and of the mean class
        # probabilities on unlabeled batches, both starting at 1/C; buffers, so --resume is exact.
        self.register_buffer("confidence_ema", torch.tensor(1.0 / max(num_classes, 1)))
        self.register_buffer("class_prob_ema", torch.full((num_classes,), 1.0 / max(num_classes, 1)))

    def forward(self, x):
        return self.student(x)

    def auto_thresholds(self) -> torch.Tensor:
        """FreeMatch's per-class thresholds: the global one (the confidence EMA) scaled by each
        class's probability EMA over the largest (MaxNorm), so classes the model predicts less
        often get a lower bar."""
        return self.confidence_ema * self.class_prob_ema / self.class_prob_ema.max().clamp_min(1e-12)

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
        """teacher <- decay * teacher + (1 - decay) * student; the decay is min(decay, 1 - 1/(t+1)),
        t the optimizer steps taken (this one included), so the teacher follows closely at the
        start (Tarvainen & Valpola); buffers copied."""
        d = min(decay, 1 - 1 / (int(self.steps) + 1))
        s = [p for p in self.student.parameters()]
        t = [p for p in self.teacher.parameters()]
        torch._foreach_lerp_(t, s, 1 - d)
        for bt, bs in zip(self.teacher.buffers(), self.student.buffers()):
            bt.copy_(bs)

    def copy_teacher_to_student(self) -> None:
        if self.teacher is not None:
            self.student.load_state_dict(self.teacher.state_dict())


# EMA momentum of the self-adaptive threshold. FreeMatch uses 0.999 over 2^20 steps; fits here run
# hundreds to a few thousand steps, in which 0.999 would leave the threshold near its start (1/C,
# every pseudo-label accepted) for the whole run. 0.99 follows the model over ~100 steps.
AUTO_MOMENTUM = 0.99


class _Semi:
    """Shared parts: labelled loss, pseudo-label selection (a fixed confidence threshold, or
    "auto": FreeMatch's self-adaptive one), pseudo-label bookkeeping, evaluation through `base`
    (the supervised strategy for the same inputs, with its TTA)."""

    uses_teacher = False

    def __init__(self, base, views, num_classes: int, threshold: float | str = 0.95, weight: float = 1.0,
                 label_smoothing: float = 0.0, rampup_steps: int = 0, ema: float = 0.999, align: bool = False):
        self.base, self.views, self.num_classes = base, views, num_classes
        self.threshold, self.weight, self.label_smoothing = threshold, weight, label_smoothing
        self.rampup_steps, self.ema, self.align = rampup_steps, ema, align
        self.reset_counts()

    def _aligned(self, model: SemiModel, probs: torch.Tensor) -> torch.Tensor:
        """Distribution alignment (ReMixMatch, Berthelot et al. 2020): scale the predictions by
        (uniform / running mean of the predictions on unlabeled data) and renormalise. Early in
        training a model is confident about a few easy classes only (measured: ship 35.7k vs cat
        2.7k pseudo-labels at 250 labels); alignment lifts the rare classes over the threshold."""
        if not self.align:
            return probs
        model.unlabeled_dist.lerp_(probs.mean(0), 0.01)  # ~ the last 100 batches
        p = probs / model.unlabeled_dist.clamp_min(1e-6) / self.num_classes
        return p / p.sum(1, keepdim=True)

    def _select(self, model: SemiModel, probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pseudo-labels, mask of those kept). A fixed threshold keeps predictions at least that
        confident. "auto" is FreeMatch's self-adaptive threshold (Wang et al., 2023): the global
        threshold is an EMA of the batches' mean confidence, starting at 1/C, so it rises as the
        model becomes sure of itself (early on, most pseudo-labels count; later, only the
        confident ones), and each class's threshold is that times its MaxNorm-scaled mean
        probability. A model that is never 0.95 sure (a small one, trained a few hundred steps)
        gets pseudo-labels all the same, for its more confident predictions."""
        conf, pseudo = probs.max(1)
        if self.threshold != "auto":
            return pseudo, conf >= self.threshold
        model.confidence_ema.lerp_(conf.mean(), 1 - AUTO_MOMENTUM)
        model.class_prob_ema.lerp_(probs.mean(0), 1 - AUTO_MOMENTUM)
        return pseudo, conf >= model.auto_thresholds()[pseudo]

    def reset_counts(self) -> None:
        """Counts since the last reset (the callback resets them each epoch)."""
        self.counts = torch.zeros(self.num_classes, dtype=torch.long)
        self.seen = 0

    def _count(self, pseudo: torch.Tensor, mask: torch.Tensor) -> None:
        # on the labels' device (no wait for a GPU each step); read once an epoch
        self.counts = self.counts.to(pseudo.device) + torch.bincount(pseudo[mask], minlength=self.num_classes)
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

    def after_step(self, model: SemiModel) -> None:
        """Right after each optimizer step (not each micro-batch of an accumulated one): the
        ramp-up and the teacher's warm-up count optimizer steps."""
        model.steps += 1


class FixMatch(_Semi):
    def train_step(self, model: SemiModel, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        (xl, xu), y = batch
        v, g = self.views, generator
        with torch.no_grad():
            probs = self._aligned(model, model.student(v.weak(xu, g)).float().softmax(1))
            pseudo, mask = self._select(model, probs)
        logits = model.student(_cat(v, v.weak(xl, g), v.strong(xu, g)))
        lab, unl = logits[:len(y)], logits[len(y):]
        loss_u = (F.cross_entropy(unl.float(), pseudo, reduction="none") * mask).mean()
        self._count(pseudo, mask)
        return {"loss": self._supervised(lab, y) + self.weight * loss_u, "logits": lab.detach(), "targets": y}


class PseudoLabel(_Semi):
    def train_step(self, model: SemiModel, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        (xl, xu), y = batch
        v, g = self.views, generator
        with torch.no_grad():
            probs = self._aligned(model, model.student(v.plain(xu)).float().softmax(1))
            pseudo, mask = self._select(model, probs)
        logits = model.student(_cat(v, v.weak(xl, g), v.weak(xu, g)))
        lab, unl = logits[:len(y)], logits[len(y):]
        loss_u = (F.cross_entropy(unl.float(), pseudo, reduction="none") * mask).mean()
        self._count(pseudo, mask)
        w = self.weight * self._ramp(model)
        return {"loss": self._supervised(lab, y) + w * loss_u, "logits": lab.detach(), "targets": y}


class MeanTeacher(_Semi):
    uses_teacher = True

    def train_step(self, model: SemiModel, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        (xl, xu), y = batch
        v, g = self.views, generator
        with torch.no_grad():
            t_probs = model.teacher(v.weak(xu, g)).float().softmax(1)
            pseudo, mask = self._select(model, t_probs)
        logits = model.student(_cat(v, v.weak(xl, g), v.weak(xu, g)))
        lab, unl = logits[:len(y)], logits[len(y):]
        consistency = F.mse_loss(unl.float().softmax(1), t_probs, reduction="none").sum(1).mean()
        self._count(pseudo, mask)  # soft targets; counted where the teacher is confident
        w = self.weight * self._ramp(model)
        return {"loss": self._supervised(lab, y) + w * consistency, "logits": lab.detach(), "targets": y}

    def after_step(self, model: SemiModel) -> None:
        """The engine calls this right after the optimizer step: the teacher follows the student
        it just produced, so the last step reaches the teacher (the returned model) too."""
        super().after_step(model)
        model.ema_update(self.ema)


SEMI_METHODS = {"fixmatch": FixMatch, "pseudo-label": PseudoLabel, "mean-teacher": MeanTeacher}
# Per-method defaults of --semi-weight: mean teacher's MSE on probabilities is ~10x smaller than a CE.
DEFAULT_WEIGHT = {"fixmatch": 1.0, "pseudo-label": 1.0, "mean-teacher": 10.0}
