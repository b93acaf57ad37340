"""Bundles (safetensors + JSON), their portable export (ONNX, int8) and the Predictor that runs them.

`tuneforge.export(run, out, ...)` is the API function `tuneforge.api.export`: this package is
callable (see `_callable`), because a function of that name in `tuneforge/__init__.py` would
hide the package and break `tuneforge.export.Predictor`."""
from .._callable import make_callable
from .bundle import FORMAT_VERSION, load_bundle, read_bundle_config, save_bundle
from .predictor import BACKENDS, Predictor
from .tasks import TASKS, Task, register_task, task_for

__all__ = ["save_bundle", "load_bundle", "read_bundle_config", "Predictor", "BACKENDS", "FORMAT_VERSION",
           "Task", "TASKS", "register_task", "task_for"]

make_callable(__name__, "export")
