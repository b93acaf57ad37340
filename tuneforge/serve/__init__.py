"""The prediction server (`tuneforge serve`): FastAPI app, micro-batching, metrics, try-it page.

Callable: `tuneforge.serve(bundle, ...)` is `tuneforge.api.serve` (see tuneforge/_callable.py).
The FastAPI modules are imported on first use, so `import tuneforge` does not need them."""
from .._callable import make_callable

__all__ = ["ServeSettings", "create_app", "run"]


def __getattr__(name: str):
    if name in __all__:
        from . import app
        return getattr(app, name)
    raise AttributeError(name)


make_callable(__name__, "serve")
