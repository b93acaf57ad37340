"""ResNet-18 from torchvision. For small images (<= 64 px) the ImageNet stem (7x7 stride 2 conv
+ max-pool) throws away 3/4 of a 32x32 image before the first block, so we swap in a 3x3
stride-1 stem, as CIFAR ResNets do."""
from __future__ import annotations

import torch
from torch import nn

from .base import Backbone
from .registry import ModelSpec, register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetBackbone(Backbone):
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, depth: int = 18, small_stem: bool = False):
        super().__init__()
        import torchvision  # only here: importing it costs every fit 2-10 s (torch._dynamo)

        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        if small_stem:
            net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.net = net
        self.feature_dim = 512 if depth < 50 else 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def stages(self) -> list[nn.Module]:
        n = self.net
        return [nn.ModuleList([n.conv1, n.bn1]), n.layer1, n.layer2, n.layer3, n.layer4]


def _resnet(depth: int):
    def build(image_size: int, pretrained: bool, small_stem: bool | None = None) -> Backbone:
        return ResNetBackbone(depth, small_stem=image_size <= 64 if small_stem is None else small_stem)
    return build


register("resnet18", ModelSpec(_resnet(18), 32, "", "torchvision ResNet-18; 3x3 stem for images <= 64 px"))
register("resnet50", ModelSpec(_resnet(50), 224, "", "torchvision ResNet-50", pretrained_min_size=64))
