"""Self-supervised strategies: two random views of each unlabeled image, and a loss that makes
their representations agree. The model is an `SSLModel` (a Classifier's backbone with its
preprocessing + a projection MLP [+ predictor, + EMA target]); batches are `(images,)`.

  simclr   NT-Xent (Chen et al., 2020): each view must pick its partner out of the 2B-1 others.
           Returns the first views' similarity logits and partner indices, so the engine's train
           accuracy is the contrastive top-1 (how often the partner is the nearest): a progress signal.
  byol     (Grill et al., 2020): the online net + predictor regresses an EMA target's projection
           of the other view; no negatives, so it does not need large batches.
  simsiam  (Chen & He, 2021): byol with the target = the online net under stop-gradient."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..augment.views import ssl_view
from .supervised import to_float


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d_out))


class SSLModel(nn.Module):
    """encoder = a Classifier (its head unused: `features` gives the pooled backbone output),
    projector, optional predictor, optional EMA target (encoder + projector copies). The target
    is a submodule, so checkpoints (and an exact resume) hold it."""

    def __init__(self, encoder: nn.Module, proj_dim: int = 128, hidden: int = 512, predictor: bool = False,
                 target: bool = False):
        super().__init__()
        d = encoder.backbone.feature_dim
        self.encoder = encoder
        self.projector = mlp(d, hidden, proj_dim)
        self.predictor = mlp(proj_dim, hidden, proj_dim) if predictor else None
        self.target = None
        if target:
            self.target = nn.ModuleDict({"encoder": copy.deepcopy(encoder), "projector": copy.deepcopy(self.projector)})
            self.target.requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # EMA updates so far (checkpointed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of [0, 1] images: what a probe or a classifier sees."""
        return self.encoder.features(x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder.features(x))

    @torch.no_grad()
    def target_project(self, x: torch.Tensor) -> torch.Tensor:
        return self.target["projector"](self.target["encoder"].features(x))

    @torch.no_grad()
    def ema_update(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online (BatchNorm statistics copied)."""
        online = list(self.encoder.parameters()) + list(self.projector.parameters())
        tgt = list(self.target["encoder"].parameters()) + list(self.target["projector"].parameters())
        torch._foreach_lerp_(tgt, online, 1 - momentum)
        for b_t, b_o in zip(self.target.buffers(), list(self.encoder.buffers()) + list(self.projector.buffers())):
            b_t.copy_(b_o)


def nt_xent(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z: (2B, d) projections, rows i and i+B are the two views of image i. Returns the loss,
    the similarity logits (self-similarity masked out) and the index of each row's partner."""
    z = F.normalize(z.float(), dim=1)
    n = len(z) // 2
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner), sim, partner


class SimCLR:
    def __init__(self, temperature: float = 0.2, view=ssl_view):
        self.temperature, self.view = temperature, view

    def train_step(self, model: SSLModel, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = to_float(batch[0])
        z = model.project(torch.cat([self.view(x, generator), self.view(x, generator)]))
        loss, sim, partner = nt_xent(z, self.temperature)
        # Accuracy over the first view's rows only: the engine counts len(batch) images, not 2B views.
        return {"loss": loss, "logits": sim[:len(x)].detach(), "targets": partner[:len(x)]}

    @torch.no_grad()
    def eval_step(self, model: SSLModel, batch) -> dict[str, torch.Tensor]:
        return self.train_step(model, batch, torch.Generator().manual_seed(0))


def _regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(p, z), per row: BYOL's normalised MSE."""
    return 2 - 2 * F.cosine_similarity(p.float(), z.float().detach(), dim=1)


class BYOL:
    """`momentum` is the EMA rate of the target (byol); simsiam has no EMA target: its target is
    the online projection itself, detached."""

    def __init__(self, momentum: float = 0.99, view=ssl_view, simsiam: bool = False):
        self.momentum, self.view, self.simsiam = momentum, view, simsiam

    def train_step(self, model: SSLModel, batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = to_float(batch[0])
        v = torch.cat([self.view(x, generator), self.view(x, generator)])
        z = model.project(v)
        p = model.predictor(z)
        target = z.detach() if self.simsiam else model.target_project(v)
        n = len(x)
        swapped = torch.cat([target[n:], target[:n]])  # view 1 predicts view 2's target and vice versa
        return {"loss": _regression(p, swapped).mean()}

    def after_step(self, model: SSLModel) -> None:
        """Right after each optimizer step (the engine calls it): the target follows the online
        net it just produced, so the last step reaches it too."""
        if not self.simsiam:
            model.ema_update(self.momentum)
            model.updates += 1

    @torch.no_grad()
    def eval_step(self, model: SSLModel, batch) -> dict[str, torch.Tensor]:
        return self.train_step(model, batch, torch.Generator().manual_seed(0))


METHODS = {"simclr": "contrastive (NT-Xent), negatives from the batch",
           "byol": "predict an EMA target's projection of the other view (no negatives)",
           "simsiam": "predict the other view's projection under stop-gradient (no negatives, no EMA)"}


def build_ssl(method: str, encoder: nn.Module, proj_dim: int, hidden: int, temperature: float,
              momentum: float) -> tuple[SSLModel, object]:
    """The model wrapper and the strategy for a method name."""
    if method == "simclr":
        return SSLModel(encoder, proj_dim, hidden), SimCLR(temperature)
    if method == "byol":
        return SSLModel(encoder, proj_dim, hidden, predictor=True, target=True), BYOL(momentum)
    if method == "simsiam":
        return SSLModel(encoder, proj_dim, hidden, predictor=True), BYOL(simsiam=True)
    raise ValueError(method)
