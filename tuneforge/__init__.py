"""tuneforge: from a pretrained model to a deployed task model, on the hardware you have."""
__version__ = "0.1.0"

from .api import (FitResult, align, batch_predict, embed, evaluate, export, fit, load, predict, pretrain,  # noqa: E402
                  retrieve, serve, zeroshot)
from .config import AlignConfig, FitConfig, PretrainConfig  # noqa: E402

__all__ = ["fit", "evaluate", "predict", "load", "export", "serve", "batch_predict", "align", "retrieve", "zeroshot",
           "embed", "AlignConfig", "pretrain", "PretrainConfig", "FitConfig", "FitResult", "__version__"]
