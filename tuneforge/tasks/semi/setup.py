"""What `fit` needs for unlabeled data: the semi-supervised setup (`--unlabeled DIR --semi METHOD`).

`setup_semi` turns the pieces `fit` already built (the model, what is trained, the supervised
strategy for evaluation, the decoded labelled images or their cached features) into a
`SemiModel`, a semi-supervised strategy and a `SemiLoader`; training is the same `core.run.train_model`,
the report gets a "semi" section (pseudo-labels per class)."""
from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ...core.data.text_loader import SequenceBatchLoader, pad_batch
from ...core.data.unlabeled import SemiLoader, load_unlabeled, load_unlabeled_texts, relpaths
from ...core.engine.callbacks import Callback
from ...core.models.text import extract_text_features
from ...core.strategies.semi import DEFAULT_WEIGHT, SEMI_METHODS, FeatureViews, PixelViews, SemiModel, TextViews
from ...core.fs import atomic_write_text
from ...errors import DataError

log = logging.getLogger("tuneforge")


class PseudoLabelLog(Callback):
    """Adds the epoch's pseudo-label counts to its record (metrics.jsonl) and keeps the totals
    in the engine state, so they survive --resume and reach the report."""

    def __init__(self, strategy):
        self.strategy = strategy

    def on_epoch_end(self, engine, record: dict) -> None:
        s = self.strategy
        record["pseudo_label_rate"] = float(s.counts.sum()) / max(s.seen, 1)
        record["pseudo_labels"] = s.counts.tolist()
        if s.threshold == "auto":  # where the self-adaptive threshold stands (its top class's value)
            record["semi_threshold"] = float(engine.model.confidence_ema)
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
        auto = {}
        if self.strategy.threshold == "auto":
            per_class = self.model.auto_thresholds().tolist()
            auto = {"threshold_final": round(float(self.model.confidence_ema), 4),
                    "threshold_final_per_class": {c: round(t, 4) for c, t in zip(classes, per_class)}}
        last = next((r["pseudo_labels"] for r in reversed(state["history"]) if "pseudo_labels" in r), [0] * len(classes))
        return {**self.info, "pseudo_labels_per_class": dict(zip(classes, total)),
                "pseudo_labels_last_epoch_per_class": dict(zip(classes, last)),
                "pseudo_label_rate_last_epoch": next((r["pseudo_label_rate"] for r in reversed(state["history"])
                                                      if "pseudo_label_rate" in r), None), **auto}


def setup_semi(cfg, model, trainable, base_strategy, train, train_inputs: torch.Tensor, val_paths: list[str],
               test_paths: list[str], image_size: int, run_dir: Path,
               encode: Callable[[torch.Tensor], torch.Tensor] | None) -> SemiSetup:
    """`encode` is set when `fit` trains on cached frozen features/maps: the unlabeled images
    are encoded once the same way, and the views are feature views. Validation images are left
    out of the unlabeled pool; a test image in it is an error."""
    t0 = time.perf_counter()
    resolved = lambda paths: {str(Path(p).resolve()) for p in paths}
    pool = load_unlabeled(cfg.unlabeled, image_size, cfg.resize, cfg.cache_dir, cfg.workers, cfg.strict,
                          exclude=resolved(val_paths), forbid=resolved(test_paths), store=cfg.cache)
    atomic_write_text(run_dir / "unlabeled.json", json.dumps({"root": str(cfg.unlabeled), "images": len(pool),
                                                        "files": relpaths(pool.paths, cfg.unlabeled)}, indent=0))
    unl = encode(pool.images) if encode is not None else pool.images
    log.info("unlabeled: %d images from %s%s (%.1fs)", len(pool), cfg.unlabeled,
             ", encoded once by the frozen layers" if encode is not None else "", time.perf_counter() - t0)
    views = FeatureViews() if encode is not None else PixelViews()
    info = {"labelled_images": len(train), "unlabeled_images": len(pool), "unlabeled_dir": str(cfg.unlabeled),
            "unlabeled_skipped": len(pool.skipped), "views": "cached features" if encode is not None else "pixels"}
    return _assemble(cfg, trainable, base_strategy, views, train, train_inputs, unl, info)


# Fewer optimizer steps than this in all and a semi-supervised fit has hardly begun: pseudo-labels
# (fixmatch, pseudo-label) come only once the model is confident on unlabeled inputs, and the
# ramp-ups and the EMA teacher are set in steps too.
MIN_SEMI_STEPS = 200


