"""One fit, from the settings given to the kind's own fit: the path `tuneforge.fit` takes and
every trial of `tuneforge search` takes (tasks/search), so a trial is an ordinary fit.

    result = launch(None, {"data": "photos/", "epochs": 3, "out": "study/trials/0007"}, callbacks=(cb,))
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..config import FitConfig, refuse_unread
from ..core.run import RangeTestDone, Run, open_run, settings as run_settings
from ..recipes import RECIPES
from .plugins import plugin_for


def launch(config: FitConfig | None, kwargs: dict, callbacks: tuple = (), range_test: dict | None = None,
           on_open: Callable[[Run], None] | None = None) -> Any:
    """Settings (a recipe under them, or the resumed run's), the kind of task, settings that kind
    never reads refused, its derived settings, the run folder (`on_open` runs on it first) and
    the kind's fit, whose result is returned (with `range_test`, the range test's result)."""
    cfg, resume_dir = run_settings(FitConfig, config, kwargs)
    plugin = plugin_for(cfg)
    given = {**(config.explicit() if config else {}), **kwargs}
    defaults = {f.name: f.default for f in FitConfig.offered()}
    # a setting given at its default value (a config.yaml of another kind, say) is not refused
    named = {k.replace("-", "_") for k, v in given.items() if v != defaults.get(k.replace("-", "_"))} - {"resume", "out"}
    recipe = set(RECIPES[cfg.recipe].settings) - named if cfg.recipe and not resume_dir else set()
    refuse_unread(cfg, named, plugin.reads(FitConfig), plugin.name, recipe)
    if plugin.resolve:
        # derived defaults yield to the settings given (None: "the default", as not given)
        plugin.function("resolve")(cfg, {k for k, v in given.items() if v is not None})
    name = Path(cfg.model[3:]).name if cfg.model.startswith("hf:") else cfg.model  # hf:/path/to/model -> model
    if range_test is not None:
        name = "lr-find-" + name
    with open_run(cfg, resume_dir, name) as run:  # a run refused before its first epoch leaves no folder
        if on_open is not None:
            on_open(run)
        run.callbacks, run.range_test = callbacks, range_test
        try:
            return plugin.function("fit")(cfg, run)
        except RangeTestDone as done:  # lr_find: the range test ran on the model and data the fit built
            return done.result
