"""`--model timm:NAME`: any timm architecture (ViT, ConvNeXt, ResNet, MobileNet, ...) as a
tuneforge Backbone. timm is imported only when such a model is named, so `--help` stays light.

Weights come from local files only: `--weights FILE` (a timm state dict, classifier keys
dropped, a ViT's position embeddings resampled to `--image-size`), or with `--pretrained` a
copy already in the Hugging Face cache, read as safetensors without asking the network. With
no cached copy the registry warns and the model trains from random init, as for every model.

Stages (for `--freeze K`): the stem and timm's own feature stages (`feature_info`); a ViT's
blocks are grouped into four stages after the patch embedding (+ class token and position
embeddings), and the final norm is the last stage. Where the stages compose to the model's
`forward_features` (checked once on a real input at build), `forward_stages`/`pool` let a fit
cache what frozen stages compute."""
from __future__ import annotations

import difflib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from .base import Backbone
from .registry import ModelSpec, register_prefix
from .weights import load_state_dict_file

PREFIX = "timm:"
VIT_GROUPS = 4  # a ViT's blocks become this many stages for --freeze K


def hub_cache() -> Path:
    """The Hugging Face hub cache as huggingface_hub finds it, read at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _safetensors_names(cfg: Any) -> list[str]:
    names = ["model.safetensors"]
    filename = getattr(cfg, "hf_hub_filename", None) or ""
    if filename.endswith(".safetensors"):
        names.insert(0, filename)
    elif filename == "open_clip_pytorch_model.bin":  # timm's own safetensors twin of that file
        names.insert(0, "open_clip_model.safetensors")
    return names


def cached_weights(arch: str) -> str | None:
    """The safetensors file of `arch` (NAME or NAME.TAG; the default tag for NAME) in the
    local Hugging Face cache, or None. Looks at files only: nothing is downloaded."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    for filename in _safetensors_names(cfg):
        found = try_to_load_from_cache(repo, filename, cache_dir=hub_cache())
        if isinstance(found, str):
            return found
    return None


def _check_arch(arch: str) -> None:
    import timm

    if not timm.is_model(arch.split(".")[0]):
        close = difflib.get_close_matches(arch.split(".")[0], timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(PREFIX + c for c in close)}?)" if close else ""
        raise ConfigError(f"--model {PREFIX}{arch}: timm {timm.__version__} has no architecture {arch!r}{hint}; "
                          f"`tuneforge models --timm 'PATTERN*'` lists them")


