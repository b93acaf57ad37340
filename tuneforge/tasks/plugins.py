"""Fit `Plugin`s: how `tuneforge fit` trains a kind of task.

A kind of task registers the config groups its fit reads, and its code by "module:function"
path: how to recognise its data (`detect`), its fit, the settings it derives (`resolve`) and the
module that registers its inference `Task`s (`infer`, tuneforge/tasks/registry.py). Declaring
a kind therefore imports none of its code: `tuneforge fit --help` groups the flags by the kinds
that read them without importing torch, and the deploy code imports no training code. Each
hook is imported when it is first called (tests/test_startup.py resolves every one of them).

This module imports nothing heavy, and nothing of tuneforge but errors.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import BundleError, ConfigError


@dataclass(frozen=True)
class Plugin:
    """A kind of task for `tuneforge fit`.

    groups: the config groups its fit reads (tuneforge/config.py), less `unread` fields;
    detect: "module:function" taking the fit settings -> whether they describe this kind (cheap:
    no model or data is loaded); None for the plugin of a verb of its own (align, pretrain),
    which `fit` never picks; fit: "module:function" taking (cfg, run) -> FitResult (for the align
    and pretrain verbs: the verb's own entry point, taking (config, **settings)); resolve:
    "module:function" taking cfg and the names of the settings given (flags, keywords), for settings
    derived before config.yaml is written (optional);
    infer: the module whose import registers the `Task`s of the bundles it writes (`tasks`), which
    say what those bundles do at inference (predict, evaluate, batch, serve, export)."""
    name: str
    groups: tuple[str, ...]
    detect: str | None
    fit: str
    tasks: tuple[str, ...] = ()
    infer: str | None = None
    unread: tuple[str, ...] = ()
    resolve: str | None = None
    help: str = ""

    def reads(self, cls: type) -> set[str]:
        groups = cls.groups()
        return {n for n, g in groups.items() if g in self.groups} - set(self.unread)

    def function(self, which: str) -> Callable:
        """The hook `which` ("detect", "fit" or "resolve"), imported now."""
        return load(getattr(self, which))


def load(path: str) -> Callable:
    """The function a "module:function" path names."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


PLUGINS: dict[str, Plugin] = {}


def register_plugin(plugin: Plugin) -> Plugin:
    """Add a kind of task; checked in registration order, the last registered first (so the
    fallback, images, registers first)."""
    if plugin.name in PLUGINS:
        raise ValueError(f"plugin {plugin.name!r} registered twice")
    PLUGINS[plugin.name] = plugin
    return plugin


def plugin_for(cfg: Any) -> Plugin:
    """The kind of task the fit settings describe."""
    for plugin in reversed(list(PLUGINS.values())):
        if plugin.detect is not None and plugin.function("detect")(cfg):
            return plugin
    raise ConfigError("--data: cannot tell what kind of data this is")


def task_names() -> list[str]:
    """Every bundle task some kind writes, sorted."""
    return sorted(t for p in PLUGINS.values() for t in p.tasks)


def plugin_of_task(task: str) -> Plugin:
    """The plugin whose bundles carry this `task` name."""
    for plugin in PLUGINS.values():
        if task in plugin.tasks:
            return plugin
    raise BundleError(f"task {task!r} is not known to this tuneforge (known: {', '.join(task_names())})")
