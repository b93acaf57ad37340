"""The views that self- and semi-supervised strategies compare, on whole float batches in
[0, 1], (B, 3, H, W), with a parameter drawn per image (never one draw for the batch):

  ssl_view     SimCLR/BYOL's view: random resized crop + flip (one affine resample), colour
               jitter (brightness, contrast, saturation, hue) with p=0.8, grayscale with p=0.2
  weak_view    FixMatch's weak view: flip + pad-and-crop (the supervised augmentation)
  strong_view  FixMatch's strong view: weak + RandAugment (2 ops, random magnitudes) + Cutout

Why not torchvision.transforms.v2.RandAugment: called on a batch tensor it draws *one* op and
magnitude for the whole batch, and per-image calls cost a Python loop over 448 images a step.
Here each op is applied, vectorised, to the images that drew it, with per-image magnitudes;
the op list and ranges follow FixMatch's RandAugment (Sohn et al., 2020); the ops are in
policies.py, shared with `--augment randaugment`. Every draw comes from
the given generator, so the engine's per-epoch generator makes the views reproducible."""
from __future__ import annotations

import math

import torch

from . import random_crop
from .policies import RAND_OPS, _affine, _bc, _blend, _u, grey, rand_augment  # noqa: F401 (RAND_OPS: re-exported)

# Y, I, Q rows: hue jitter is a rotation of the (I, Q) chroma plane (a per-image 3x3 matrix).
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def random_resized_crop(x: torch.Tensor, g: torch.Generator | None, scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True) -> torch.Tensor:
    """A crop of random area (fraction of the image) and aspect ratio, resized back to the input
    size, mirrored with p=1/2: one affine matrix per image, one resample for the batch."""
    b = len(x)
    area = _u(b, *scale, g)
    logr = _u(b, math.log(ratio[0]), math.log(ratio[1]), g)
    w = (area * logr.exp()).sqrt().clamp(max=1.0)
    h = (area / logr.exp()).sqrt().clamp(max=1.0)
    cx, cy = (_u(b, -1, 1, g) * (1 - w)), (_u(b, -1, 1, g) * (1 - h))
    sign = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0) if flip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * sign, cx, h, cy
    return _affine(x, theta, fill=None)


def color_jitter(x: torch.Tensor, g: torch.Generator | None, strength: float = 0.4, hue: float = 0.1,
                 p: float = 0.8) -> torch.Tensor:
    """Brightness, contrast, saturation in [1-s, 1+s] and a hue rotation of up to `hue` turns,
    applied to a random fraction p of the images."""
    b = len(x)
    keep = torch.rand(b, generator=g) >= p
    out = x * _bc(_u(b, 1 - strength, 1 + strength, g), x)
    out = _blend(out, grey(out).mean((2, 3), keepdim=True).expand_as(out), _u(b, 1 - strength, 1 + strength, g))
    out = _blend(out, grey(out).expand_as(out), _u(b, 1 - strength, 1 + strength, g))
    a = _u(b, -hue, hue, g) * 2 * math.pi
    rot = torch.zeros(b, 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = a.cos(), -a.sin(), a.sin(), a.cos()
    m = (torch.linalg.inv(_YIQ) @ rot @ _YIQ).to(x.device, x.dtype)  # (b, 3, 3): RGB -> YIQ -> rotate -> RGB
    out = torch.einsum("bij,bjhw->bihw", m, out).clamp_(0, 1)
    return torch.where(_bc(keep, x), x, out)


def random_grayscale(x: torch.Tensor, g: torch.Generator | None, p: float = 0.2) -> torch.Tensor:
    pick = torch.rand(len(x), generator=g) < p
    return torch.where(_bc(pick, x), grey(x).expand_as(x), x)


def ssl_view(x: torch.Tensor, g: torch.Generator | None, scale: tuple[float, float] = (0.2, 1.0),
             strength: float = 0.4) -> torch.Tensor:
    """SimCLR's CIFAR view (no blur at 32 px): crop + flip, colour jitter, grayscale."""
    x = random_resized_crop(x, g, scale)
    return random_grayscale(color_jitter(x, g, strength, strength / 4), g)


def weak_view(x: torch.Tensor, g: torch.Generator | None, crop: float = 0.125) -> torch.Tensor:
    """Flip + reflect-pad-and-crop by `crop` of the side (FixMatch's weak augmentation)."""
    flip = torch.rand(len(x), generator=g) < 0.5
    x = torch.where(_bc(flip, x), x.flip(3), x)
    pad = max(1, round(crop * min(x.shape[-2:])))
    return random_crop(x, pad, g)


def cutout(x: torch.Tensor, g: torch.Generator | None, max_frac: float = 0.5) -> torch.Tensor:
    """A grey square of random side up to `max_frac` of the image, at a random place, per image."""
    b, _, h, w = x.shape
    side = (torch.rand(b, generator=g) * max_frac * min(h, w)).round().view(b, 1, 1)
    cy, cx = torch.rand(b, generator=g).view(b, 1, 1) * h, torch.rand(b, generator=g).view(b, 1, 1) * w
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    hole = ((ys - cy).abs() <= side / 2) & ((xs - cx).abs() <= side / 2) & (side > 0)
    return torch.where(hole.unsqueeze(1).to(x.device), torch.full_like(x, 0.5), x)


def strong_view(x: torch.Tensor, g: torch.Generator | None, crop: float = 0.125, n: int = 2) -> torch.Tensor:
    """FixMatch's strong view: weak view, RandAugment (n ops), Cutout."""
    return cutout(rand_augment(weak_view(x, g, crop), g, n), g)
