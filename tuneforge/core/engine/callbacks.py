"""Callbacks: early stopping with restore-best, checkpoints, metric logs, progress display.
Each one keeps its own state in `state_dict()` so that resume restores it too."""
from __future__ import annotations

import copy
import csv
import io
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING


from .. import progress
from ..fs import atomic_write_text
from .checkpoint import atomic_save, load_checkpoint

if TYPE_CHECKING:
    from .loop import Engine

log = logging.getLogger("tuneforge")


class Callback:
    """The public way to watch or steer training (`tuneforge.Callback`; `tuneforge.fit(...,
    callbacks=[...])`). Override any of the hooks; each gets the `engine`, whose useful parts are
    `engine.model` (the module being trained), `engine.optimizer`, `engine.epochs` (the maximum),
    `engine.state` ("epoch": epochs done, "step": optimizer steps, "history": the epoch records so
    far) and `engine.request_stop(reason)`, which ends training after the current epoch (the best
    weights are still restored, and `reason` becomes the report's "stopped_because").

        class StopAt(tuneforge.Callback):
            def on_epoch_end(self, engine, record):
                if record["val_accuracy"] > 0.9:
                    engine.request_stop("good enough")

    Your callbacks run after tuneforge's own (early stopping, checkpoints, logs, progress), so an
    epoch's record is complete when you see it. A callback with state that must survive `--resume`
    returns it from `state_dict()` and takes it back in `load_state_dict()` (saved in every
    checkpoint under the class's name)."""

    def on_fit_start(self, engine: "Engine") -> None:
        """Before the first epoch (of this call: a resumed run starts at its next epoch)."""

    def on_epoch_start(self, engine: "Engine", epoch: int, num_batches: int) -> None:
        """Before epoch `epoch` (counted from 0) of `num_batches` training batches."""

    def on_batch_end(self, engine: "Engine", batch: int, stats: dict) -> None:
        """After each training step: `stats` holds the epoch's running "loss", "images_per_s" and,
        for classifiers, "accuracy"."""

    def on_epoch_end(self, engine: "Engine", record: dict) -> None:
        """After each epoch: `record` is its row of metrics.jsonl ("epoch" from 1, "train_loss",
        "val_loss", "val_accuracy", "lr", ...). Call `engine.request_stop(reason)` to stop."""

    def on_fit_end(self, engine: "Engine") -> None:
        """After the last epoch, however training ended (also Ctrl-C); the best weights are in
        `engine.model` by now."""

    def state_dict(self) -> dict:
        """What `--resume` must restore of this callback (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Take back what `state_dict` returned, when a run is resumed."""


class EpochMeasure(Callback):
    """A number measured on the model in eval mode before training (kept in the engine state
    under `start_key`, so a resumed run keeps its real starting point) and after every epoch
    (into the epoch record under `record_key`). Subclasses say what `score` measures."""

    start_key = record_key = label = ""

    def score(self, model) -> float:
        raise NotImplementedError

    def measure(self, model) -> float:
        """`score` in eval mode, on the CPU where the measure's data is (a model trained on a GPU
        visits it for the measure and goes back)."""
        was = model.training
        first = next(model.parameters(), None)
        device = first.device if first is not None else "cpu"
        model.eval().cpu()
        try:
            return self.score(model)
        finally:
            model.to(device).train(was)

    def on_fit_start(self, engine: "Engine") -> None:
        if self.start_key not in engine.state:
            engine.state[self.start_key] = self.measure(engine.model)
            log.info("%s before training: %.4f", self.label, engine.state[self.start_key])

    def on_epoch_end(self, engine: "Engine", record: dict) -> None:
        record[self.record_key] = self.measure(engine.model)


BEST_EPOCH = "__best_epoch__"  # the key of best.pt that says which epoch its weights are


