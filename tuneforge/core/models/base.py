"""The one model interface: a backbone that turns images into pooled features, a linear head,
and the preprocessing that belongs to the backbone's weights (so a bundle carries it along)."""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from ..progress import phase


class Backbone(nn.Module):
    """Subclasses set `feature_dim`, `mean`, `std` (for inputs scaled to [0, 1]) and implement
    `forward` (pooled features, shape (B, feature_dim)) and `stages` (input to output)."""

    feature_dim: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def stages(self) -> list[nn.Module]:
        """Groups of layers from input to output, used by `--freeze K` and layer-wise lr."""
        raise NotImplementedError

    def forward_stages(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Stages [start, stop) applied to `x` (the output of stage start-1, or the normalised
        image when start is 0), unpooled. With `pool` it lets `fit` cache what frozen stages
        compute; a backbone that does not implement it is simply trained without that cache."""
        raise NotImplementedError

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        """Output of the last stage -> pooled features (B, feature_dim)."""
        raise NotImplementedError

    @classmethod
    def can_split(cls) -> bool:
        return cls.forward_stages is not Backbone.forward_stages


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
        # Parameters a backbone fixes by design (fast-cnn's whitening filters and BN scales)
        # stay fixed whatever --freeze says.
        self._fixed = {n for n, p in self.named_parameters() if not p.requires_grad}

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> what the backbone's weights expect, in the chosen memory layout."""
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.prepare(x))

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
        for n, p in self.named_parameters():
            p.requires_grad_(n not in self._fixed)
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


class StageTail(nn.Module):
    """The trainable part of a Classifier whose first `stage` backbone stages are frozen,
    applied to the cached outputs of those stages. Shares its modules with the Classifier."""

    def __init__(self, model: Classifier, stage: int):
        super().__init__()
        self.model, self.stage = model, stage

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        maps = maps.float()  # large caches are kept in bf16; the compute is fp32
        if self.model.channels_last:
            maps = maps.contiguous(memory_format=torch.channels_last)
        b = self.model.backbone
        return self.model.head(self.model.dropout(b.pool(b.forward_stages(maps, self.stage))))

    def train(self, mode: bool = True) -> "StageTail":
        self.training = mode
        self.model.train(mode)  # keeps the frozen stages in eval mode
        return self


class FrozenPrefix(nn.Module):
    """A Classifier whose first `stage` backbone stages are frozen, on images: those stages run
    from a BatchNorm-folded copy (`folded_if_same`) without autograd, the rest as `StageTail`.
    For fits too short for caching the frozen stages' outputs to pay (the cache computes each
    image and its mirror once; a 1-epoch fit sees each image once) or with augmentations the
    cache cannot keep. The copy is not a submodule: it is neither trained nor saved."""

    def __init__(self, model: Classifier, stage: int, sample: torch.Tensor):
        super().__init__()
        self.tail = StageTail(model, stage)
        self._prefix = [folded_if_same(model, sample, stage)]

    @property
    def folded(self) -> bool:
        """Whether the frozen stages run BatchNorm-folded (False: the model itself, not foldable)."""
        return self._prefix[0] is not self.tail.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self._prefix[0]
        with torch.no_grad():
            maps = net.backbone.forward_stages(net.prepare(x), 0, self.tail.stage)
        return self.tail(maps)

    def train(self, mode: bool = True) -> "FrozenPrefix":
        self.training = mode
        self.tail.train(mode)
        return self


