"""The search space of `tuneforge search`: the file's `space:` mapping, checked against the fit's
own settings before any trial starts, and how a trial draws its settings from it.

    lr: {log_uniform: [1.0e-4, 1.0e-2]}
    weight_decay: {uniform: [0.0, 0.1]}
    epochs: {int: [2, 8], step: 2}
    label_smoothing: {float: [0.0, 0.2], step: 0.05}
    freeze: {choice: [none, backbone, 2]}
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ...config import FitConfig, build, flag, with_recipe
from ...errors import ConfigError

DISTRIBUTIONS = ("log_uniform", "uniform", "int", "float", "choice")
# Set by the search itself for each trial, never searched over.
NOT_SEARCHED = ("out", "resume", "overwrite")
# The values a categorical distribution of Optuna stores as they are.
_PLAIN = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Dimension:
    """One searched setting: its distribution word, bounds and step, or its choices."""
    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial: Any) -> Any:
        """The trial's value (an enqueued trial's given value, else the sampler's)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1))
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "log_uniform", step=self.step)

    def grid(self) -> list | None:
        """Every value, for the grid sampler; None for a continuous range."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.kind == "float" and self.step:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9))
            return [round(self.low + i * self.step, 12) for i in range(n + 1)]
        return None

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice of {', '.join(map(str, self.choices))}"
        step = f", step {self.step:g}" if self.step else ""
        return f"{self.kind} [{self.low:g}, {self.high:g}]{step}"

    @property
    def log(self) -> bool:
        return self.kind == "log_uniform"


def parse_space(space: Any, fit: dict, reads: set[str], kind: str) -> list[Dimension]:
    """The checked dimensions of `space`; a wrong entry is refused naming its key: not a setting of
    fit, one the kind of task (`kind`, reading `reads`) never reads, an unknown distribution word,
    bad bounds or step, or a value the fit's own checks refuse (each choice and both bounds are
    checked as a fit setting over the base settings `fit`)."""
    if not isinstance(space, dict) or not space:
        raise ConfigError("search: `space:` must map fit settings to distributions, e.g. "
                          "`lr: {log_uniform: [1.0e-4, 1.0e-2]}`")
    names = {f.name for f in FitConfig.offered()}
    dims = []
    for key, spec in space.items():
        name = str(key).replace("-", "_")
        where = f"space: {key}"
        if name not in names:
            close = sorted(n for n in names if n.startswith(name[:3]))
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{where}: not a setting of `tuneforge fit`{hint}")
        if name in NOT_SEARCHED:
            raise ConfigError(f"{where}: set by the search for each trial, not searched over")
        if name not in reads:
            raise ConfigError(f"{where}: the {kind} fit never reads {flag(name)}")
        dim = _dimension(name, where, spec)
        for value in dim.choices or (dim.low, dim.high):
            _check_value(fit, name, value, where, dim.kind)
        dims.append(dim)
    return dims


def _dimension(name: str, where: str, spec: Any) -> Dimension:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: give a distribution, e.g. {{choice: [{spec!r}]}} or {{uniform: [a, b]}}; "
                          f"got {spec!r}")
    words = [k for k in spec if k != "step"]
    if len(words) != 1 or words[0] not in DISTRIBUTIONS:
        unknown = [w for w in words if w not in DISTRIBUTIONS]
        said = f"unknown distribution {unknown[0]!r}" if unknown else f"one distribution, got {len(words)}"
        raise ConfigError(f"{where}: {said}; use one of {', '.join(DISTRIBUTIONS)}")
    kind, value = words[0], spec[words[0]]
    step = spec.get("step")
    if step is not None and kind not in ("int", "float"):
        raise ConfigError(f"{where}: `step` goes with int or float, not {kind}")
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: choice needs a non-empty list of values, got {value!r}")
        odd = [v for v in value if not isinstance(v, _PLAIN)]
        if odd:
            raise ConfigError(f"{where}: a choice is a number, a word, true/false or null, not {odd[0]!r}")
        if len(set(map(repr, value))) != len(value):
            raise ConfigError(f"{where}: a choice is listed twice in {value!r}")
        return Dimension(name, kind, choices=tuple(value))
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{where}: {kind} needs two numbers [low, high], got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not low < high:
        raise ConfigError(f"{where}: {kind} needs low < high, got [{value[0]}, {value[1]}]")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{where}: log_uniform needs bounds > 0, got [{value[0]}, {value[1]}]")
    if kind == "int":
        if not all(float(v).is_integer() for v in value) or (step is not None and not float(step).is_integer()):
            raise ConfigError(f"{where}: int needs whole-number bounds and step, got {value!r}, step {step!r}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise ConfigError(f"{where}: step must be a number > 0, got {step!r}")
        if step > high - low:
            raise ConfigError(f"{where}: step {step} is larger than the range [{value[0]}, {value[1]}]")
    return Dimension(name, kind, low, high, float(step) if step is not None else None)


def _check_value(fit: dict, name: str, value: Any, where: str, kind: str) -> None:
    """`value` as the fit's setting `name`, through the fit's own checks."""
    if kind == "int":
        value = int(value)
    try:
        build(FitConfig, with_recipe({**fit, name: value})).validate()
    except ConfigError as e:
        raise ConfigError(f"{where}: {value!r} is refused by fit: {e}") from None


def grid_space(dims: list[Dimension]) -> dict[str, list]:
    """The grid sampler's space: every dimension must list its values (a choice or a stepped range)."""
    out = {}
    for d in dims:
        values = d.grid()
        if values is None:
            raise ConfigError(f"--sampler grid: space: {d.name} is a continuous {d.kind} range; give it as "
                              f"{{choice: [...]}} or with a step")
        out[d.name] = values
    return out
