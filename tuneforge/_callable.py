"""Packages that are also API functions: `tuneforge.export(...)` and `tuneforge.serve(...)`.

The API asks for functions named like two subpackages. Binding the functions in
`tuneforge/__init__.py` would replace the package attributes, so `tuneforge.export.Predictor`
and `mock.patch("tuneforge.export....")` would break depending on import order. Instead the
package module itself becomes callable and forwards to `tuneforge.api.<name>`."""
from __future__ import annotations

import sys
import types


def make_callable(module_name: str, api_name: str) -> None:
    module = sys.modules[module_name]

    class _CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            from . import api
            return getattr(api, api_name)(*args, **kwargs)

    _CallableModule.__call__.__doc__ = f"tuneforge.api.{api_name}"
    module.__class__ = _CallableModule
