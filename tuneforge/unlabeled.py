"""What `fit` needs for unlabeled data: `--init` (a pretrain run or weight file), the
semi-supervised setup (`--unlabeled DIR --semi METHOD`), and `--max-minutes`.

`setup_semi` turns the pieces `fit` already built (the model, what is trained, the supervised
strategy for evaluation, the decoded labelled images or their cached features) into a
`SemiModel`, a semi-supervised strategy and a `SemiLoader`; training is the same `api._train`,
the report gets a "semi" section (pseudo-labels per class)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .data.unlabeled import SemiLoader, load_unlabeled, relpaths
from .engine.callbacks import Callback
from .errors import ConfigError
from .strategies.semi import DEFAULT_WEIGHT, SEMI_METHODS, FeatureViews, PixelViews, SemiModel

log = logging.getLogger("tuneforge")

BACKBONE_FILE = "backbone.safetensors"


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


def resolve_init(init: str, model: str) -> str:
    """--init RUN_OR_FILE -> a backbone weight file. A pretrain run folder names its model;
    starting a different architecture from it is refused by name."""
    p = Path(init)
    if p.is_dir():
        f = p / BACKBONE_FILE
        if not f.is_file():
            raise ConfigError(f"--init: {p} has no {BACKBONE_FILE} (a `tuneforge pretrain` run folder writes one); "
                              "or pass a weight file")
        meta = p / "pretrain.json"
        if meta.is_file():
            trained = json.loads(meta.read_text()).get("model")
            if trained and trained != model:
                raise ConfigError(f"--init: {p} pretrained --model {trained}, but this fit uses --model {model}; "
                                  f"pass --model {trained}")
        return str(f)
    if p.is_file():
        return str(p)
    raise ConfigError(f"--init: no such file or run folder: {p}")


class PseudoLabelLog(Callback):
    """Adds the epoch's pseudo-label counts to its record (metrics.jsonl) and keeps the totals
    in the engine state, so they survive --resume and reach the report."""

    def __init__(self, strategy):
        self.strategy = strategy

    def on_epoch_end(self, engine, record: dict) -> None:
        s = self.strategy
        record["pseudo_label_rate"] = float(s.counts.sum()) / max(s.seen, 1)
        record["pseudo_labels"] = s.counts.tolist()
        total = engine.state.get("pseudo_labels_total") or [0] * len(s.counts)
        engine.state["pseudo_labels_total"] = [a + b for a, b in zip(total, s.counts.tolist())]
        s.reset_counts()


@dataclass
class SemiSetup:
    model: SemiModel
    strategy: object
    loader: SemiLoader
    callbacks: list
    info: dict

    def finish(self, state: dict, classes: list[str]) -> dict:
        """After training: the teacher (mean teacher) becomes the model; the report section."""
        self.model.copy_teacher_to_student()
        total = state.get("pseudo_labels_total") or [0] * len(classes)
        last = next((r["pseudo_labels"] for r in reversed(state["history"]) if "pseudo_labels" in r), [0] * len(classes))
        return {**self.info, "pseudo_labels_per_class": dict(zip(classes, total)),
                "pseudo_labels_last_epoch_per_class": dict(zip(classes, last)),
                "pseudo_label_rate_last_epoch": next((r["pseudo_label_rate"] for r in reversed(state["history"])
                                                      if "pseudo_label_rate" in r), None)}


def setup_semi(cfg, model, trainable, base_strategy, train, train_inputs: torch.Tensor, val_paths: list[str],
               test_paths: list[str], image_size: int, run_dir: Path,
               encode: Callable[[torch.Tensor], torch.Tensor] | None) -> SemiSetup:
    """`encode` is set when `fit` trains on cached frozen features/maps: the unlabeled images
    are encoded once the same way, and the views are feature views. Validation images are left
    out of the unlabeled pool; a test image in it is an error."""
    t0 = time.perf_counter()
    resolved = lambda paths: {str(Path(p).resolve()) for p in paths}
    pool = load_unlabeled(cfg.unlabeled, image_size, cfg.resize, cfg.cache_dir, cfg.workers, cfg.strict,
                          exclude=resolved(val_paths), forbid=resolved(test_paths))
    (run_dir / "unlabeled.json").write_text(json.dumps({"root": str(cfg.unlabeled), "images": len(pool),
                                                        "files": relpaths(pool.paths, cfg.unlabeled)}, indent=0))
    unl = encode(pool.images) if encode is not None else pool.images
    log.info("unlabeled: %d images from %s%s (%.1fs)", len(pool), cfg.unlabeled,
             ", encoded once by the frozen layers" if encode is not None else "", time.perf_counter() - t0)
    views = FeatureViews() if encode is not None else PixelViews()
    loader = SemiLoader(train_inputs, train.labels, unl, cfg.batch_size, cfg.semi_mu, cfg.semi_steps, cfg.seed)
    weight = cfg.semi_weight if cfg.semi_weight is not None else DEFAULT_WEIGHT[cfg.semi]
    rampup = int(0.3 * cfg.epochs * len(loader)) if cfg.semi in ("pseudo-label", "mean-teacher") else 0
    strategy = SEMI_METHODS[cfg.semi](base_strategy, views, len(train.classes), cfg.semi_threshold, weight,
                                      cfg.label_smoothing, rampup, cfg.ema)
    semi_model = SemiModel(trainable, teacher=strategy.uses_teacher)
    info = {"method": cfg.semi, "labelled_images": len(train), "unlabeled_images": len(pool),
            "unlabeled_dir": str(cfg.unlabeled), "unlabeled_skipped": len(pool.skipped),
            "views": "cached features" if encode is not None else "pixels", "threshold": cfg.semi_threshold,
            "weight": weight, "mu": cfg.semi_mu, "steps_per_epoch": len(loader)}
    return SemiSetup(semi_model, strategy, loader, [PseudoLabelLog(strategy)], info)
