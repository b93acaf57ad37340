"""The model registry (timm-style): `create_model(name, num_classes, ...)` builds a Classifier;
`MODELS` lists what exists (`tuneforge models`). Each architecture module registers its names
with `register(name, ModelSpec(...))`; `tuneforge/core/models/__init__.py` imports them all."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ...registry import Registry
from .base import Backbone, Classifier
from .weights import load_into, load_state_dict_file


@dataclass(frozen=True)
class ModelSpec:
    build: Callable[..., Backbone]  # (image_size, pretrained, **args) -> Backbone
    default_image_size: int
    pretrained: str  # where pretrained weights come from, or "" when there are none
    doc: str
    modality: str = "image"  # "image", or "text" (token ids / numeric sequences: core/models/text.py)


MODELS: Registry[ModelSpec] = Registry("model", "--model")
_HF: list[Callable[[str], ModelSpec]] = []  # how an `hf:PATH` name becomes a spec (registered by text.py)


def register(name: str, spec: ModelSpec) -> None:
    MODELS.register(name, spec.doc)(lambda: spec)


def register_hf(make: Callable[[str], ModelSpec]) -> None:
    _HF.append(make)


def model_spec(name: str) -> ModelSpec:
    if name.startswith("hf:") and _HF:  # any local Hugging Face encoder folder
        return _HF[0](name)
    return MODELS.create(name)


def create_model(name: str, num_classes: int, image_size: int | None = None, pretrained: bool = True,
                 weights: str | None = None, dropout: float = 0.0, **args: Any) -> Classifier:
    """Build `name` with a fresh `num_classes` head. `weights` is a local file (safetensors or a
    plain state dict) for the backbone, e.g. a self-supervised checkpoint; it overrides `pretrained`."""
    spec = model_spec(name)
    if pretrained and not spec.pretrained and weights is None:
        pretrained = False  # models without packaged weights start from scratch unless --weights is given
    backbone = spec.build(image_size or spec.default_image_size, pretrained and weights is None, **args)
    if weights is not None:
        state = load_state_dict_file(weights)
        if any(k.startswith("backbone.") for k in state):
            state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        load_into(backbone, state, weights)
    return getattr(backbone, "classifier_cls", Classifier)(backbone, num_classes, dropout)
