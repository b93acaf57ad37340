"""Batch augmentation on float image tensors in [0, 1], (B, 3, H, W), on whole batches at once.

Named as Keras' ImageDataGenerator names them, with the same meaning of strengths:
  shear=DEG     random shear angle in [-DEG, DEG] degrees (Keras shear_range)
  zoom=F        zoom factor in [1-F, 1+F], independently per axis (Keras zoom_range)
  rotate=DEG    rotation in [-DEG, DEG] degrees (Keras rotation_range)
  shift=F       translation up to F of width/height (Keras width/height_shift_range)
  flip          horizontal flip with probability 1/2 (Keras horizontal_flip)
  crop=P        pad P pixels (reflect) and take a random crop of the original size
                (the CIFAR/ResNet standard; P < 1 means a fraction of the side)
The policies timm users know (core/augment/policies.py), applied after those, per image:
  randaugment[=N/M]  RandAugment: N ops per image (default 2) at magnitude M of 10 (default 9),
                     timm's rand-m9-n2; randaugment=M sets M alone
  trivialaugment     TrivialAugment: one op per image at a random magnitude
  erase=P            random erasing with probability P (a noise-filled rectangle, timm-style)
and, on the batch, last (they change the targets: the Supervised strategy then trains on soft
labels, label smoothing included):
  mixup=ALPHA        mixup with lambda ~ Beta(ALPHA, ALPHA) (timm: 0.8; 0.2 for short runs)
  cutmix=ALPHA       CutMix; with mixup too, one or the other per batch (p=1/2), as timm does
Keras' `rescale=1/255` is not an augmentation here: scaling is part of each backbone's
preprocessing and is applied to train, validation, test and served inputs alike.
All geometric ops are folded into one affine matrix per image, so the batch is resampled
once (grid_sample), with border fill like Keras' default fill_mode='nearest'.
Spec strings: "flip,shear=0.2,zoom=0.2", "flip,crop=0.125,randaugment,mixup=0.2" or "none".
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from .policies import mix_batch, rand_augment, random_erase, trivial_augment

OPS = {"shear", "zoom", "rotate", "shift", "flip", "crop", "randaugment", "trivialaugment", "erase", "mixup", "cutmix"}
FLAG_OPS = {"flip"}
MIX_OPS = {"mixup", "cutmix"}  # batch-level: they change the targets
RANDAUGMENT_DEFAULT = (2, 9.0)  # N ops per image, magnitude M of 10: timm's rand-m9-n2


def parse_randaugment(value: str, flag: str = "--augment") -> tuple[int, float]:
    """'' -> (2, 9); 'M' -> (2, M); 'N/M' -> (N, M); N >= 1, M in [0, 10]."""
    n, m = RANDAUGMENT_DEFAULT
    try:
        if "/" in value:
            first, _, second = value.partition("/")
            n, m = int(first), float(second)
        elif value:
            m = float(value)
    except ValueError:
        raise ConfigError(f"{flag}: randaugment takes N/M (ops per image / magnitude of 10) or M, as in "
                          f"randaugment=2/9 or randaugment=9 (got {value!r})") from None
    if n < 1 or not 0 <= m <= 10:
        raise ConfigError(f"{flag}: randaugment=N/M needs N >= 1 and M in [0, 10], got {value!r}")
    return n, m


def parse_spec(spec: str, flag: str = "--augment") -> dict:
    """name -> strength (a float; randaugment: (N, M)), in the order given."""
    ops: dict = {}
    if not spec or spec.strip() in ("none", ""):
        return ops
    for part in spec.split(","):
        name, _, value = part.strip().partition("=")
        if name not in OPS:
            raise ConfigError(f"{flag}: unknown augmentation {name!r} in {spec!r}; "
                              f"choose from {', '.join(sorted(OPS))} (e.g. 'flip,shear=0.2,zoom=0.2')")
        if name in FLAG_OPS:
            ops[name] = 1.0 if not value else float(value)
            continue
        if name == "randaugment":
            ops[name] = parse_randaugment(value, flag)
            continue
        if name == "trivialaugment":
            if value:
                raise ConfigError(f"{flag}: trivialaugment takes no value (its magnitudes are random), got {part.strip()!r}")
            ops[name] = 1.0
            continue
        try:
            ops[name] = float(value)
        except ValueError:
            raise ConfigError(f"{flag}: {name} needs a number, as in {name}=0.2 (got {part.strip()!r})") from None
        if ops[name] < 0:
            raise ConfigError(f"{flag}: {name} must be >= 0, got {ops[name]}")
        if name == "erase" and ops[name] > 1:
            raise ConfigError(f"{flag}: erase=P is a probability, in [0, 1]; got {ops[name]}")
    if "randaugment" in ops and "trivialaugment" in ops:
        raise ConfigError(f"{flag}: randaugment and trivialaugment are two policies for the same job; choose one")
    return ops


class Augment:
    """Callable batch augmenter; the same generator state gives the same augmentation."""

    def __init__(self, spec: str = "none"):
        self.spec = spec
        self.ops = parse_spec(spec)

    def __bool__(self) -> bool:
        return bool(self.ops)

    @property
    def mixes(self) -> bool:
        """Whether `mix` does anything (mixup or cutmix with alpha > 0)."""
        return any(self.ops.get(k) for k in MIX_OPS)

    def mix(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
        """The batch mixed by mixup/cutmix and lambda, its own labels' share (policies.mix_batch)."""
        return mix_batch(x, generator, self.ops.get("mixup", 0.0), self.ops.get("cutmix", 0.0))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        ops = self.ops
        if not ops:
            return x
        b, _, h, w = x.shape

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(b, generator=generator) * (hi - lo) + lo

        if ops.get("crop"):
            p = ops["crop"]
            pad = max(1, round(p * min(h, w))) if p < 1 else int(p)
            x = random_crop(x, pad, generator)
        if any(ops.get(k) for k in ("shear", "zoom", "rotate", "shift")):
            theta = torch.zeros(b, 2, 3)
            theta[:, 0, 0] = theta[:, 1, 1] = 1.0
            if ops.get("rotate"):
                a = uniform(-ops["rotate"], ops["rotate"]) * math.pi / 180
                rot = torch.stack([torch.stack([a.cos(), -a.sin()], 1), torch.stack([a.sin(), a.cos()], 1)], 1)
                theta[:, :, :2] = rot @ theta[:, :, :2]
            if ops.get("shear"):
                s = uniform(-ops["shear"], ops["shear"]) * math.pi / 180
                shear = torch.zeros(b, 2, 2)
                shear[:, 0, 0] = 1.0
                shear[:, 0, 1] = -s.sin()
                shear[:, 1, 1] = s.cos()
                theta[:, :, :2] = theta[:, :, :2] @ shear
            if ops.get("zoom"):
                z = ops["zoom"]
                # Keras samples the zoom per axis; a factor > 1 samples a larger area (zoom out).
                theta[:, 0, :2] *= uniform(1 - z, 1 + z).unsqueeze(1)
                theta[:, 1, :2] *= uniform(1 - z, 1 + z).unsqueeze(1)
            if ops.get("shift"):
                t = ops["shift"] * 2  # grid units span [-1, 1]
                theta[:, 0, 2] = uniform(-t, t)
                theta[:, 1, 2] = uniform(-t, t)
            grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if ops.get("flip"):
            flip = torch.rand(b, generator=generator) < 0.5 * ops["flip"]
            x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(3), x)
        if "randaugment" in ops:
            n, m = ops["randaugment"]
            x = rand_augment(x, generator, n, m / 10)
        if "trivialaugment" in ops:
            x = trivial_augment(x, generator)
        if ops.get("erase"):
            x = random_erase(x, generator, ops["erase"])
        return x


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reflect-pad by `pad` and crop back to the original size at a random offset per image,
    as two gathers (no Python loop over the batch)."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    # offsets drawn on the CPU (the engine's generator), the gather indices built on x's device
    oy, ox = oy.to(x.device), ox.to(x.device)
    rows = (oy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
    xp = xp.gather(2, rows)
    cols = (ox.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w).expand(b, c, h, w)
    return xp.gather(3, cols)


def log_mean_softmax(views: list[torch.Tensor]) -> torch.Tensor:
    """Logits of several views of the same inputs -> log of their mean class probabilities."""
    probs = torch.stack([v.float().softmax(1) for v in views]).mean(0)
    return probs.clamp_min(1e-12).log()


def flip_tta(model: torch.nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation: log of the mean of the softmax over the image and its mirror."""
    return log_mean_softmax([logits, model(x.flip(3))])