@torch.inference_mode()
def extract_features(model: Classifier, images: torch.Tensor, batch_size: int = 256,
                     mirrored: bool = False, stage: int | None = None, max_fp32_bytes: int = 2 << 30,
                     alloc: Callable[[tuple[int, ...], torch.dtype], torch.Tensor] | None = None) -> torch.Tensor:
    """What the frozen part of the model computes for uint8 images, once: pooled backbone
    features (N, V, D) when `stage` is None, else the output maps of the first `stage` stages
    (N, V, C, h, w). V = 2 with the mirrored view when `mirrored`, so what is trained on them can
    still see flip augmentation. A cache larger than `max_fp32_bytes` is kept in bf16 (half the
    memory, ~3 significant digits: the maps are post-activation values, this is noise-level).
    `alloc(shape, dtype)` makes the output (torch.empty when None; a mapped scratch file for
    sets larger than memory): each batch is written into it as it is computed."""
    model.eval()
    net = folded_if_same(model, images, stage)

    def run(x: torch.Tensor) -> torch.Tensor:
        if stage is None:
            return net.features(x)
        return net.backbone.forward_stages(net.prepare(x), 0, stage)

    if not len(images):
        raise ValueError("extract_features: no images")
    out = None
    with phase("extracting features" if stage is None else f"computing frozen stages 0-{stage - 1}", len(images),
               "images") as p:
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].float().div_(255.0)
            views = torch.stack([run(x)] + ([run(x.flip(3))] if mirrored else []), 1)
            if out is None:
                dtype = torch.bfloat16 if views[0].numel() * 4 * len(images) > max_fp32_bytes else torch.float32
                out = (alloc or (lambda shape, dt: torch.empty(shape, dtype=dt)))((len(images), *views.shape[1:]), dtype)
            out[i:i + len(x)] = views.to(out.dtype)
            p.advance(len(x))
    return out


def fold_batchnorm(model: Classifier, stage: int) -> Classifier:
    """A copy of `model` for inference whose first `stage` backbone stages have each BatchNorm2d
    folded into the convolution that feeds it (in eval mode a BatchNorm is a per-channel affine
    map, so w' = w * g / sqrt(v + eps), b' = beta + (b - m) * g / sqrt(v + eps)). It computes what
    the frozen stages compute, without their BatchNorm passes: at 64 px the frozen stages' forward
    is memory-bound, and BatchNorm was 15-30% of it (BENCHMARKS.md). A BatchNorm counts as fed by
    the convolution registered just before it in the same stage, with as many output channels;
    `fit` checks the copy's outputs against the model's before using it."""
    folded = copy_module(model).eval()
    pairs: dict[int, nn.Conv2d] = {}
    for st in folded.backbone.stages()[:stage]:
        prev: nn.Module | None = None
        for m in st.modules():
            if type(m) is nn.BatchNorm2d and isinstance(prev, nn.Conv2d) and prev.out_channels == m.num_features \
                    and m.track_running_stats and m.running_mean is not None:
                pairs[id(m)] = prev
            if not list(m.children()):
                prev = m
    with torch.no_grad():
        for parent in list(folded.modules()):
            for name, child in list(parent.named_children()):
                conv = pairs.get(id(child))
                if conv is None:
                    continue
                scale = (child.weight if child.affine else torch.ones_like(child.running_var)) / torch.sqrt(child.running_var + child.eps)
                shift = (child.bias if child.affine else torch.zeros_like(child.running_mean)) - child.running_mean * scale
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                bias = shift if conv.bias is None else conv.bias * scale + shift
                conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
                setattr(parent, name, nn.Identity())
    folded.folded_batchnorms = len(pairs)
    return folded


def copy_module(model: Classifier) -> Classifier:
    """A deep copy that shares nothing with `model` (weights cloned), with no gradients."""
    out = copy.deepcopy(model)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


def folded_if_same(model: Classifier, images: torch.Tensor, stage: int | None) -> Classifier:
    """`fold_batchnorm(model, stage)` (all stages when None) when it computes what `model`
    computes on a few of `images` (to float rounding), else `model` itself: the pairing of a
    convolution with the BatchNorm after it is read from registration order, which a backbone
    need not follow."""
    try:
        n = len(model.backbone.stages()) if stage is None else stage
    except NotImplementedError:  # a backbone without stages is extracted as it is
        return model
    folded = fold_batchnorm(model, n)
    if not folded.folded_batchnorms:
        return model
    x = images[:4].float().div(255.0)
    with torch.inference_mode():
        a = model.backbone.forward_stages(model.prepare(x), 0, n) if stage is not None else model.features(x)
        b = folded.backbone.forward_stages(folded.prepare(x), 0, n) if stage is not None else folded.features(x)
    return folded if torch.allclose(a, b, rtol=1e-3, atol=1e-4 * (1 + a.abs().max().item())) else model
