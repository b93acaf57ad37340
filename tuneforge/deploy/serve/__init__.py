"""The prediction server (`tuneforge serve`): FastAPI app, micro-batching, metrics, try-it page.

The FastAPI modules are imported on first use, so `import tuneforge` does not need them."""
__all__ = ["ServeSettings", "create_app", "run"]


def __getattr__(name: str):
    if name in __all__:
        from . import app
        return getattr(app, name)
    raise AttributeError(name)