def setup_warnings(cfg, loader: SemiLoader, labelled: int, unlabeled: int) -> list[str]:
    """What is wrong with the shape of a semi-supervised fit, with the numbers and the flag to
    change: too few steps in all, epochs that skip labelled images (a small --semi-steps), or
    steps that each draw the whole unlabeled pool more than once (a large --semi-mu)."""
    out = []
    steps, total = len(loader), cfg.epochs * len(loader)
    epoch = f"{steps} step{'s' * (steps != 1)} of {cfg.batch_size} labelled + {cfg.semi_mu * cfg.batch_size} unlabeled"
    per_epoch = "--semi-steps" if cfg.semi_steps else f"one pass over the {labelled} labelled inputs"
    if total < MIN_SEMI_STEPS:
        need = -(-MIN_SEMI_STEPS // steps)
        out.append(f"semi-supervised fit of only {total} steps in all ({cfg.epochs} epochs x {epoch}; an epoch is "
                   f"{per_epoch}): pseudo-labels need a model that is already confident, which takes hundreds of steps. "
                   f"Give --epochs {need} or more (at least {MIN_SEMI_STEPS} steps)")
    if steps * cfg.batch_size < labelled:
        out.append(f"--semi-steps {steps} x --batch-size {cfg.batch_size} = {steps * cfg.batch_size} labelled inputs per "
                   f"epoch, fewer than the {labelled} labelled ones: an epoch skips some of them. Leave --semi-steps out "
                   f"(an epoch is then one pass over the labelled set) or raise it to {-(-labelled // cfg.batch_size)}")
    if cfg.semi_mu * cfg.batch_size > 2 * unlabeled:
        out.append(f"each step draws --semi-mu {cfg.semi_mu} x --batch-size {cfg.batch_size} = "
                   f"{cfg.semi_mu * cfg.batch_size} unlabeled inputs from a pool of {unlabeled}: each of them at least twice "
                   f"a step, which costs time and adds little; lower --semi-mu to {max(1, unlabeled // cfg.batch_size)}")
    return out


def _assemble(cfg, trainable, base_strategy, views, train, train_inputs, unlabeled, info: dict,
              collate: Callable | None = None) -> SemiSetup:
    """The part images and text share: loader, method (with its default weight and ramp-up),
    the SemiModel wrapper, the report's settings. The loader carries `setup_warnings` for
    train_model to say (console and report)."""
    loader = SemiLoader(train_inputs, train.labels, unlabeled, cfg.batch_size, cfg.semi_mu, cfg.semi_steps, cfg.seed,
                        collate)
    loader.warnings = setup_warnings(cfg, loader, len(train), len(unlabeled))
    weight = cfg.semi_weight if cfg.semi_weight is not None else DEFAULT_WEIGHT[cfg.semi]
    rampup = int(0.3 * cfg.epochs * len(loader)) if cfg.semi in ("pseudo-label", "mean-teacher") else 0
    strategy = SEMI_METHODS[cfg.semi](base_strategy, views, len(train.classes), cfg.semi_threshold, weight,
                                      cfg.label_smoothing, rampup, cfg.ema if cfg.ema is not None else 0.999, cfg.semi_align)
    semi_model = SemiModel(trainable, teacher=strategy.uses_teacher, num_classes=len(train.classes))
    info = {"method": cfg.semi, "distribution_alignment": cfg.semi_align, **info, "threshold": cfg.semi_threshold,
            "weight": weight, "mu": cfg.semi_mu, "steps_per_epoch": len(loader)}
    return SemiSetup(semi_model, strategy, loader, [PseudoLabelLog(strategy)], info)


def read_semi_texts(cfg, splits: dict, files: dict):
    """The unlabeled texts of `--unlabeled`, read before any model is loaded (a wrong column or
    file fails at once), without the validation and test texts; `(pool, kept indices)`."""
    if files.get("test") and Path(cfg.unlabeled).resolve() == Path(files["test"]).resolve():
        raise DataError(f"--unlabeled: {cfg.unlabeled} is the test file; point it at texts that are not evaluated on")
    cols = [c.strip() for c in cfg.columns.split(",")] if cfg.columns else None
    pool = load_unlabeled_texts(cfg.unlabeled, cfg.text_column, cols, cfg.encoding, cfg.skip_bad_rows)
    held = {t for name in ("val", "test") if name in splits for t in splits[name].texts}
    keep = [i for i, t in enumerate(pool.texts) if t not in held]
    if not keep:
        raise DataError(f"--unlabeled: every text in {cfg.unlabeled} is a validation or test text")
    return pool, keep


def setup_semi_text(cfg, model, trainable, base_strategy, splits: dict, unlabeled: tuple, enc, train_inputs,
                    run_dir: Path, cached: bool) -> SemiSetup:
    """`setup_semi` for text (`fit_text`): `unlabeled` from `read_semi_texts` (a table or .txt
    file; texts equal to a validation or test text left out, counted: model selection and the
    test must not be trained on; the test file itself refused). `cached`: the encoder is frozen and
    its features cached: the unlabeled texts are encoded once the same way (feature views);
    otherwise the views are token views (`TextViews`) of dict batches."""
    t0 = time.perf_counter()
    pool, keep = unlabeled
    atomic_write_text(run_dir / "unlabeled.json", json.dumps({"file": str(cfg.unlabeled), "texts": len(keep),
                                                        "lines": [pool.lines[i] for i in keep]}, indent=0))
    ids = enc([pool.texts[i] for i in keep])
    pad_id = enc.pad_id
    if cached:
        unl = extract_text_features(model, SequenceBatchLoader(ids, torch.zeros(len(ids), dtype=torch.long),
                                                               cfg.eval_batch_size, pad_id=pad_id))
        views, collate = FeatureViews(), None
    else:
        if enc.vocab is not None:  # from-scratch models: <unk> stands in for [MASK]
            v = enc.vocab
            views = TextViews([v.pad_id, v.cls_id], v.unk_id)
        else:
            views = TextViews(enc.tokenizer.all_special_ids, enc.tokenizer.mask_token_id or enc.tokenizer.unk_token_id)
        unl = ids
        collate = functools.partial(pad_batch, pad_id=pad_id)
    log.info("unlabeled: %d texts from %s (%d left out: validation/test texts)%s (%.1fs)", len(keep), cfg.unlabeled,
             len(pool) - len(keep), ", encoded once by the frozen encoder" if cached else "", time.perf_counter() - t0)
    train = splits["train"]
    info = {"labelled_texts": len(train), "unlabeled_texts": len(keep), "unlabeled_file": str(cfg.unlabeled),
            "unlabeled_left_out_val_test": len(pool) - len(keep), "unlabeled_skipped": len(pool.skipped),
            "views": "cached features" if cached else "tokens"}
    return _assemble(cfg, trainable, base_strategy, views, train, train_inputs, unl, info, collate)
