"""A run, the same for every kind of task: the run folder with its settings, the one Engine
around a strategy (optimizer, schedule, callbacks, checkpoints, resume), and what a run leaves
behind (the bundle of the best weights, report.json/html, the console summary).

    run = prepare(FitConfig, None, {"data": "photos/"}, name=lambda c: c.model)
    engine, state = train_model(run, model, Supervised(...), train_loader, val_loader)
    return finish(run, model, report, state, meta, examples)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from .. import config as cfgmod
from ..config import Settings
from ..errors import BundleError, ConfigError
from .bundle import save_bundle
from .device import precision_warning, resolve_device, threads as device_threads
from .engine import Checkpointer, EarlyStopping, Engine, MetricsLogger, Progress, TimeLimit, build_optimizer, build_schedule
from .engine import distributed, lr_find
from .engine.checkpoint import load_checkpoint
from .fs import atomic_write_text, remove_stale_temps, storage_errors
from .memory import accumulation
from .report import print_summary, write_report
from .tracking import EpochMetrics, track

log = logging.getLogger("tuneforge")
FAILED = "failed.json"  # core/leaderboard.py reads it


def setup(threads: int, device: torch.device | None = None) -> None:
    """Logging to the console (unless the caller set it up) and torch's compute threads (chosen
    per device: core/device.threads)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(message)s", level=logging.INFO)
    # processes of a data-parallel run on one machine share its cores
    cores = max(1, (os.cpu_count() or 1) // distributed.local_world())
    torch.set_num_threads(device_threads(device or torch.device("cpu"), threads, cores))


@dataclass
class Run:
    """Resolved settings, the run folder, the checkpoint to resume from and the start time.
    `resuming`: continuing an existing run folder; nothing in it is written until the run's
    identity (settings, data, checkpoint) is checked, then `commit()` writes config.yaml."""
    cfg: Any
    dir: Path
    resume_ckpt: dict | None = None
    t_start: float = field(default_factory=time.perf_counter)
    resuming: bool = False
    committed: bool = False
    created: Path | None = None  # the outermost folder open_run made (removed again if the run is refused)
    callbacks: tuple = ()  # the caller's own Callbacks (api.fit's `callbacks=`), run by train_model's engine
    range_test: dict | None = None  # api.lr_find: train_model runs only the range test, with these settings
    lr_found: dict | None = None  # `--lr auto`: the range test's result, for report.json
    memory: dict | None = None  # core/memory.plan_memory: the step's estimate and split, for the Engine and report.json
    warnings: list[str] = field(default_factory=list)  # said on the console and kept for report.json
    tracker: Any = None  # core/tracking.py's (--track mlflow), started with the first commit
    # data-parallel runs: on ranks other than 0, `dir` is a private temporary folder (whatever a
    # kind writes there is thrown away) and this is the run folder rank 0 writes
    main_dir: Path | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # --device, resolved (core/device.py)

    def warn(self, message: str) -> None:
        """A warning about this run: on the console now, and in report.json's "warnings" (and at
        the top of report.html) when the run finishes."""
        log.warning("%s", message)
        self.warnings.append(message)

    def commit(self) -> None:
        """Write config.yaml (atomically; once). A new run commits in open_run; a resumed one in
        train_model, after its data and checkpoint are known to be this run's."""
        if not self.committed:
            for folder in (self.dir, self.dir / "checkpoints", self.dir / "plots"):
                remove_stale_temps(folder)  # left by a writer killed mid-write (SIGKILL, power cut)
            (self.dir / FAILED).unlink(missing_ok=True)  # a resumed run is no longer the failed one
            write_config(self.cfg, self.dir / "config.yaml")
            self.committed = True
            if self.tracker is None:  # its settings are final now (a resumed run's identity is checked)
                self.tracker = track(self.cfg, self.dir, self.resuming)

    def discard(self) -> None:
        """Remove the folder open_run made for this run, if no epoch was saved in it: a command
        refused after open_run (unreadable data, say) leaves nothing behind."""
        if self.created is not None and not (self.dir / "checkpoints" / "last.pt").exists():
            shutil.rmtree(self.dir, ignore_errors=True)
            # parents it made go only if empty: another run may have started in runs/ meanwhile
            for parent in self.dir.parents:
                if self.created not in (parent, *parent.parents):
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break
            self.created = None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.main_dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        if exc_type is None and self.tracker is not None and not self.tracker.ended:
            # a kind that writes its report itself, not through finish (--model auto)
            report = json.loads((self.dir / "report.json").read_text()) if (self.dir / "report.json").is_file() else {}
            self.tracker.finish(report, self.dir)
        if exc_type is not None:
            if self.tracker is not None:
                self.tracker.end("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")
            self.discard()
            if self.dir.is_dir() and self.committed:  # epochs were saved: the folder stays, saying why it ended
                self.failed(exc)

    def failed(self, exc: BaseException) -> None:
        """failed.json: the error that ended a run whose saved epochs keep its folder (`tuneforge runs`
        shows it as failed, or interrupted for Ctrl-C outside the epochs); `--resume` removes it."""
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        try:
            atomic_write_text(self.dir / FAILED, json.dumps({"error": what}) + "\n")
        except OSError:
            pass  # the disk that failed the run may fail this too: the error itself is what matters


class RangeTestDone(Exception):
    """Raised by train_model for api.lr_find once the range test ran: the kind's fit has built the
    model, strategy and loaders the real fit would use, and must stop there (no training, no bundle)."""

    def __init__(self, result: dict):
        super().__init__("learning-rate range test done")
        self.result = result


@dataclass
class FitResult:
    """What a fit leaves: the run folder, the model with its best weights, the report (report.json's
    content), the resolved settings and the per-epoch `history` (metrics.jsonl's rows). The API
    returns its subclass with `predict` and `evaluate` (tuneforge/api.py)."""
    run_dir: Path
    model: torch.nn.Module
    report: dict
    config: Any
    history: list[dict] = field(default_factory=list)


def write_config(cfg: Settings, path: Path) -> None:
    """config.yaml, atomically (cfgmod.write_yaml's content)."""
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def resume_safe(cls: type[Settings]) -> list[str]:
    """The settings `--resume` may change (field metadata `resume_safe`, config.py)."""
    return [f.name for f in cls.offered() if f.metadata.get("resume_safe")]


# Settings naming a path: the same file spelled another way (relative, absolute) is no change.
_PATHS = ("data", "val", "test", "unlabeled", "weights", "init", "image_root", "probe")


def _same(name: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if name in _PATHS and isinstance(a, str) and isinstance(b, str):
        return os.path.realpath(a) == os.path.realpath(b)
    return False


def _resumed_settings(cls: type[Settings], run_dir: Path, given: dict) -> Settings:
    """The run's own settings (its config.yaml) with the given ones laid over them, refusing
    any change to a setting that shapes training: a resumed run must compute what the
    uninterrupted run would have (same model, data, split, seed, optimizer...). Only the
    `resume_safe` settings may change. Reads only; raises before anything is written."""
    recorded = cfgmod.read_yaml(run_dir / "config.yaml")
    forced = {"resume": str(run_dir), "out": str(run_dir), "overwrite": False}
    old = cfgmod.build(cls, recorded, forced)
    new = cfgmod.build(cls, recorded, given, forced)
    safe = set(resume_safe(cls))
    changed = [f.name for f in cls.offered()
               if f.name not in safe and not _same(f.name, getattr(old, f.name), getattr(new, f.name))]
    if changed:
        what = "; ".join(f"{cfgmod.flag(n)} {getattr(new, n)!r} (the run has {getattr(old, n)!r})" for n in changed)
        raise ConfigError(
            f"--resume {run_dir}: {what}: a resumed run keeps the settings it started with, so that it ends "
            f"where the uninterrupted run would. Drop {'this flag' if len(changed) == 1 else 'these flags'}, or "
            f"start a new run (another --out). Settings that may change on resume: "
            f"{', '.join(cfgmod.flag(n) for n in sorted(safe - {'resume'}))}")
    # a path given another way stays as recorded, so config.yaml does not churn
    return cfgmod.build(cls, recorded, {k: v for k, v in given.items() if k.replace("-", "_") in safe}, forced)


def settings(cls: type[Settings], config: Settings | None, kwargs: dict, recipes: bool = True) -> tuple[Settings, Path | None]:
    """The validated settings of a new or resumed run (a recipe laid under the given settings;
    on --resume the run's own config.yaml, of which only the resume-safe settings may change)
    and the folder to resume, if any."""
    explicit = {**(config.explicit() if config else {}), **kwargs}
    cfg = cfgmod.build(cls, cfgmod.with_recipe(explicit) if recipes else explicit)
    resume = getattr(cfg, "resume", None)
    if resume and explicit.get("overwrite"):
        raise ConfigError(f"--resume {resume} continues the run in that folder and --overwrite empties it: give one of them")
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").exists():
            raise ConfigError(f"--resume: {run_dir} is not a run folder (no config.yaml)")
        given = {k: v for k, v in explicit.items() if k != "resume"}
        return _resumed_settings(cls, run_dir, given).validate(), run_dir
    return cfg.validate(), None


def open_run(cfg: Settings, resume_dir: Path | None, name: str) -> Run:
    """Create a new run folder and write config.yaml (once, after every setting is resolved, so
    config.yaml and report.json always agree), or reopen a run to resume: its last checkpoint
    is read, nothing is written (see Run.commit). In a data-parallel run rank 0 alone does this
    and shares the outcome (folder, checkpoint, or the refusal) with the other ranks."""
    device = resolve_device(getattr(cfg, "device", "cpu"))  # an absent device is refused before any folder is made
    nproc, world = getattr(cfg, "nproc", 1), distributed.world()
    if world > 1 and device.type == "cuda" and device.index is None:  # one GPU per process of this machine
        device = torch.device("cuda", distributed.local_rank())
    if world > 1 and device.type != "cuda":  # NCCL moves CUDA tensors only: a CPU run on a GPU machine takes gloo
        os.environ.setdefault("TUNEFORGE_DIST_BACKEND", "gloo")
    setup(cfg.threads, device)
    if nproc > 1 and world != nproc:
        raise ConfigError(f"--nproc {nproc}: this is {world} process(es): " + (
            f"torchrun started {world}; drop --nproc (torchrun's --nproc-per-node decides)" if world > 1 else
            f"one process cannot start the others from Python: run `tuneforge fit --nproc {nproc} ...` (which "
            f"starts them), or the script under `torchrun --nproc-per-node {nproc} script.py`"))
    if world > 1:
        shared = distributed.on_main(lambda: _open_run(cfg, resume_dir, name, device),
                                     lambda run: (str(run.dir), run.resume_ckpt, run.resuming))
        if distributed.is_main():
            return shared
        folder, ckpt, resuming = shared
        return Run(cfg, Path(tempfile.mkdtemp(prefix=f"tuneforge-rank{distributed.rank()}-")), ckpt, resuming=resuming,
                   committed=True, main_dir=Path(folder), device=device)
    return _open_run(cfg, resume_dir, name, device)


def _open_run(cfg: Settings, resume_dir: Path | None, name: str, device: torch.device) -> Run:
    if resume_dir is not None:
        last = resume_dir / "checkpoints" / "last.pt"
        # killed before its first epoch ended: nothing to continue, the run starts at epoch 1
        ckpt = load_checkpoint(last) if last.exists() else None
        if ckpt is None:
            log.info("%s has no complete epoch yet: starting it from epoch 1", resume_dir)
        return Run(cfg, resume_dir, ckpt, resuming=True, device=device)
    run_dir = Path(cfg.out) if cfg.out else _default_dir(name)
    _claim(run_dir, bool(getattr(cfg, "overwrite", False)))
    created = next((p for p in [run_dir, *run_dir.parents] if p.parent.exists()), run_dir) if not run_dir.exists() else None
    with storage_errors(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(cfg, run_dir, created=created, device=device)
    try:
        run.commit()
    except BaseException:
        run.discard()
        raise
    return run


def _default_dir(name: str) -> Path:
    """runs/NAME-TIMESTAMP, with -2, -3... when a run of the same second has it (two runs started
    together by a script): only a folder named by the user is refused for existing. A model name's
    ':' and '/' (`timm:NAME`, `hf:PATH`) become '-': one folder, a name every file system takes."""
    name = re.sub(r"[^\w.-]+", "-", name).strip("-") or "run"
    base = Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    return run_dir


def _claim(run_dir: Path, overwrite: bool) -> None:
    """Refuse an --out folder that holds anything, before anything is written: writing a new
    run over an old one would mix the two (the old TensorBoard events, plots, checkpoints stay).
    `overwrite` empties a run folder first; a folder that is not a run (no config.yaml) is
    never emptied, so a mistyped --out cannot wipe a folder of the user's."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir}: exists and is not a folder; choose another --out")
    entries = list(run_dir.iterdir())
    if not entries:
        return
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--out {run_dir}: holds {len(entries)} file(s) and is not a run folder (no config.yaml); "
                          f"refusing to write a run into it: choose a new or empty --out")
    if not overwrite:
        raise ConfigError(f"--out {run_dir}: holds a run already. Continue it with `tuneforge fit --resume {run_dir}`, "
                          f"replace it with --overwrite, or choose another --out")
    log.info("--overwrite: emptying %s", run_dir)
    with storage_errors(run_dir):
        for p in entries:
            # the folder itself stays (it may be a mount point or a link the user made)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


def prepare(cls: type[Settings], config: Settings | None, kwargs: dict, name: Callable[[Any], str],
            resolve: Callable[[Any], None] | None = None, recipes: bool = True) -> Run:
    """settings() + the caller's resolution of derived settings + open_run()."""
    cfg, resume_dir = settings(cls, config, kwargs, recipes)
    if resolve is not None:
        resolve(cfg)
    return open_run(cfg, resume_dir, name(cfg))


_TABLES = (".csv", ".tsv", ".jsonl", ".json", ".txt", ".parquet")  # a datasets folder: its .json files


def rate_unit(cfg: Any, loader: Any) -> str:
    """What the progress rate counts ("images/s", "texts/s"...): the engine counts rows of any
    kind, so the unit is told by the data and loader. A guess, never an error: "samples"."""
    if getattr(cfg, "sequence_column", None) or getattr(cfg, "id_column", None):
        return "sequences"
    if getattr(cfg, "date_column", None):  # forecasting (tasks/forecast)
        return "windows"
    kind = type(loader).__name__
    if kind == "BatchLoader" and getattr(cfg, "task", None) == "regression" and not getattr(cfg, "text_column", None):
        return "images"  # image regression (tasks/regression); text regression trains through SequenceBatchLoader
    if kind == "BatchLoader" and getattr(cfg, "multi_label", False) and getattr(cfg, "image_column", None):
        return "images"  # multi-label image tables (tasks/multilabel_images)
    if kind in ("MultimodalLoader", "PairLoader"):
        return "samples" if kind == "MultimodalLoader" else "pairs"
    if kind == "SequenceBatchLoader":
        return "texts"
    data = Path(cfg.data) if getattr(cfg, "data", None) else None
    if data is None:
        return "samples"
    # text tables also train through BatchLoader when the frozen encoder's features are cached
    if data.is_file():
        return "texts" if data.suffix.lower() in _TABLES else "samples"
    if data.is_dir() and any(p.suffix.lower() in _TABLES for p in data.iterdir()):
        return "texts"
    return "images"


# A validation set smaller than this, in all or per class on average, does not tell epochs apart:
# an accuracy on n examples is known to about +-0.5/sqrt(n) (one standard error at 50%), +-9
# points at 30, more than a good epoch gains over a bad one on data this small; and at under 3 a
# class most classes are scored on one or two examples. Selecting on it picks noise, so it is not
# selected on: no early stopping, no best-epoch restore, the last epoch is the model.
MIN_VAL = 30
MIN_VAL_PER_CLASS = 3


def _num_classes(loader: Any) -> int | None:
    """Classes of a classifier's training labels (None for regression and unlabelled pairs)."""
    labels = getattr(loader, "labels", None)
    if not torch.is_tensor(labels) or labels.is_floating_point() or not len(labels):
        return None
    return int(labels.unique().numel())


def selects_on(run: Run, train_loader: Any, val_loader: Any) -> bool:
    """Whether the validation set is large enough to choose epochs by (MIN_VAL); says so when not."""
    if val_loader is None:
        return False
    n, classes = val_loader.num_samples, _num_classes(train_loader)
    need = max(MIN_VAL, MIN_VAL_PER_CLASS * (classes or 0))
    if n >= need:
        return True
    cfg = run.cfg
    what = rate_unit(cfg, val_loader).split("/")[0]
    per = f", {n / classes:.1f} per class" if classes else ""
    flags = " or ".join(cfgmod.flag(f) for f in ("val_fraction", "val", "val_list")
                        if f in {g.name for g in type(cfg).offered()})
    noise = f" (an accuracy on {n} is known to about +-{50 / n ** 0.5:.0f} points)" if classes else ""
    run.warn(f"validation set too small to select on: {n} {what}{per}{noise}. Early stopping and the best-epoch restore are off: the last epoch is "
             f"the model. For selection give a validation set of at least {need}" + (f" ({flags})" if flags else ""))
    return False


def train_model(run: Run, trainable: torch.nn.Module, strategy, train_loader, val_loader, default_lr: float | None = None,
          extra_callbacks: tuple = ()) -> tuple[Engine, dict]:
    """Optimizer, schedule, callbacks and the one Engine, for every kind of task. A validation set
    too small to select on (`selects_on`) is still evaluated every epoch, but the last epoch is kept.
    A loader's `warnings` (messages about its setup, e.g. a semi-supervised fit of too few steps)
    are said through `run.warn` before training. With torchrun (more than one process) each rank
    trains on its shard of every epoch through the same Engine (core/engine/distributed.py); rank 0
    alone chooses (--lr auto, the micro-batch split, when to stop) and writes the run folder."""
    cfg = run.cfg
    parallel = distributed.world() > 1
    if parallel:
        _shard(train_loader)
    wd = cfg.weight_decay if cfg.weight_decay is not None else {"adamw": 0.05, "sgd": 5e-4}.get(cfg.optimizer, 0.0)
    lr = cfg.lr or default_lr or (0.05 if cfg.optimizer == "sgd" else 1e-3)
    if run.range_test is not None or lr == "auto":
        lr = distributed.on_main(lambda: _range_test(run, trainable, strategy, train_loader, wd))
    for message in getattr(train_loader, "warnings", ()):
        run.warn(message)
    select = selects_on(run, train_loader, val_loader)
    steps = len(train_loader) * cfg.epochs
    optimizer = build_optimizer(trainable, cfg.optimizer, lr, wd, cfg.momentum)
    scheduler = build_schedule(optimizer, cfg.schedule, steps, int(cfg.warmup_epochs * len(train_loader)))
    # without selection (no or a too small validation set) the last epoch is the model
    early = [EarlyStopping(cfg.monitor, cfg.patience, run.main_dir or run.dir)] if select else []
    callbacks = [*extra_callbacks, *early, Checkpointer(run.dir), MetricsLogger(run.dir, cfg.tensorboard),
                 *([EpochMetrics(run)] if getattr(cfg, "track", None) else []), Progress(cfg.progress, unit=rate_unit(cfg, train_loader)),
                 *run.callbacks]  # the caller's last: they see each record complete and, at the end, the best weights
    if getattr(cfg, "max_minutes", None):
        callbacks.insert(0, TimeLimit(cfg.max_minutes))
    if not distributed.is_main():
        # rank 0's callbacks decide when to stop (Engine.fit shares it) and write; the others keep only
        # early stopping, which puts back the same best weights on every rank (it writes best.pt only
        # when a Checkpointer asks, and reads rank 0's on --resume)
        callbacks = early
    if (note := precision_warning(cfg.precision, run.device)) is not None:
        run.warn(note)
    engine = Engine(trainable, strategy, optimizer, scheduler, callbacks, cfg.precision, cfg.grad_clip, cfg.seed, cfg.epochs,
                    distributed.on_main(lambda: accumulation(run)), run.device)
    if parallel:  # after Engine placed the model on its device: DDP wraps it there
        engine.state["world"] = distributed.world()  # checked on --resume (_same_world)
        engine.forward_model, engine.grad_sync = distributed.wrap(
            trainable, getattr(strategy, "forwards_model", False), getattr(cfg, "sync_bn", False))
    if run.lr_found is not None:
        engine.state["lr_auto"] = lr  # in every checkpoint: a resumed run keeps the rate it started with
    if run.resume_ckpt is not None:
        _same_world(run)
        try:
            engine.load_checkpoint(run.resume_ckpt)
        except (RuntimeError, KeyError, ValueError) as e:
            # settings and data were checked; a checkpoint that still does not fit was written
            # by another version of tuneforge or by another run
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BundleError(f"{run.dir / 'checkpoints' / 'last.pt'}: does not fit the model of this run's "
                              f"config.yaml ({first}); resume from the run that wrote it, or start a new run") from e
        log.info("resuming %s after epoch %d", run.dir, engine.state["epoch"])
    run.commit()  # the resumed run's identity is checked: its (resume-safe) changes are recorded now
    try:
        with distributed.stop_on_interrupt(engine.request_stop):
            state = engine.fit(train_loader, val_loader)
    finally:
        engine.to_cpu()  # the task's report, examples and bundle read the model on the CPU
    if not select:
        state["best_epoch"] = state["epoch"]
    return engine, state


def _shard(loader: Any) -> None:
    """This rank's shard of every epoch (core/data/order.shard), for the loaders that take one."""
    if not hasattr(loader, "world"):
        raise ConfigError(f"--nproc {distributed.world()}: this kind of fit trains from a {type(loader).__name__}, which does "
                          f"not shard its epochs across processes yet; run it in one process (no torchrun, no --nproc)")
    loader.rank, loader.world = distributed.rank(), distributed.world()


def _same_world(run: Run) -> None:
    """A data-parallel run resumes with as many processes as it ran with: each epoch's shards, and
    so the batches and weights, depend on the number."""
    was, now = run.resume_ckpt.get("engine", {}).get("world", 1), distributed.world()
    if was != now:
        raise ConfigError(f"--resume {run.main_dir or run.dir}: the run trained in {was} process(es) and this is {now}: resume "
                          f"it with --nproc {was} (or torchrun --nproc-per-node {was}), so that it continues on the same "
                          f"shards and ends where the uninterrupted run would")


def _range_test(run: Run, trainable: torch.nn.Module, strategy, train_loader, weight_decay: float) -> float:
    """`--lr auto` (or api.lr_find, which stops here): the learning-rate range test on copies of
    the model and strategy the fit is about to train; returns the suggested rate."""
    cfg = run.cfg
    if run.range_test is None and run.resume_ckpt is not None and "lr_auto" in run.resume_ckpt.get("engine", {}):
        lr = run.resume_ckpt["engine"]["lr_auto"]
        run.lr_found = {"suggested": lr, "from": "the run's checkpoint"}
        log.info("--lr auto: %.3g (chosen when the run started)", lr)
        return lr
    options = run.range_test or {}
    result = lr_find.range_test(
        trainable, strategy, train_loader, lambda m, lr: build_optimizer(m, cfg.optimizer, lr, weight_decay, cfg.momentum),
        options.get("start_lr", 1e-7), options.get("end_lr", 10.0), options.get("num_steps", 100), cfg.seed, cfg.grad_clip)
    result["plot"] = str(lr_find.plot(result, run.dir / "plots" / "lr_find.png"))
    lr_find.save(result, run.dir / "lr_find.json")
    if run.range_test is not None:
        raise RangeTestDone(result)
    run.lr_found = {k: result[k] for k in ("suggested", "steepest", "min_lr", "plot")}
    log.info("--lr auto: %.3g (learning-rate range test over %d steps, %.2g to %.2g; plot %s)", result["suggested"],
             len(result["lrs"]), result["lrs"][0], result["lrs"][-1], result["plot"])
    return result["suggested"]


def finish(run: Run, model: torch.nn.Module, report: dict, state: dict, meta: dict | None, examples: dict | None,
           save: Callable[[Path], None] | None = None, summary: Callable[[dict], None] | None = None) -> FitResult:
    """Timings, the bundle of the best weights (`save` writes a bundle of another layout),
    report.json/html and the console summary (by rank 0 alone in a data-parallel run)."""
    if run.main_dir is not None:
        return FitResult(run.main_dir, model, report, run.cfg, list(state["history"]))
    report["fit_s"] = round(state.get("fit_s", 0.0), 2)
    report["wall_s"] = round(time.perf_counter() - run.t_start, 2)
    if run.lr_found is not None:
        report["lr_auto"] = run.lr_found
    if run.memory is not None:
        report["memory"] = run.memory
    report["warnings"] = [*report.get("warnings", []), *run.warnings]
    run.commit()
    with storage_errors(run.dir / "model"):
        if save is not None:
            save(run.dir / "model")
        elif meta is not None:
            save_bundle(run.dir / "model", model, meta)
    paths = write_report(run.dir, report, state["history"], examples)
    report["html_path"] = str(paths["html"])
    if run.tracker is not None:
        run.tracker.finish(report, run.dir)
    if run.cfg.progress:
        (summary or print_summary)(report)
    return FitResult(run.dir, model, report, run.cfg, list(state["history"]))
