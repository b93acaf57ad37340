"""The one training loop. It knows nothing of images or text: a strategy turns batches into
losses (and may define `after_step(model)`, called right after each optimizer step: where EMA
teachers and targets follow), callbacks do the bookkeeping, and this file owns epochs,
precision, clipping, the per-epoch RNG and the checkpoint contents."""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Iterable, Iterator

import torch
from torch import nn

from ..device import autocast, grad_scaler, to_device
from . import distributed
from .callbacks import Callback, Checkpointer

log = logging.getLogger("tuneforge")


def rows(batch) -> int:
    """Samples in a batch: the length of its last element (the labels of `(inputs, labels)`)."""
    return len(batch[-1]) if isinstance(batch, (tuple, list)) else len(batch)


def split_batch(batch, k: int) -> list:
    """`batch` as k micro-batches along dim 0: tensors, tuples/lists and dicts of them (nested),
    every tensor cut into k near-equal parts (so a semi-supervised step's labelled and unlabeled
    parts keep their ratio); anything else is passed to every part as it is."""
    if isinstance(batch, torch.Tensor):
        return list(torch.tensor_split(batch, k))
    if isinstance(batch, dict):
        parts = {key: split_batch(v, k) for key, v in batch.items()}
        return [{key: p[i] for key, p in parts.items()} for i in range(k)]
    if isinstance(batch, (tuple, list)):
        parts = [split_batch(v, k) for v in batch]
        return [type(batch)(p[i] for p in parts) for i in range(k)]
    return [batch] * k


class StepStats(Mapping):
    """The epoch's running "loss", "images_per_s" and (classifiers) "accuracy" that
    `on_batch_end` receives. Loss and accuracy are sums kept on the device: a value is copied to
    the host (a synchronisation of an asynchronous device) only when a callback reads it, e.g.
    when a progress line is drawn, so a step that nobody reads does not wait for the device.
    Read it during the call: the sums go on growing with the next step."""

    def __init__(self, loss_sum: torch.Tensor, n: int, correct: torch.Tensor | None, seen_cls: int, rate: float):
        self._loss_sum, self._n, self._correct, self._seen_cls, self._rate = loss_sum, n, correct, seen_cls, rate

    def _keys(self) -> tuple[str, ...]:
        return ("loss", "images_per_s", "accuracy") if self._seen_cls else ("loss", "images_per_s")

    def __getitem__(self, key: str) -> float:
        if key == "loss":
            return self._loss_sum.item() / self._n
        if key == "images_per_s":
            return self._rate
        if key == "accuracy" and self._seen_cls:
            return self._correct.item() / self._seen_cls
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:  # Mapping's would read (and wait for) the value
        return key in self._keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


def _sum_dtype(device: torch.device) -> torch.dtype:
    # float64 sums of each batch's loss x rows reproduce the host's float arithmetic bit for bit
    # (histories equal to those of a loop that reads every loss); MPS has no float64
    return torch.float32 if device.type == "mps" else torch.float64


def _device_of(model: nn.Module) -> torch.device | None:
    p = next(model.parameters(), None)
    return p.device if p is not None else None


