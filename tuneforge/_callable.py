"""Packages that are also API functions: `tuneforge.export(...)` and `tuneforge.serve(...)`.

The API asks for functions named like two subpackages. Binding the functions in
`tuneforge/__init__.py` would replace the package attributes, so `tuneforge.export.Predictor`
and `mock.patch("tuneforge.export....")` would break depending on import order. Instead the
package module itself becomes callable and forwards to `tuneforge.api.<name>`."""
from __future__ import annotations

import sys
import types
from typing import Callable


def make_callable(module_name: str, target: str | Callable) -> None:
    """Calling the module calls `target`: a function, or the name of one in `tuneforge.api`
    (looked up at call time, so the package need not import the API on import)."""
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            if callable(target):
                return target(*args, **kwargs)
            from . import api
            return getattr(api, target)(*args, **kwargs)

    _CallableModule.__call__.__doc__ = getattr(target, "__doc__", None) or f"tuneforge.api.{target}"
    module.__class__ = _CallableModule
