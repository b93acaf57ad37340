"""`seed-cnn`: the design document's Keras CNN, layer for layer, so that benchmarks compare
the same model: Conv2D 32/64/128 (3x3, valid) + ReLU + MaxPool 2, Flatten, Dense 512 + ReLU,
Dropout 0.5, Dense N. The head is the final Dense; everything before it is the backbone."""
from __future__ import annotations

import torch
from torch import nn

from .base import Backbone
from .registry import ModelSpec, register


class SeedCNN(Backbone):
    mean = (0.0, 0.0, 0.0)  # Keras' rescale=1/255 and nothing else
    std = (1.0, 1.0, 1.0)

    def __init__(self, image_size: int = 32):
        super().__init__()
        self.convs = nn.ModuleList()
        c, s = 3, image_size
        for out in (32, 64, 128):
            # MaxPool before ReLU: the two commute (ReLU is monotonic), so this is the same
            # function as Keras' conv -> relu -> pool, but ReLU and its backward touch 4x fewer
            # values (they were ~15% of a CPU training step).
            self.convs.append(nn.Sequential(nn.Conv2d(c, out, 3), nn.MaxPool2d(2), nn.ReLU(inplace=True)))
            c, s = out, (s - 2) // 2
        if s < 1:
            raise ValueError(f"seed-cnn needs --image-size >= 22, got {image_size}")
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, 512), nn.ReLU(inplace=True), nn.Dropout(0.5))
        self.feature_dim = 512
        self._init_like_keras()

    def _init_like_keras(self) -> None:
        # Keras defaults (glorot_uniform kernels, zero biases) train noticeably better with
        # Adam 1e-3 on this net than PyTorch's kaiming_uniform(a=sqrt(5)).
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return self.dense(x)

    def stages(self) -> list[nn.Module]:
        return [*self.convs, self.dense]


register("seed-cnn", ModelSpec(lambda image_size, pretrained: SeedCNN(image_size), 32, "",
                                "the design's Keras CNN (Conv32-64-128, Dense512, Dropout 0.5)", scratch=True,
                                min_image_size=22))
