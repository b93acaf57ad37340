"""tuneforge: from a pretrained model to a deployed task model, on the hardware you have."""
__version__ = "0.1.0"

from .api import FitResult, evaluate, fit, load, predict  # noqa: E402
from .config import FitConfig  # noqa: E402
from .api import batch_predict  # noqa: E402
from .align import AlignConfig, embed, retrieve, zeroshot  # noqa: E402  tuneforge.align(...): the module is callable
from .pretrain import PretrainConfig, pretrain  # noqa: E402
from . import export, serve  # noqa: E402  callable packages: tuneforge.export(...), tuneforge.serve(...)

__all__ = ["fit", "evaluate", "predict", "load", "export", "serve", "batch_predict", "align", "retrieve", "zeroshot", "embed", "AlignConfig", "pretrain", "PretrainConfig", "FitConfig", "FitResult", "__version__"]