def _size_args(arch: str, image_size: int | None) -> dict:
    """Models whose input size is part of the architecture (ViT position embeddings, Swin
    windows) are built for `image_size`; convolutional ones take any size as they are."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    return {"img_size": image_size} if image_size and cfg is not None and cfg.fixed_input_size else {}


def _create(arch: str, image_size: int | None, **kw: Any) -> nn.Module:
    import timm

    try:
        return timm.create_model(arch, num_classes=0, **_size_args(arch, image_size), **kw)
    except (AssertionError, ValueError, RuntimeError, TypeError) as e:
        raise ConfigError(f"--model {PREFIX}{arch} cannot be built at --image-size {image_size} "
                          f"({e.__class__.__name__}: {e})") from None


def _is_vit(net: nn.Module) -> bool:
    return hasattr(net, "patch_embed") and isinstance(getattr(net, "blocks", None), nn.Sequential) \
        and not hasattr(net, "stages")


def _stage_units(net: nn.Module) -> tuple[list[list[tuple[str, nn.Module]]], list[tuple[str, nn.Module]]]:
    """The model's top-level layers in order (a container of feature stages opened up), cut
    after each of timm's feature modules: (stages, what follows the last one)."""
    marks = [f["module"] for f in net.feature_info] if hasattr(net, "feature_info") else []
    units: list[tuple[str, nn.Module]] = []
    for name, child in net.named_children():
        if any(m.startswith(name + ".") for m in marks):
            units += [(f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            units.append((name, child))
    stages, current = [], []
    for name, module in units:
        current.append((name, module))
        if name in marks:
            stages.append(current)
            current = []
    if _is_vit(net) and stages:  # one feature mark per block: group the blocks into a few stages
        stem = stages[0][:-1]
        blocks = [u for s in stages for u in s if u[0].startswith("blocks.")]
        per = -(-len(blocks) // VIT_GROUPS)
        stages = [stem] + [blocks[i:i + per] for i in range(0, len(blocks), per)]
    return stages, current


class _Group(nn.Module):
    """Layers (and the model's own top-level parameters) gathered for freezing; built on the
    fly by `stages()`, so it is never part of the state dict."""

    def __init__(self, units: list[tuple[str, nn.Module]], params: dict[str, nn.Parameter] | None = None):
        super().__init__()
        self.layers = nn.ModuleList([m for _, m in units])
        for name, p in (params or {}).items():
            self.register_parameter(name, p)


class TimmBackbone(Backbone):
    """A timm model built with num_classes=0 (its forward gives pooled pre-logit features)."""

    def __init__(self, arch: str, image_size: int | None, pretrained: bool = False):
        super().__init__()
        state = None
        if pretrained:
            path = cached_weights(arch)
            if path is None:
                raise ConfigError(f"--model {PREFIX}{arch}: no pretrained weights in the Hugging Face cache "
                                  f"({hub_cache()}); pass --weights FILE or --no-pretrained")
            state = load_state_dict_file(path, "--pretrained")
        # timm applies the model's own checkpoint filter (e.g. position embeddings resampled
        # to img_size) and drops the classifier; the state dict was read here, safely.
        kw = {"pretrained": True, "pretrained_cfg_overlay": {"state_dict": state}} if state is not None else {}
        self.net = _create(arch, image_size, **kw)
        self.arch = arch
        cfg = self.net.pretrained_cfg
        self.mean, self.std = tuple(cfg.get("mean", self.mean)), tuple(cfg.get("std", self.std))
        self.feature_dim = int(getattr(self.net, "head_hidden_size", None) or self.net.num_features)
        self._stages, self._rest = _stage_units(self.net)
        self._params = {n: p for n, p in self.net.named_parameters(recurse=False)}  # ViT class/position tokens
        # How many layers after the last stage forward_features applies, when the stages run in
        # sequence compute it (set by `build`, checked on a real input); None: no stage cache.
        self.feature_tail: int | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def can_split(self) -> bool:  # per model, not per class: known once built
        return self.feature_tail is not None

    def forward_stages(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        if self.feature_tail is None:
            raise NotImplementedError(f"{PREFIX}{self.arch}: its layers do not run as a sequence of stages")
        for units in self._stages[start:stop]:
            for _, m in units:
                x = m(x)
        return x  # the last (head) stage, when there is one, runs in `pool`

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        for _, m in self._rest[:self.feature_tail]:  # what forward_features does after the last stage
            maps = m(maps)
        return self.net.forward_head(maps, pre_logits=True)

    def stages(self) -> list[nn.Module]:
        groups = [_Group(units, self._params if i == 0 else None) for i, units in enumerate(self._stages)]
        rest = _Group(self._rest)
        return groups + ([rest] if any(True for _ in rest.parameters()) else [])

    def adapt_state(self, state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
        """A timm state dict (`timm.create_model(...).state_dict()`) as this module's keys: the
        classifier dropped, a ViT's position embeddings resampled to this model's grid."""
        own = self.state_dict()
        if not any(k.startswith("net.") for k in state):
            state = {"net." + k: v for k, v in state.items()}
        heads = self.net.pretrained_cfg.get("classifier") or ()
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        state = {k: v for k, v in state.items() if k in own or not k[4:].startswith(tuple(h + "." for h in heads))}
        pos = state.get("net.pos_embed")
        if pos is not None and "net.pos_embed" in own and pos.shape != own["net.pos_embed"].shape:
            from timm.layers import resample_abs_pos_embed

            prefix = 0 if getattr(self.net, "no_embed_class", False) else self.net.num_prefix_tokens
            state["net.pos_embed"] = resample_abs_pos_embed(pos, list(self.net.patch_embed.grid_size),
                                                            num_prefix_tokens=prefix)
        return state


@torch.no_grad()
def _feature_tail(b: TimmBackbone, image_size: int) -> int | None:
    """How many of the layers after the last stage forward_features applies, when the stages
    run in sequence reproduce it exactly on a real input; None when they do not (the model
    wires its layers otherwise: it then trains without the frozen-stage cache)."""
    if _is_vit(b.net) or b._params or not b._stages:
        return None
    was = b.training
    b.eval()
    try:
        x = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
        want = b.net.forward_features(x)
        maps = x
        for units in b._stages:
            for _, m in units:
                maps = m(maps)
        for i in range(len(b._rest) + 1):
            if maps.shape == want.shape and torch.allclose(maps, want, atol=1e-5, rtol=1e-4):
                return i
            if i < len(b._rest):
                maps = b._rest[i][1](maps)
    except Exception:  # noqa: BLE001 - any failure just means "not sequential"
        return None
    finally:
        b.train(was)
    return None


def build(arch: str, image_size: int, pretrained: bool) -> Backbone:
    _check_arch(arch)
    backbone = TimmBackbone(arch, image_size, pretrained)
    backbone.feature_tail = _feature_tail(backbone, image_size)
    return backbone


@lru_cache(maxsize=64)
def geometry(arch: str) -> tuple[int, int, bool]:
    """(native size, size multiple, fixed input size) of `arch`, from a meta-device build (no
    memory, no weights): the multiple is a ViT's patch size, else the total stride."""
    import timm
    from timm.models import get_pretrained_cfg

    _check_arch(arch)
    cfg = get_pretrained_cfg(arch)
    native = int(cfg.input_size[-1]) if cfg is not None else 224
    fixed = bool(cfg is not None and cfg.fixed_input_size)
    try:
        with torch.device("meta"):
            net = timm.create_model(arch, num_classes=0)
    except Exception:  # noqa: BLE001 - a model whose constructor needs real tensors: the usual stride
        return native, 32, fixed
    patch = getattr(getattr(net, "patch_embed", None), "patch_size", None)
    if patch is not None and _is_vit(net):
        multiple = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
    else:
        infos = getattr(net, "feature_info", None) or []
        multiple = int(infos[-1]["reduction"]) if infos else 32
    return native, multiple, fixed


def spec(name: str) -> ModelSpec:
    """The ModelSpec of `timm:ARCH` (ARCH may carry a timm weight tag: NAME.TAG)."""
    arch = name[len(PREFIX):]
    native, multiple, fixed = geometry(arch)
    cached = cached_weights(arch)
    rule = (f"input sides a multiple of the {multiple}px patch, built for --image-size" if fixed
            else f"any input size, best a multiple of its total stride {multiple}")
    return ModelSpec(lambda image_size, pretrained: build(arch, image_size, pretrained), native,
                     f"Hugging Face cache (offline): {cached}" if cached else "",
                     f"timm {arch} ({rule})", size_multiple=multiple, min_image_size=multiple,
                     pretrained_min_size=64 if cached else 0)


def listing(pattern: str) -> list[tuple[str, int, str | None]]:
    """(architecture, native size, a cached weight file or None) of timm's architectures
    matching `pattern` (fnmatch-style, as timm.list_models)."""
    import timm
    from timm.models import get_arch_pretrained_cfgs

    out = []
    for arch in timm.list_models(pattern):
        cfgs = get_arch_pretrained_cfgs(arch) or {}
        found = next((f for f in (cached_weights(tag) for tag in cfgs) if f), None)
        first = next(iter(cfgs.values()), None)
        out.append((arch, int(first.input_size[-1]) if first is not None else 224, found))
    return out


register_prefix(PREFIX, spec)
