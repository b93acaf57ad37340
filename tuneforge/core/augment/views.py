"""The views that self- and semi-supervised strategies compare, on whole float batches in
[0, 1], (B, 3, H, W), with a parameter drawn per image (never one draw for the batch):

  ssl_view     SimCLR/BYOL's view: random resized crop + flip (one affine resample), colour
               jitter (brightness, contrast, saturation, hue) with p=0.8, grayscale with p=0.2
  weak_view    FixMatch's weak view: flip + pad-and-crop (the supervised augmentation)
  strong_view  FixMatch's strong view: weak + RandAugment (2 ops, random magnitudes) + Cutout

Why not torchvision.transforms.v2.RandAugment: called on a batch tensor it draws *one* op and
magnitude for the whole batch, and per-image calls cost a Python loop over 448 images a step.
Here each op is applied, vectorised, to the images that drew it, with per-image magnitudes;
the op list and ranges follow FixMatch's RandAugment (Sohn et al., 2020). Every draw comes from
the given generator, so the engine's per-epoch generator makes the views reproducible."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import random_crop

# Y, I, Q rows: hue jitter is a rotation of the (I, Q) chroma plane (a per-image 3x3 matrix).
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _u(b: int, lo: float, hi: float, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(b, generator=g) * (hi - lo) + lo


def _bc(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def grey(x: torch.Tensor) -> torch.Tensor:
    return (x * _GREY.to(x.dtype)).sum(1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """b + f * (a - b): PIL ImageEnhance's blend (f=1: a unchanged, f=0: b), clamped."""
    return (b + _bc(f) * (a - b)).clamp_(0, 1)


def _affine(x: torch.Tensor, theta: torch.Tensor, fill: float | None = 0.5) -> torch.Tensor:
    """One bilinear resample per batch; outside pixels are `fill` (grey) or the border."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if fill is None:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


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
    out = x * _bc(_u(b, 1 - strength, 1 + strength, g))
    out = _blend(out, grey(out).mean((2, 3), keepdim=True).expand_as(out), _u(b, 1 - strength, 1 + strength, g))
    out = _blend(out, grey(out).expand_as(out), _u(b, 1 - strength, 1 + strength, g))
    a = _u(b, -hue, hue, g) * 2 * math.pi
    rot = torch.zeros(b, 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = a.cos(), -a.sin(), a.sin(), a.cos()
    m = (torch.linalg.inv(_YIQ) @ rot @ _YIQ).to(x.dtype)  # (b, 3, 3): RGB -> YIQ -> rotate -> RGB
    out = torch.einsum("bij,bjhw->bihw", m, out).clamp_(0, 1)
    return torch.where(_bc(keep), x, out)


def random_grayscale(x: torch.Tensor, g: torch.Generator | None, p: float = 0.2) -> torch.Tensor:
    pick = torch.rand(len(x), generator=g) < p
    return torch.where(_bc(pick), grey(x).expand_as(x), x)


def ssl_view(x: torch.Tensor, g: torch.Generator | None, scale: tuple[float, float] = (0.2, 1.0),
             strength: float = 0.4) -> torch.Tensor:
    """SimCLR's CIFAR view (no blur at 32 px): crop + flip, colour jitter, grayscale."""
    x = random_resized_crop(x, g, scale)
    return random_grayscale(color_jitter(x, g, strength, strength / 4), g)


def weak_view(x: torch.Tensor, g: torch.Generator | None, crop: float = 0.125) -> torch.Tensor:
    """Flip + reflect-pad-and-crop by `crop` of the side (FixMatch's weak augmentation)."""
    flip = torch.rand(len(x), generator=g) < 0.5
    x = torch.where(_bc(flip), x.flip(3), x)
    pad = max(1, round(crop * min(x.shape[-2:])))
    return random_crop(x, pad, g)


# --- RandAugment, batched: op(x, m) with per-image magnitudes m in [0, 1] ---

