"""Bundles (safetensors + JSON) and the Predictor that runs them."""
from .bundle import FORMAT_VERSION, load_bundle, read_bundle_config, save_bundle
from .predictor import Predictor

__all__ = ["save_bundle", "load_bundle", "read_bundle_config", "Predictor", "FORMAT_VERSION"]
