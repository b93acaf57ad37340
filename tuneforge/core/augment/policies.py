"""Augmentation policies on whole float batches in [0, 1], (B, 3, H, W),
with every parameter drawn per image from one generator (the same generator state gives the
same batch: exact --resume depends on it):

  rand_augment      RandAugment (Cubuk et al., 2020): N rounds, each image draws one of the 14
                    ops below and applies it at magnitude M (or, FixMatch's variant, a random one)
  trivial_augment   TrivialAugment (Mueller & Hutter, 2021): one op per image, magnitude uniform
  random_erase      Random Erasing (Zhong et al., 2020), timm's form: with probability p, a
                    rectangle of 2-33% of the image, aspect ratio 0.3-3.3, filled with noise
  mix_batch         mixup (Zhang et al., 2018) / CutMix (Yun et al., 2019) with the batch's mirror
                    (batch order reversed), one lambda per batch, switching 1:1 when both are on,
                    as timm's Mixup; `mixed_targets` and `soft_cross_entropy` are their loss

Ops: identity, autocontrast, equalize (torchvision's equalize, batched per-image histograms),
brightness, color, contrast, sharpness (PIL ImageEnhance factors 1 +- 0.95 m), posterize (8 to 4
bits), solarize (threshold 1 - m), rotate (30 m degrees), shear_x/y (0.3 m), translate_x/y (0.3 m
of the side); geometric ops resample once with grey fill, signs drawn per image. Each op runs once
per round on the images that drew it (a loop over 14 ops, never over images)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

_GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _u(b: int, lo: float, hi: float, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(b, generator=g) * (hi - lo) + lo


def _bc(v: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image values broadcast over (B, C, H, W), on `like`'s device: every draw is made on the
    CPU from the engine's CPU generator (the same numbers on every device, so a CPU run is what it
    always was) and only the small per-image tensor is moved to a GPU batch."""
    v = v.view(-1, 1, 1, 1)
    return v if like is None else v.to(like.device)


def grey(x: torch.Tensor) -> torch.Tensor:
    return (x * _GREY.to(x.device, x.dtype)).sum(1, keepdim=True)


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """b + f * (a - b): PIL ImageEnhance's blend (f=1: a unchanged, f=0: b), clamped."""
    return (b + _bc(f, a) * (a - b)).clamp_(0, 1)


def _affine(x: torch.Tensor, theta: torch.Tensor, fill: float | None = 0.5) -> torch.Tensor:
    """One bilinear resample per batch; outside pixels are `fill` (grey) or the border."""
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    if fill is None:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


# --- the ops: op(x, m, g) with per-image magnitudes m in [0, 1] ---

def _signed(m: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return torch.where(torch.rand(len(m), generator=g) < 0.5, -m, m)


def _enhance_factor(m: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    return 1 + 0.95 * _signed(m, g)  # PIL enhance factor in [0.05, 1.95]


def _autocontrast(x, m, g):
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)


def _equalize(x, m, g):
    from torchvision.transforms.v2.functional import equalize  # per-image histograms, batched
    return equalize(x.mul(255).round_().to(torch.uint8)).float().div_(255)


def _brightness(x, m, g):
    return (x * _bc(_enhance_factor(m, g), x)).clamp_(0, 1)


def _color(x, m, g):
    return _blend(x, grey(x).expand_as(x), _enhance_factor(m, g))


def _contrast(x, m, g):
    return _blend(x, grey(x).mean((2, 3), keepdim=True).expand_as(x), _enhance_factor(m, g))


def _sharpness(x, m, g):
    k = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
    blur = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(3, 1, 3, 3).contiguous(), groups=3)
    return _blend(x, blur, _enhance_factor(m, g))


def _posterize(x, m, g):
    levels = _bc(2.0 ** (8 - (m * 4).round()), x)  # keep 8..4 bits
    return (x * 255 / (256 / levels)).floor_().mul_(256 / levels / 255).clamp_(0, 1)


def _solarize(x, m, g):
    t = _bc(1 - m, x)
    return torch.where(x >= t, 1 - x, x)


GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def _geometric_batch(x: torch.Tensor, kind: torch.Tensor, m: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """Image i gets geometric op GEOMETRIC[kind[i]] at magnitude m[i] (random sign): one affine
    matrix per image, one resample for all of them."""
    b = len(x)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    v = _signed(m, g)
    a = torch.where(kind == 0, v * math.pi / 6, torch.zeros_like(v))  # rotate: up to 30 degrees
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    theta[:, 0, 1] += torch.where(kind == 1, 0.3 * v, 0.0)
    theta[:, 1, 0] += torch.where(kind == 2, 0.3 * v, 0.0)
    theta[:, 0, 2] = torch.where(kind == 3, 0.6 * v, 0.0)  # 0.3 of the side, in [-1, 1] grid units
    theta[:, 1, 2] = torch.where(kind == 4, 0.6 * v, 0.0)
    return _affine(x, theta).clamp_(0, 1)


def _geometric(kind: str):
    def op(x, m, g):
        return _geometric_batch(x, torch.full((len(x),), GEOMETRIC.index(kind)), m, g)
    return op


RAND_OPS = {"identity": lambda x, m, g: x, "autocontrast": _autocontrast, "equalize": _equalize,
            "brightness": _brightness, "color": _color, "contrast": _contrast, "sharpness": _sharpness,
            "posterize": _posterize, "solarize": _solarize, "rotate": _geometric("rotate"),
            "shear_x": _geometric("shear_x"), "shear_y": _geometric("shear_y"),
            "translate_x": _geometric("translate_x"), "translate_y": _geometric("translate_y")}


_FIRST_GEOMETRIC = list(RAND_OPS).index(GEOMETRIC[0])


def _apply_drawn(x: torch.Tensor, pick: torch.Tensor, mag: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """Each op once, on the images that drew it (in place on `x`, a copy); the geometric ops
    (the last five) as one resample of all the images that drew any of them."""
    for k, op in enumerate(list(RAND_OPS.values())[:_FIRST_GEOMETRIC]):
        sel = (pick == k).nonzero().squeeze(1)
        if len(sel) and k:  # op 0 is the identity
            x[sel] = op(x[sel], mag[sel], g)
    sel = (pick >= _FIRST_GEOMETRIC).nonzero().squeeze(1)
    if len(sel):
        x[sel] = _geometric_batch(x[sel], pick[sel] - _FIRST_GEOMETRIC, mag[sel], g)
    return x


def rand_augment(x: torch.Tensor, g: torch.Generator | None, n: int = 2, magnitude: float | None = None) -> torch.Tensor:
    """n rounds; in each, every image draws one op (uniformly, identity included) and applies it
    at `magnitude` in [0, 1] (None: a magnitude drawn per image, FixMatch's RandAugment)."""
    x = x.clone()
    for _ in range(n):
        pick = torch.randint(0, len(RAND_OPS), (len(x),), generator=g)
        mag = torch.rand(len(x), generator=g)
        if magnitude is not None:
            mag = torch.full_like(mag, magnitude)
        x = _apply_drawn(x, pick, mag, g)
    return x


def trivial_augment(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """One op per image at a magnitude drawn uniformly in [0, 1] (TrivialAugment, with
    RandAugment's op ranges rather than the "wide" ones, which at 32 px erase the object)."""
    return rand_augment(x, g, 1, None)


def random_erase(x: torch.Tensor, g: torch.Generator | None, p: float, area: tuple[float, float] = (0.02, 1 / 3),
                 ratio: tuple[float, float] = (0.3, 1 / 0.3)) -> torch.Tensor:
    """With probability p per image, a rectangle of random area (fraction of the image) and aspect
    ratio at a random place, filled with uniform noise (timm's mode='pixel', in [0, 1] here
    because images are erased before normalisation)."""
    b, _, h, w = x.shape
    hit = torch.rand(b, generator=g) < p
    a = _u(b, *area, g) * h * w
    r = _u(b, math.log(ratio[0]), math.log(ratio[1]), g).exp()
    eh = (a * r).sqrt().round().clamp(1, h)
    ew = (a / r).sqrt().round().clamp(1, w)
    top = (torch.rand(b, generator=g) * (h - eh + 1)).floor().view(b, 1, 1)
    left = (torch.rand(b, generator=g) * (w - ew + 1)).floor().view(b, 1, 1)
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    box = (ys >= top) & (ys < top + eh.view(b, 1, 1)) & (xs >= left) & (xs < left + ew.view(b, 1, 1))
    box &= hit.view(b, 1, 1)
    noise = torch.rand(x.shape, generator=g, dtype=x.dtype)
    return torch.where(box.unsqueeze(1).to(x.device), noise.to(x.device), x)


def mix_batch(x: torch.Tensor, g: torch.Generator | None, mixup: float = 0.0,
              cutmix: float = 0.0) -> tuple[torch.Tensor, float]:
    """Each image mixed with its partner in the reversed batch: mixup (a convex blend) or, with
    cutmix, a box of the partner pasted in; with both alphas given, one or the other per batch
    (p=1/2). Returns the images and lambda, the share of each image's own label (for cutmix the
    box's exact area). Beta draws come from numpy seeded by `g`, so `g` decides everything."""
    rng = np.random.default_rng(int(torch.randint(0, 2 ** 62, (1,), generator=g)))
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(rng.beta(alpha, alpha))
    partner = x.flip(0)
    if not use_cutmix:
        return x * lam + partner * (1 - lam), lam
    h, w = x.shape[-2:]
    cut = math.sqrt(1 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = partner[:, :, y0:y1, x0:x1]
    return out, 1 - (y1 - y0) * (x1 - x0) / (h * w)


def mixed_targets(y: torch.Tensor, lam: float, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Soft targets of a mixed batch: lam of each label and 1 - lam of its partner's (the
    reversed batch), each one-hot smoothed as timm does (off = smoothing / classes)."""
    off = smoothing / num_classes
    one_hot = torch.full((len(y), num_classes), off, device=y.device).scatter_(1, y.view(-1, 1), 1 - smoothing + off)
    return one_hot * lam + one_hot.flip(0) * (1 - lam)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against class distributions (timm's SoftTargetCrossEntropy), batch mean."""
    return (-targets * logits.float().log_softmax(1)).sum(1).mean()
