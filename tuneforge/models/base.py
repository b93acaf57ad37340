"""The one model interface: a backbone that turns images into pooled features, a linear head,
and the preprocessing that belongs to the backbone's weights (so a bundle carries it along)."""
from __future__ import annotations

import torch
from torch import nn


class Backbone(nn.Module):
    """Subclasses set `feature_dim`, `mean`, `std` (for inputs scaled to [0, 1]) and implement
    `forward` (pooled features, shape (B, feature_dim)) and `stages` (input to output)."""

    feature_dim: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def stages(self) -> list[nn.Module]:
        """Groups of layers from input to output, used by `--freeze K` and layer-wise lr."""
        raise NotImplementedError


class Classifier(nn.Module):
    """backbone + dropout + linear head. Takes float images in [0, 1], NCHW."""

    def __init__(self, backbone: Backbone, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(backbone.feature_dim, num_classes)
        # Buffers, not constants: they travel inside the state dict and the ONNX graph.
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1), persistent=False)
        self.channels_last = False
        self.frozen_stages = 0

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))

    def reset_classifier(self, num_classes: int) -> None:
        self.head = nn.Linear(self.backbone.feature_dim, num_classes)

    def freeze(self, mode: str | int) -> None:
        """'none': train everything; 'backbone': train the head only (linear probe);
        K (int): freeze the first K backbone stages."""
        stages = self.backbone.stages()
        k = {"none": 0, "backbone": len(stages)}.get(mode, mode) if isinstance(mode, str) else mode
        k = int(k)
        for p in self.parameters():
            p.requires_grad_(True)
        for stage in stages[:k]:
            for p in stage.parameters():
                p.requires_grad_(False)
        self.frozen_stages = k
        self.train(self.training)

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        # Frozen stages keep their pretrained BatchNorm statistics: updating running stats of
        # layers whose weights cannot adapt only shifts their outputs away from what follows.
        for stage in self.backbone.stages()[: self.frozen_stages]:
            stage.eval()
        return self


class HeadOnly(nn.Module):
    """The trainable part of a Classifier whose backbone is frozen, applied to precomputed
    features. It shares its modules with the Classifier, so training it trains that head."""

    def __init__(self, model: Classifier):
        super().__init__()
        self.dropout, self.head = model.dropout, model.head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))


@torch.inference_mode()
def extract_features(model: Classifier, images: torch.Tensor, batch_size: int = 256,
                     mirrored: bool = False) -> torch.Tensor:
    """Backbone features of uint8 images, (N, V, D): V = 2 with the mirrored view when
    `mirrored`, so a head trained on them can still see flip augmentation."""
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].float().div_(255.0)
        views = [model.features(x)] + ([model.features(x.flip(3))] if mirrored else [])
        out.append(torch.stack(views, 1))
    return torch.cat(out) if out else torch.zeros(0, 1 + mirrored, model.backbone.feature_dim)