class EarlyStopping(Callback):
    """Stops after `patience` epochs without improvement of `monitor` (0: never stops early)
    and, however training ends (patience, last epoch, Ctrl-C), puts back the best weights."""

    def __init__(self, monitor: str = "val_accuracy", patience: int = 3, run_dir: Path | None = None,
                 min_delta: float = 0.0):
        self.monitor, self.patience, self.min_delta = monitor, patience, min_delta
        self.mode = "min" if monitor.endswith("loss") else "max"
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0
        self.best_weights: dict | None = None
        self.path = run_dir / "checkpoints" / "best.pt" if run_dir else None

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def on_epoch_end(self, engine: "Engine", record: dict) -> None:
        if self.monitor not in record:
            return  # no validation split: the last epoch is the model
        value = float(record[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.bad_epochs = value, record["epoch"], 0
            self.best_weights = copy.deepcopy(engine.model.state_dict())
            self._unsaved = True  # best.pt is written after last.pt (after_checkpoint)
        else:
            self.bad_epochs += 1
            if self.patience and self.bad_epochs >= self.patience:
                engine.request_stop("patience")

    def after_checkpoint(self, engine: "Engine") -> None:
        """best.pt, tagged with its epoch, written after last.pt: a kill between the two leaves
        last.pt naming epoch E as best while best.pt still holds an older best, and then the
        best weights are last.pt's own model (load_state_dict tells the two apart)."""
        if self.path and getattr(self, "_unsaved", False):
            atomic_save({**self.best_weights, BEST_EPOCH: self.best_epoch}, self.path)
            self._unsaved = False

    def on_fit_start(self, engine: "Engine") -> None:
        if getattr(self, "_best_is_model", False):
            self.best_weights = copy.deepcopy(engine.model.state_dict())
            self._best_is_model, self._unsaved = False, True

    def on_fit_end(self, engine: "Engine") -> None:
        if self.best_weights is not None:
            engine.model.load_state_dict(self.best_weights)
        engine.state["best_epoch"] = self.best_epoch or engine.state["epoch"]
        engine.state["best_" + self.monitor] = self.best
        self._say(engine)

    def _say(self, engine: "Engine") -> None:
        """The console line saying which weights the model now holds: without it the last epoch
        line (its own metric) and the summary (the restored epoch's) disagree, unexplained."""
        if self.best is None or self.best_weights is None:
            return
        last, why = engine.state["epoch"], engine.state.get("stopped_because")
        best = f"epoch {self.best_epoch} ({self.monitor} {self.best:.4f})"
        if why == "patience":
            log.info("early stopping after epoch %d: %s did not improve for %d epochs; restored the best weights, %s",
                     last, self.monitor, self.bad_epochs, best)
        elif self.best_epoch < last:
            ended = {"interrupted": "interrupted", "time_limit": "stopped at --max-minutes"}.get(why, "ended")
            log.info("training %s after epoch %d; restored the best weights, %s", ended, last, best)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        if self.path and self.path.exists():
            weights = load_checkpoint(self.path)
            saved_epoch = weights.pop(BEST_EPOCH, self.best_epoch)  # untagged: a run of an older tuneforge
            if saved_epoch == self.best_epoch:
                self.best_weights = weights
            else:
                # killed between last.pt and best.pt: the best epoch is last.pt's, whose model
                # the engine has just loaded (taken in on_fit_start)
                self._best_is_model = True


class Checkpointer(Callback):
    """checkpoints/last.pt after every epoch: everything `--resume` needs to continue exactly."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "checkpoints" / "last.pt"

    def on_epoch_end(self, engine: "Engine", record: dict) -> None:
        atomic_save(engine.checkpoint(), self.path)
        for cb in engine.callbacks:  # files that must not be newer than last.pt (best.pt)
            after = getattr(cb, "after_checkpoint", None)
            if after is not None:
                after(engine)


class MetricsLogger(Callback):
    """metrics.jsonl and metrics.csv (one row per epoch) and TensorBoard events in tensorboard/."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.run_dir = run_dir
        self.tensorboard = tensorboard
        self.writer = None

    def on_fit_start(self, engine: "Engine") -> None:
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                log.warning("tensorboard is not installed; writing metrics.jsonl/csv only")

    def on_epoch_end(self, engine: "Engine", record: dict) -> None:
        self._write(engine.state["history"])
        if self.writer:
            for k, v in record.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.writer.add_scalar(k.replace("_", "/", 1), v, record["epoch"])
            self.writer.flush()

    def _write(self, history: list[dict]) -> None:
        # Both files rewritten whole from the engine's history, atomically: they always hold
        # the epochs of a checkpoint (a resumed run drops an epoch its kill left half-logged)
        atomic_write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        keys = list(dict.fromkeys(k for r in history for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, keys)
        w.writeheader()
        w.writerows(history)
        atomic_write_text(self.run_dir / "metrics.csv", buf.getvalue())

    def on_fit_end(self, engine: "Engine") -> None:
        if self.writer:
            self.writer.close()


class Progress(Callback):
    """A live bar (loss, accuracy, images/s, ETA) per epoch and one for the whole run (its ETA
    covers every epoch left) on a terminal; one plain line per epoch otherwise (and a progress
    line at most every 30 s of a long epoch), so logs of CI and batch jobs stay readable. Early in
    the first epoch (after 3 steps or 5 s) a line estimates the whole run's time, measured on the
    steps so far. `unit`: what the rate counts ("images", "texts", "samples"; the record key stays
    `images_per_s` for every kind)."""

    ESTIMATE_STEPS, ESTIMATE_SECONDS = 3, 5.0

    def __init__(self, enabled: bool = True, live: bool | None = None, unit: str = "images"):
        self.enabled = enabled
        self.unit = {"images": "img"}.get(unit, unit)
        self.live = progress.is_tty() if live is None else live
        self.run: progress.Phase | None = None
        self.epoch: progress.Phase | None = None
        self.estimated = False

    def on_epoch_start(self, engine: "Engine", epoch: int, num_batches: int) -> None:
        self.t0 = time.perf_counter()
        self.num_batches, self.epoch_index, self.t_first = num_batches, epoch, None
        if not self.enabled:
            return
        if self.run is None:
            total = (engine.epochs - epoch) * num_batches
            self.run = progress.Phase("run", total, "steps", self.live, every=30.0, transient=False, keep=True).start()
        if self.live:
            self.epoch = progress.Phase(f"epoch {epoch + 1}/{engine.epochs}", num_batches, "steps", True).start()

    def on_batch_end(self, engine: "Engine", batch: int, stats: dict) -> None:
        if not self.enabled:
            return
        def info() -> str:
            # read only when a line or bar is drawn: reading the loss waits for the device
            s = f"loss {stats['loss']:.3f}"
            if "accuracy" in stats:
                s += f" acc {stats['accuracy']:.3f}"
            return s + f" {stats['images_per_s']:.0f} {self.unit}/s"

        if self.epoch is not None:
            self.epoch.advance(1, info)
        self.run.advance(1, "" if self.live else info)
        if not self.estimated:
            self._estimate(engine, batch + 1)

    def _estimate(self, engine: "Engine", steps: int) -> None:
        """The run's time from the first steps of this fit: the first step pays one-time costs
        (allocations, kernel choice), so with more than one the rate is taken after it."""
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first = now
        if steps < min(self.ESTIMATE_STEPS, self.num_batches) and now - self.t0 < self.ESTIMATE_SECONDS:
            return
        self.estimated = True
        per_step = (now - self.t_first) / (steps - 1) if steps > 1 else now - self.t0
        epochs = engine.epochs - self.epoch_index
        total = now - self.t0 + per_step * (epochs * self.num_batches - steps)
        log.info("estimate: ~%s for %d epoch(s) x %d steps (%.2g s/step, measured on the first %d step(s); "
                 "validation not included)", progress.duration(total), epochs, self.num_batches, per_step, steps)

    def on_epoch_end(self, engine: "Engine", record: dict) -> None:
        if not self.enabled:
            return
        if self.epoch is not None:
            self.epoch.close()
            self.epoch = None
        parts = [f"epoch {record['epoch']}/{engine.epochs}"]
        parts += [f"{k} {v:.4f}" for k, v in record.items() if k.endswith(("loss", "accuracy", "micro_f1"))]
        parts += [f"{record.get('images_per_s', 0):.0f} {self.unit}/s", f"{record.get('epoch_s', 0):.1f}s"]
        progress.echo("  ".join(parts))

    def on_fit_end(self, engine: "Engine") -> None:
        for p in (self.epoch, self.run):
            if p is not None:
                p.close()
        self.epoch = self.run = None


class TimeLimit(Callback):
    """Stops training before the epoch that would end after `minutes` (from the start of this
    fit call), judged by the last epoch's duration. Epoch granularity: the engine checks stop
    requests between epochs, so semi-supervised epochs are kept short (`--semi-steps`)."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60

    def on_fit_start(self, engine) -> None:
        self.t0 = time.perf_counter()

    def on_epoch_end(self, engine, record: dict) -> None:
        now = time.perf_counter() - self.t0
        if now + record.get("epoch_s", 0.0) > self.seconds:
            engine.request_stop("time_limit")
