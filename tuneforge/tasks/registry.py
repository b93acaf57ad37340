"""The two registries of the task kinds: inference `Task`s (what a bundle's `task` field means
at inference time) and fit `Plugin`s (how `tuneforge fit` trains a kind of task).

Tasks: what a bundle's `task` field means at inference time.

A task says which inputs a model takes ("image", "text", or both), turns raw inputs (file
bytes, paths, strings) into named arrays exactly as training did, stacks them into a batch, and
wraps the trained module into the graph that both eager PyTorch and ONNX run. The Predictor,
the ONNX exporter and the server only talk to this interface, so a text or multimodal task
plugs in by calling `register_task` with its own class; nothing else changes.

Plugins: a kind of task registers the config groups its fit reads, how to recognise its data,
and its fit function by module path (imported only when a fit runs, so the deploy code that
imports this registry imports no training code).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from ..errors import BundleError, ConfigError

TASKS: dict[str, type["Task"]] = {}


def register_task(name: str):
    """Class decorator: `@register_task("text-classification")`."""
    def deco(cls: type[Task]) -> type[Task]:
        cls.name = name
        TASKS[name] = cls
        return cls
    return deco


def task_for(config: dict) -> "Task":
    """The Task of a bundle config; an unknown task is a clear error, not a KeyError."""
    name = config.get("task", "image-classification")
    if name not in TASKS:
        raise BundleError(f"{config.get('_dir', 'bundle')}: task {name!r} is not known to this tuneforge "
                          f"(known: {', '.join(sorted(TASKS))}); upgrade tuneforge")
    return TASKS[name](config)


class Task:
    """Base class. `inputs` names the kinds of input the model takes; `input_names` are the
    graph's tensor inputs, in the order the graph's forward takes them."""

    name = ""
    inputs: tuple[str, ...] = ()
    input_names: tuple[str, ...] = ()

    def __init__(self, config: dict):
        self.config = config
        self.pre: dict = config.get("preprocessing", {})

    def prepare(self, image: bytes | str | Path | np.ndarray | None = None, text: str | None = None) -> dict[str, np.ndarray]:
        """One raw example -> named arrays without a batch axis. Raises DataError with a message
        the server can show when the input cannot be used."""
        raise NotImplementedError

    def collate(self, items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Examples from `prepare` -> one batch (default: stack; text tasks pad here)."""
        return {k: np.stack([it[k] for it in items]) for k in self.input_names}

    def graph(self, model: nn.Module) -> nn.Module:
        """The module run at inference: named batch arrays (as tensors, positional in
        `input_names` order) -> logits. It holds the preprocessing that is not decoding."""
        raise NotImplementedError

    def example_batch(self, n: int = 2) -> dict[str, np.ndarray]:
        """A batch with the right shapes and dtypes, for tracing when no real input is given."""
        raise NotImplementedError

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """ONNX axes that vary between calls (the batch axis at least)."""
        return {**{n: {0: "batch"} for n in self.input_names}, "logits": {0: "batch"}}


def describe(task: Task) -> dict[str, Any]:
    """What the server's page and /v1/info show about a task."""
    return {"task": task.name, "inputs": list(task.inputs)}


@dataclass(frozen=True)
class Plugin:
    """A kind of task for `tuneforge fit`.

    groups: the config groups its fit reads (tuneforge/config.py), less `unread` fields;
    detect: whether settings describe this kind (cheap: no model or data is loaded);
    fit: "module:function" taking (cfg, run) -> FitResult; resolve: "module:function" taking
    cfg, for settings derived before config.yaml is written (optional);
    evaluate / read: "module:function" for labelled data -> (rows, labels, examples) and raw
    predict arguments -> rows, used by `evaluate`/`predict` through the Predictor."""
    name: str
    groups: tuple[str, ...]
    detect: Callable[[Any], bool]
    fit: str
    tasks: tuple[str, ...] = ()
    unread: tuple[str, ...] = ()
    resolve: str | None = None
    help: str = ""

    def reads(self, cls: type) -> set[str]:
        groups = cls.groups()
        return {n for n, g in groups.items() if g in self.groups} - set(self.unread)

    def function(self, which: str) -> Callable:
        module, _, name = getattr(self, which).partition(":")
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
        if plugin.detect(cfg):
            return plugin
    raise ConfigError("--data: cannot tell what kind of data this is")


def plugin_of_task(task: str) -> Plugin:
    """The plugin whose bundles carry this `task` name."""
    for plugin in PLUGINS.values():
        if task in plugin.tasks:
            return plugin
    raise BundleError(f"task {task!r} is not known to this tuneforge (known: {', '.join(sorted(TASKS))})")
