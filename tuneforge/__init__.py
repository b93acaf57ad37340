"""tuneforge: from a pretrained model to a deployed task model, on the hardware you have."""
__version__ = "0.1.0"

import os  # noqa: E402

# Before torch is imported (it reads this once, when its OpenMP runtime loads): OpenMP threads
# that wait at the end of each operator by sleeping, not spinning. On a shared CPU, spinning
# threads wait for each other's time slices: a Lite0 training step at 64 px on 2 threads ran at
# 1.8-2.3 images/s spinning and 23-25 sleeping (load ~20 on 2 cores; 1 thread: 10-12). A user's
# own OMP_WAIT_POLICY wins; it has no effect when torch was imported before tuneforge. The price on
# a quiet machine (load ~2, benchmarks/lite0_speed.py --variants fused, alternating runs): 179 vs
# 194 images/s unset and 161 vs 209 with ACTIVE; unset, a step fell to 13-26 images/s as soon as
# another process woke up. Robust beats 8% faster when alone: set OMP_WAIT_POLICY=ACTIVE on a
# machine of your own.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .config import AlignConfig, FitConfig, LrFindConfig, PretrainConfig, SearchConfig  # noqa: E402

__all__ = ["fit", "lr_find", "Callback", "LrFindConfig", "evaluate", "predict", "load", "export", "serve", "batch_predict", "align", "retrieve", "zeroshot",
           "embed", "AlignConfig", "pretrain", "PretrainConfig", "FitConfig", "FitResult", "runs", "search", "SearchConfig",
           "ensemble", "__version__"]

_API = {"fit", "lr_find", "Callback", "evaluate", "predict", "load", "export", "serve", "batch_predict", "align", "retrieve", "zeroshot",
        "embed", "pretrain", "runs", "search", "FitResult", "ensemble"}


def __getattr__(name: str):
    # The API (and with it the training code) is imported on first use: a deployment that
    # imports only tuneforge.deploy never loads the engine, the reports or scikit-learn.
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'tuneforge' has no attribute {name!r}")
