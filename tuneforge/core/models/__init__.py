"""Backbones and heads. Importing this package registers every architecture (cnn, fastcnn,
resnet, efficientnet, text encoders, fusion, tfidf; `timm:NAME` via timm_zoo) in the model registry (registry.py)."""
from __future__ import annotations

from . import cnn, efficientnet, fastcnn, fusion, resnet, text, tfidf, timm_zoo  # noqa: F401  (each registers its models)
from .base import Backbone, Classifier
from .registry import MODELS, ModelSpec, create_model, model_spec
from .weights import load_into

__all__ = ["MODELS", "ModelSpec", "Classifier", "Backbone", "create_model", "model_spec", "load_into"]