def _signed(m: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return torch.where(torch.rand(len(m), generator=g) < 0.5, -m, m)


def _enhance_factor(m: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return 1 + 0.95 * _signed(m, g)  # PIL enhance factor in [0.05, 1.95]


def _autocontrast(x, m, g):
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)


def _equalize(x, m, g):
    from torchvision.transforms.v2.functional import equalize
    return equalize(x.mul(255).round_().to(torch.uint8)).float().div_(255)


def _brightness(x, m, g):
    return (x * _bc(_enhance_factor(m, g))).clamp_(0, 1)


def _color(x, m, g):
    return _blend(x, grey(x).expand_as(x), _enhance_factor(m, g))


def _contrast(x, m, g):
    return _blend(x, grey(x).mean((2, 3), keepdim=True).expand_as(x), _enhance_factor(m, g))


def _sharpness(x, m, g):
    k = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype) / 13
    blur = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(3, 1, 3, 3).contiguous(), groups=3)
    return _blend(x, blur, _enhance_factor(m, g))


def _posterize(x, m, g):
    levels = _bc(2.0 ** (8 - (m * 4).round()))  # keep 8..4 bits
    return (x * 255 / (256 / levels)).floor_().mul_(256 / levels / 255).clamp_(0, 1)


def _solarize(x, m, g):
    t = _bc(1 - m)
    return torch.where(x >= t, 1 - x, x)


def _geometric(kind: str):
    def op(x, m, g):
        b = len(x)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        v = _signed(m, g)
        if kind == "rotate":  # up to 30 degrees
            a = v * math.pi / 6
            theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
        elif kind == "shear_x":
            theta[:, 0, 1] = 0.3 * v
        elif kind == "shear_y":
            theta[:, 1, 0] = 0.3 * v
        elif kind == "translate_x":
            theta[:, 0, 2] = 0.6 * v  # 0.3 of the width, in [-1, 1] grid units
        else:
            theta[:, 1, 2] = 0.6 * v
        return _affine(x, theta).clamp_(0, 1)
    return op


RAND_OPS = {"identity": lambda x, m, g: x, "autocontrast": _autocontrast, "equalize": _equalize,
            "brightness": _brightness, "color": _color, "contrast": _contrast, "sharpness": _sharpness,
            "posterize": _posterize, "solarize": _solarize, "rotate": _geometric("rotate"),
            "shear_x": _geometric("shear_x"), "shear_y": _geometric("shear_y"),
            "translate_x": _geometric("translate_x"), "translate_y": _geometric("translate_y")}


def rand_augment(x: torch.Tensor, g: torch.Generator | None, n: int = 2) -> torch.Tensor:
    """n rounds; in each, every image draws one op and a magnitude in [0, 1]; each op runs once
    on the images that drew it."""
    ops = list(RAND_OPS.values())
    x = x.clone()
    for _ in range(n):
        pick = torch.randint(0, len(ops), (len(x),), generator=g)
        mag = torch.rand(len(x), generator=g)
        for k, op in enumerate(ops):
            sel = (pick == k).nonzero().squeeze(1)
            if len(sel) and k:  # op 0 is the identity
                x[sel] = op(x[sel], mag[sel], g)
    return x


def cutout(x: torch.Tensor, g: torch.Generator | None, max_frac: float = 0.5) -> torch.Tensor:
    """A grey square of random side up to `max_frac` of the image, at a random place, per image."""
    b, _, h, w = x.shape
    side = (torch.rand(b, generator=g) * max_frac * min(h, w)).round().view(b, 1, 1)
    cy, cx = torch.rand(b, generator=g).view(b, 1, 1) * h, torch.rand(b, generator=g).view(b, 1, 1) * w
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    hole = ((ys - cy).abs() <= side / 2) & ((xs - cx).abs() <= side / 2) & (side > 0)
    return torch.where(hole.unsqueeze(1), torch.full_like(x, 0.5), x)


def strong_view(x: torch.Tensor, g: torch.Generator | None, crop: float = 0.125, n: int = 2) -> torch.Tensor:
    """FixMatch's strong view: weak view, RandAugment (n ops), Cutout."""
    return cutout(rand_augment(weak_view(x, g, crop), g, n), g)