class Engine:
    def __init__(self, model: nn.Module, strategy, optimizer: torch.optim.Optimizer | None = None,
                 scheduler=None, callbacks: Iterable[Callback] = (), precision: str = "fp32",
                 grad_clip: float | None = None, seed: int = 0, epochs: int = 1, accumulate: int = 1,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model, self.strategy = model, strategy
        # before any optimizer state exists (a resumed checkpoint's is loaded onto the parameters'
        # device): module.to keeps the Parameter objects the optimizer holds
        self._place(self.device)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.callbacks = list(callbacks)
        self.precision, self.grad_clip, self.seed, self.epochs = precision, grad_clip, seed, epochs
        self.scaler = grad_scaler(precision, self.device)  # fp16 only
        self.accumulate = accumulate  # micro-batches per optimizer step (gradient accumulation)
        self.state: dict = {"epoch": 0, "step": 0, "history": [], "stopped_because": None}
        self._stop: str | None = None
        # data-parallel (core/engine/distributed.wrap): the module training steps call
        # (DistributedDataParallel around `model`) and the gradient all-reduce it does not do itself
        self.forward_model: nn.Module = model
        self.grad_sync = None

    def autocast(self):
        return autocast(self.precision, self.device)

    def _place(self, device: torch.device) -> None:
        """The model and whatever modules the strategy holds (teachers, targets) on `device`."""
        self.model.to(device)
        for value in getattr(self.strategy, "__dict__", {}).values():
            if isinstance(value, nn.Module):
                value.to(device)

    def request_stop(self, reason: str) -> None:
        self._stop = reason

    def _generator(self, epoch: int) -> torch.Generator:
        # Everything random in epoch e (augmentation, dropout, order) derives from (seed, e):
        # a run resumed at epoch e replays exactly what an uninterrupted run would have done.
        torch.manual_seed(self.seed * 1_000_003 + epoch)
        return torch.Generator().manual_seed(self.seed * 7_919 + epoch)

    def train_epoch(self, loader, epoch: int) -> dict:
        self.forward_model.train()
        gen = self._generator(epoch)
        after_step = getattr(self.strategy, "after_step", None)
        # running sums stay on the device: no host synchronisation per step (StepStats)
        loss_sum = torch.zeros((), dtype=_sum_dtype(self.device), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        n, seen_cls = 0, 0
        t0 = time.perf_counter()
        for i, batch in enumerate(loader.epoch(epoch)):
            batch = to_device(batch, self.device)
            self.optimizer.zero_grad(set_to_none=True)
            out = self._forward_backward(batch, gen)
            if self.grad_sync is not None:  # data-parallel without DDP: gradients averaged across ranks
                self.grad_sync()
            self._optimizer_step()
            if after_step is not None:  # EMA teachers/targets follow the weights just stepped
                after_step(self.model)
            if self.scheduler is not None:
                self.scheduler.step()
            self.state["step"] += 1
            b = rows(batch)
            n += b
            loss_sum += out["loss"].detach().to(loss_sum.dtype) * b
            if "logits" in out and "targets" in out and out["targets"].ndim == 1:
                correct += (out["logits"].argmax(1) == out["targets"]).sum()
                seen_cls += b
            stats = StepStats(loss_sum, n, correct, seen_cls, n / (time.perf_counter() - t0))
            for cb in self.callbacks:
                cb.on_batch_end(self, i, stats)
        loss_total, correct_total = loss_sum.item(), correct.item()  # the epoch's one synchronisation
        n, loss_total, correct_total, seen_cls = distributed.all_reduce_sums(n, loss_total, correct_total, seen_cls)  # every rank's
        elapsed = time.perf_counter() - t0
        rec = {"train_loss": loss_total / max(n, 1), "images_per_s": n / elapsed, "train_s": elapsed}
        if seen_cls:
            rec["train_accuracy"] = correct_total / seen_cls
        return rec

    def _optimizer_step(self) -> None:
        """Clip and step; with fp16's scaler the gradients are unscaled first (so clipping sees
        their true norm) and a step whose gradients overflowed is skipped, the scale lowered."""
        if self.scaler is not None:
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _forward_backward(self, batch, gen: torch.Generator) -> dict:
        """The strategy's loss on `batch`, its gradient accumulated into the parameters; with
        `accumulate` k > 1 in k micro-batches (the batch split along dim 0), each loss weighted
        by its share of the batch's rows, so the summed gradient is the whole batch's mean-loss
        gradient (core/memory.py picks k when a whole batch would not fit in memory). Not
        bit-identical to one pass: BatchNorm normalises each micro-batch by its own statistics
        (and updates its running averages k times), and a semi-supervised step whose labelled
        and unlabeled parts do not split evenly weights their means slightly differently."""
        if self.accumulate <= 1:
            with self.autocast():
                out = self.strategy.train_step(self.forward_model, batch, gen)
            self._backward(out["loss"])
            return out
        total = rows(batch)
        outs: list[tuple[float, dict]] = []
        for part in split_batch(batch, self.accumulate):
            share = rows(part) / total
            if share == 0:
                continue  # a last batch smaller than k
            with self.autocast():
                out = self.strategy.train_step(self.forward_model, part, gen)
            self._backward(out["loss"] * share)
            outs.append((share, {k: v.detach() for k, v in out.items()}))
        merged = {"loss": sum(share * o["loss"] for share, o in outs)}
        for key in ("logits", "targets"):
            if all(key in o for _, o in outs):
                merged[key] = torch.cat([o[key] for _, o in outs])
        return merged

    def predict(self, loader) -> dict[str, torch.Tensor]:
        """Concatenated outputs of `eval_step` over a loader (eval mode, no augmentation), computed
        on the engine's device and returned on the CPU; the model goes back where it was."""
        was = _device_of(self.model)
        # moved outside inference mode: parameters copied inside it would become inference
        # tensors, which autograd refuses afterwards
        self._place(self.device)
        try:
            return self._predict(loader)
        finally:
            if was is not None and was != self.device:
                self._place(was)

    @torch.inference_mode()
    def _predict(self, loader) -> dict[str, torch.Tensor]:
        self.model.eval()
        outs: dict[str, list] = {}
        for batch in loader.epoch(0):
            batch = to_device(batch, self.device)
            with self.autocast():
                out = self.strategy.eval_step(self.model, batch)
            n = len(batch[-1])
            for k, v in out.items():
                outs.setdefault(k, []).append(v.float() * n if k == "loss" else v.float() if v.is_floating_point() else v)
        res = {k: torch.cat(v) if k != "loss" else torch.stack(v).sum() / loader.num_samples for k, v in outs.items()}
        return {k: v.cpu() for k, v in res.items()}

    def validate(self, loader) -> dict:
        out = self.predict(loader)
        rec = {"val_loss": out["loss"].item()}
        if "logits" in out and out["targets"].ndim == 2:  # multi-label: 0/1 per label, micro-F1 at 0.5
            pred, true = out["logits"] > 0, out["targets"] > 0.5
            tp = (pred & true).sum().item()
            rec["val_micro_f1"] = 2 * tp / max(1, pred.sum().item() + true.sum().item())
        elif "logits" in out:
            rec["val_accuracy"] = (out["logits"].argmax(1) == out["targets"]).float().mean().item()
        return rec

    def fit(self, train_loader, val_loader=None) -> dict:
        """Train from state["epoch"] to self.epochs; returns the state (history, best epoch,
        why it stopped). The best weights are in the model afterwards, whatever stopped it."""
        self.state["accumulate"] = self.accumulate
        for cb in self.callbacks:
            cb.on_fit_start(self)
        t_fit = time.perf_counter()
        try:
            for epoch in range(self.state["epoch"], self.epochs):
                for cb in self.callbacks:
                    cb.on_epoch_start(self, epoch, len(train_loader))
                t0 = time.perf_counter()
                record = {"epoch": epoch + 1, **self.train_epoch(train_loader, epoch)}
                if val_loader is not None:
                    record.update(distributed.on_main(lambda: self.validate(val_loader)))  # shared by every rank
                record["lr"] = self.optimizer.param_groups[0]["lr"]
                record["epoch_s"] = time.perf_counter() - t0
                self.state["history"].append(record)
                self.state["epoch"] = epoch + 1
                for cb in self.callbacks:
                    cb.on_epoch_end(self, record)
                self._stop = distributed.shared(self._stop)  # rank 0's callbacks decide for every rank
                if self._stop:
                    break
            self.state["stopped_because"] = self._stop or "max_epochs"
        except KeyboardInterrupt:
            self.state["stopped_because"] = "interrupted"
            self._say_interrupted()
        finally:
            self.state["fit_s"] = self.state.get("fit_s", 0.0) + time.perf_counter() - t_fit
            for cb in self.callbacks:
                cb.on_fit_end(self)
        return self.state

    def _say_interrupted(self) -> None:
        """Ctrl-C: where training stopped and how to go on (the run folder is Checkpointer's)."""
        done = self.state["epoch"]
        where = f"interrupted (Ctrl-C) during epoch {done + 1}/{self.epochs}"
        ckpt = next((cb.path for cb in self.callbacks if isinstance(cb, Checkpointer)), None)
        if ckpt is None:
            log.warning("%s, after %d complete epoch(s)", where, done)
            return
        run = ckpt.parent.parent
        saved = f"epochs 1-{done} are saved in {run}" if done else "no epoch was complete (--resume starts it from epoch 1)"
        log.warning("%s; %s. Continue with: tuneforge fit --resume %s", where, saved, run)

    def to_cpu(self) -> None:
        """The trained model (and the strategy's modules) back on the CPU, where a task's report,
        examples and bundle read it; `predict` still computes on the engine's device."""
        self._place(torch.device("cpu"))

    def checkpoint(self) -> dict:
        ckpt = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "engine": {k: v for k, v in self.state.items()},
                "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks}}
        if self.scaler is not None:  # fp16: the loss scale reached, so a resumed run goes on with it
            ckpt["scaler"] = self.scaler.state_dict()
        return ckpt

    def load_checkpoint(self, ckpt: dict) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.state.update(ckpt["engine"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        # a resumed run keeps the split it started with (BatchNorm sees micro-batches): exact resume
        self.accumulate = self.state.get("accumulate", self.accumulate)
        for cb in self.callbacks:
            if type(cb).__name__ in ckpt.get("callbacks", {}):
                cb.load_state_dict(ckpt["callbacks"][type(cb).__name__])
