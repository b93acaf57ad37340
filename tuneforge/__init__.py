"""tuneforge: from a pretrained model to a deployed task model, on the hardware you have."""
__version__ = "0.1.0"

from .api import FitResult, evaluate, fit, load, predict  # noqa: E402
from .config import FitConfig  # noqa: E402

__all__ = ["fit", "evaluate", "predict", "load", "FitConfig", "FitResult", "__version__"]
