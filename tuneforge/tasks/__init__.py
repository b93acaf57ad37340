"""One plugin folder per kind of task. Each `tasks/<kind>/__init__.py` declares its fit `Plugin`
(tasks/plugins.py): the config groups it reads, and by "module:function" path how its data is
recognised, its fit, and the `infer` module that registers its inference `Task`s
(tasks/registry.py). A declaration imports none of that code, so importing this package is
light (`tuneforge --help` needs it, not torch). The fallback registers first: `plugin_for` asks
the last registered first.

To add a kind of task: a folder `tasks/<kind>/` with `infer.py` (a `Task` subclass under
`@register_task("<bundle task name>")`), `fit.py` (`fit(cfg, run) -> FitResult` built from
tuneforge.core), and an `__init__.py` that registers the plugin naming both; then import it below."""
from . import image, text, sequence, forecast, regression, multimodal, multilabel_images, align, pretrain, auto, search  # noqa: F401  (registration order matters)
from .plugins import PLUGINS, Plugin, plugin_for, plugin_of_task, register_plugin

__all__ = ["PLUGINS", "Plugin", "plugin_for", "plugin_of_task", "register_plugin"]
