"""One plugin folder per kind of task. Each `tasks/<kind>/__init__.py` registers its inference
`Task`s (imported here: light, no training code) and its fit `Plugin` (the fit itself is named
by module path and imported only when a fit of that kind runs). The fallback registers first:
`plugin_for` asks the last registered first.

To add a kind of task: a folder `tasks/<kind>/` with `infer.py` (a `Task` subclass under
`@register_task("<bundle task name>")`), `fit.py` (`fit(cfg, run) -> FitResult` built from
tuneforge.core), and an `__init__.py` that registers both; then import it below."""
from . import image, text, sequence, multimodal, align, pretrain  # noqa: F401  (registration order matters)
from .registry import PLUGINS, TASKS, Plugin, Task, plugin_for, plugin_of_task, register_plugin, register_task, task_for

__all__ = ["PLUGINS", "TASKS", "Plugin", "Task", "plugin_for", "plugin_of_task", "register_plugin", "register_task", "task_for"]
