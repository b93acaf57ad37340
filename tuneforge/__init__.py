"""tuneforge: from a pretrained model to a deployed task model, on the hardware you have."""
__version__ = "0.1.0"

from .config import AlignConfig, FitConfig, LrFindConfig, PretrainConfig  # noqa: E402

__all__ = ["fit", "lr_find", "Callback", "LrFindConfig", "evaluate", "predict", "load", "export", "serve", "batch_predict", "align", "retrieve", "zeroshot",
           "embed", "AlignConfig", "pretrain", "PretrainConfig", "FitConfig", "FitResult", "__version__"]

_API = {"fit", "lr_find", "Callback", "evaluate", "predict", "load", "export", "serve", "batch_predict", "align", "retrieve", "zeroshot",
        "embed", "pretrain", "FitResult"}


def __getattr__(name: str):
    # The API (and with it the training code) is imported on first use: a deployment that
    # imports only tuneforge.deploy never loads the engine, the reports or scikit-learn.
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'tuneforge' has no attribute {name!r}")
