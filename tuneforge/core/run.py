"""A run, the same for every kind of task: the run folder with its settings, the one Engine
around a strategy (optimizer, schedule, callbacks, checkpoints, resume), and what a run leaves
behind (the bundle of the best weights, report.json/html, the console summary).

    run = prepare(FitConfig, None, {"data": "photos/"}, name=lambda c: c.model)
    engine, state = train_model(run, model, Supervised(...), train_loader, val_loader)
    return finish(run, model, report, state, meta, examples)
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch

from .. import config as cfgmod
from ..config import Settings
from ..errors import ConfigError
from .bundle import save_bundle
from .engine import Checkpointer, EarlyStopping, Engine, MetricsLogger, Progress, TimeLimit, build_optimizer, build_schedule
from .engine.checkpoint import load_checkpoint
from .report import print_summary, write_report

log = logging.getLogger("tuneforge")


def setup(threads: int) -> None:
    """Logging to the console (unless the caller set it up) and torch's compute threads."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(message)s", level=logging.INFO)
    torch.set_num_threads(threads or os.cpu_count() or 1)


@dataclass
class Run:
    """Resolved settings, the run folder, the checkpoint to resume from and the start time."""
    cfg: Any
    dir: Path
    resume_ckpt: dict | None = None
    t_start: float = field(default_factory=time.perf_counter)


@dataclass
class FitResult:
    run_dir: Path
    model: torch.nn.Module
    report: dict
    config: Any


def settings(cls: type[Settings], config: Settings | None, kwargs: dict, recipes: bool = True) -> tuple[Settings, Path | None]:
    """The validated settings of a new or resumed run (a recipe laid under the given settings;
    on --resume the run's own config.yaml under them) and the folder to resume, if any."""
    explicit = {**(config.explicit() if config else {}), **kwargs}
    cfg = cfgmod.build(cls, cfgmod.with_recipe(explicit) if recipes else explicit)
    resume = getattr(cfg, "resume", None)
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").exists():
            raise ConfigError(f"--resume: {run_dir} is not a run folder (no config.yaml)")
        given = {k: v for k, v in kwargs.items() if k != "resume"}
        cfg = cfgmod.build(cls, cfgmod.read_yaml(run_dir / "config.yaml"), given, {"resume": str(run_dir), "out": str(run_dir)})
        return cfg.validate(), run_dir
    return cfg.validate(), None


def open_run(cfg: Settings, resume_dir: Path | None, name: str) -> Run:
    """Create (or reopen) the run folder and write config.yaml: once, after every setting is
    resolved, so config.yaml and report.json always agree."""
    setup(cfg.threads)
    run_dir = resume_dir or (Path(cfg.out) if cfg.out else Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}")
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt") if resume_dir else None
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume_dir is None:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    cfgmod.write_yaml(cfg, run_dir / "config.yaml")
    return Run(cfg, run_dir, ckpt)


def prepare(cls: type[Settings], config: Settings | None, kwargs: dict, name: Callable[[Any], str],
            resolve: Callable[[Any], None] | None = None, recipes: bool = True) -> Run:
    """settings() + the caller's resolution of derived settings + open_run()."""
    cfg, resume_dir = settings(cls, config, kwargs, recipes)
    if resolve is not None:
        resolve(cfg)
    return open_run(cfg, resume_dir, name(cfg))


def train_model(run: Run, trainable: torch.nn.Module, strategy, train_loader, val_loader, default_lr: float | None = None,
          extra_callbacks: tuple = ()) -> tuple[Engine, dict]:
    """Optimizer, schedule, callbacks and the one Engine, for every kind of task."""
    cfg = run.cfg
    lr = cfg.lr or default_lr or (0.05 if cfg.optimizer == "sgd" else 1e-3)
    steps = len(train_loader) * cfg.epochs
    wd = cfg.weight_decay if cfg.weight_decay is not None else {"adamw": 0.05, "sgd": 5e-4}.get(cfg.optimizer, 0.0)
    optimizer = build_optimizer(trainable, cfg.optimizer, lr, wd, cfg.momentum)
    scheduler = build_schedule(optimizer, cfg.schedule, steps, int(cfg.warmup_epochs * len(train_loader)))
    early = EarlyStopping(cfg.monitor, cfg.patience if val_loader is not None else 0, run.dir)
    callbacks = [*extra_callbacks, early, Checkpointer(run.dir), MetricsLogger(run.dir, cfg.tensorboard), Progress(cfg.progress)]
    if getattr(cfg, "max_minutes", None):
        callbacks.insert(0, TimeLimit(cfg.max_minutes))
    engine = Engine(trainable, strategy, optimizer, scheduler, callbacks, cfg.precision, cfg.grad_clip, cfg.seed, cfg.epochs)
    if run.resume_ckpt is not None:
        engine.load_checkpoint(run.resume_ckpt)
        log.info("resuming %s after epoch %d", run.dir, engine.state["epoch"])
    return engine, engine.fit(train_loader, val_loader)


def finish(run: Run, model: torch.nn.Module, report: dict, state: dict, meta: dict | None, examples: dict | None,
           save: Callable[[Path], None] | None = None, summary: Callable[[dict], None] | None = None) -> FitResult:
    """Timings, the bundle of the best weights (`save` writes a bundle of another layout),
    report.json/html and the console summary."""
    report["fit_s"] = round(state.get("fit_s", 0.0), 2)
    report["wall_s"] = round(time.perf_counter() - run.t_start, 2)
    if save is not None:
        save(run.dir / "model")
    elif meta is not None:
        save_bundle(run.dir / "model", model, meta)
    paths = write_report(run.dir, report, state["history"], examples)
    report["html_path"] = str(paths["html"])
    if run.cfg.progress:
        (summary or print_summary)(report)
    return FitResult(run.dir, model, report, run.cfg)
