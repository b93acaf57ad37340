"""`fast-cnn`: a small CNN built to learn as much as possible per image seen, for the `fast`
recipe (a usable model within about one epoch on a laptop CPU). The ideas are airbench's
(Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU"), scaled down for a CPU:

- a frozen 2x2 patch-whitening first layer computed from the training images (`init_from_data`),
  so the first trainable conv sees decorrelated inputs and SGD can use a large step at once;
- blocks of conv -> max-pool -> BatchNorm -> GELU -> conv -> BatchNorm -> GELU: pooling before
  the norm and activation does those at a quarter of the pixels;
- BatchNorm scales fixed at 1 (only the shifts learn) and a momentum of 0.4, because in one
  short epoch the running statistics must follow the fast-moving weights;
- global max pooling and logits scaled down (here: features x 1/9), so label smoothing and a
  high learning rate do not saturate the softmax early.

Nothing assumes 32x32 images or 10 classes: the net is fully convolutional up to the pooling.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Backbone
from .registry import ModelSpec, register


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


class FastCNN(Backbone):
    mean = (0.0, 0.0, 0.0)  # the whitening layer centres and decorrelates the pixels itself
    std = (1.0, 1.0, 1.0)
    out_scale = 1 / 9

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        # 12 = all directions of a 2x2x3 patch. No activation follows it (airbench uses 24
        # channels, both signs, and a GELU): the linear version trains as well and halves the
        # most expensive convolution, the first one at full resolution.
        self.whiten = nn.Conv2d(3, 12, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # fixed by init_from_data; its bias still learns
        blocks, c = [], 12
        for w in widths:
            blocks.append(nn.Sequential(
                nn.Conv2d(c, w, 3, padding=1, bias=False), nn.MaxPool2d(2), _bn(w), nn.GELU(),
                nn.Conv2d(w, w, 3, padding=1, bias=False), _bn(w), nn.GELU()))
            c = w
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = c

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first layer to whiten 2x2 patches of `images` (float in [0, 1], N,3,H,W):
        each filter is an eigenvector of the patch covariance divided by the square root of its
        eigenvalue, and a bias that centres the patches."""
        x = images.float()
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
        mean = patches.mean(0)
        centred = patches - mean
        cov = centred.T @ centred / len(centred)
        eigval, eigvec = torch.linalg.eigh(cov)
        eps = eps * cov.trace() / 12  # relative to the average pixel variance: scale-free
        w = (eigvec / (eigval.clamp_min(0) + eps).sqrt()).T  # (12, 12): one filter per direction
        self.whiten.weight.copy_(w.reshape(-1, 3, 2, 2).to(self.whiten.weight.dtype))
        self.whiten.bias.copy_((-(w @ mean)).to(self.whiten.bias.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_stages(x))

    def forward_stages(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for stage in self.stages()[start:stop]:
            x = stage(x)
        return x

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.amax((2, 3)) * self.out_scale

    def stages(self) -> list[nn.Module]:
        return [self.whiten, *self.blocks]


register("fast-cnn", ModelSpec(lambda image_size, pretrained: FastCNN(), 32, "",
                                "small airbench-style CNN (whitened 2x2 patches, conv-pool-BN-GELU x3), for the `fast` recipe", scratch=True,
                                min_image_size=9))
