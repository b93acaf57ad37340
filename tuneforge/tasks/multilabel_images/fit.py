"""`fit --multi-label` on a table of images (plugin `image-multilabel`): the image model with one
sigmoid per label (core/strategies/multilabel.py, augmented as class folders are; a frozen
backbone's features cached), epochs selected on the validation micro-F1, per-label thresholds
tuned on validation only, scored beside the one-vs-rest linear probe of a pretrained backbone."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from ...config import FitConfig
from ...core.augment import Augment
from ...core.baseline import EVAL_MAX, Baseline, compare, image_features, multilabel_probe_baseline, pretrained_backbone, skipped
from ...core.data import BatchLoader, write_manifest
from ...core.device import channels_last
from ...core.data.images import decode_cached, peek_sides
from ...core.data.tables import table_folder
from ...core.data.multilabel import ImageLabels, multilabel_split, read_multilabel_images
from ...core.data.text import is_text_data
from ...core.memory import plan_memory
from ...core.metrics import multilabel_splits
from ...core.models import create_model, model_spec
from ...core.models.base import HeadOnly, extract_features
from ...core.models.weights import resolve_init
from ...core.run import FitResult, Run, finish, train_model
from ...core.strategies.multilabel import MultiLabel
from ...errors import ConfigError, DataError
from ..image import is_arrays
from ..image.fit import PROBE_BACKBONE, choose_image_size
from ..regression import IMAGE_COLUMNS, header

log = logging.getLogger("tuneforge")

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
PROBE_TRAIN_MAX = 2000  # the probe's training rows at most (seeded): a logistic regression per label fits in seconds


def _multi(cfg: FitConfig) -> bool:
    return bool(cfg.multi_label or cfg.label_columns)


def _is_table(cfg: FitConfig) -> bool:
    return Path(cfg.data).is_file() and Path(cfg.data).suffix.lower() in TABLE_SUFFIXES


def detect(cfg: FitConfig) -> bool:
    """--multi-label on a table with an image column (--image-column, else file/path/image when
    it has no 'text' column); also on image class folders and arrays, which `resolve` refuses
    with the way to give several labels per image."""
    if not _multi(cfg) or cfg.text_column or cfg.data is None:
        return False
    if _is_table(cfg):
        columns = header(cfg.data)
        return bool(cfg.image_column) or ("text" not in columns and any(c in columns for c in IMAGE_COLUMNS))
    data = Path(cfg.data)
    return is_arrays(cfg) or (data.is_dir() and not is_text_data(cfg.data, None) and model_spec(cfg.model).modality == "image")


def resolve(cfg: FitConfig, given=()) -> None:
    """--label-columns is multi-label; epochs are selected on the validation micro-F1 unless
    --monitor says otherwise. Class folders and arrays hold one label per image: refused."""
    if not _is_table(cfg):
        raise ConfigError(f"{'--label-columns' if cfg.label_columns else '--multi-label'}: {cfg.data} gives each image one "
                          f"label (its class folder or array label); for several labels per image list the images in a "
                          f"table (CSV/TSV/JSONL): an image-path column and a label column holding labels separated by "
                          f"'|', e.g. `--data findings.csv --image-column path --label-column labels --multi-label`")
    cfg.multi_label = True
    # recorded in config.yaml and the bundle: predict, evaluate and batch read this column
    cfg.image_column = cfg.image_column or next((c for c in IMAGE_COLUMNS if c in header(cfg.data)), IMAGE_COLUMNS[0])
    if Augment(cfg.augment).mixes:
        raise ConfigError(f"--augment {cfg.augment}: mixup/cutmix blend two images' label sets; --multi-label trains on "
                          f"0/1 labels (drop mixup/cutmix)")
    if "monitor" not in given:
        cfg.monitor = "val_micro_f1"


def _label_columns(cfg: FitConfig) -> list[str] | None:
    return [c.strip() for c in cfg.label_columns.split(",") if c.strip()] if cfg.label_columns else None


def load_tables(cfg: FitConfig) -> dict[str, ImageLabels]:
    """train/val/test tables (val carved from train, seeded, when there is no --val)."""
    def read(path: str, classes: list[str] | None = None) -> ImageLabels:
        return read_multilabel_images(path, cfg.image_column, cfg.label_column, _label_columns(cfg), cfg.encoding,
                                      cfg.skip_bad_rows, classes)
    full = read(cfg.data)
    if cfg.val:
        splits = {"train": full, "val": read(cfg.val, full.classes)}
    elif cfg.val_fraction > 0:
        tr, va = multilabel_split(full.labels, cfg.val_fraction, cfg.seed)
        splits = {"train": full.subset(tr), "val": full.subset(va)}
    else:
        splits = {"train": full}
    if cfg.test:
        splits["test"] = read(cfg.test, full.classes)
    return splits


def decode(cfg: FitConfig, tables: dict[str, ImageLabels], size: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each split's uint8 images at `size` (disk-cached) and their labels; unreadable ones skipped and counted."""
    out = {}
    for name, t in tables.items():
        arr, ok, bad = decode_cached(t.files, size, cfg.resize, cfg.cache_dir, cfg.workers, cfg.strict, cfg.cache)
        if bad:
            log.warning("%s: %d unreadable images skipped (first: %s)", name, len(bad), bad[0]["path"])
        out[name] = (torch.from_numpy(np.ascontiguousarray(arr)), t.labels[torch.from_numpy(np.asarray(ok, bool))])
    empty = [c for j, c in enumerate(tables["train"].classes) if not (out["train"][1][:, j] > 0).any()]
    if empty:
        raise DataError(f"{cfg.data}: labels {empty} have no training images (every label needs one)")
    return out


def train_baseline(cfg: FitConfig, model, data: dict, size: int, cached: dict | None) -> Baseline | dict | None:
    """The one-vs-rest linear probe (core/baseline.py) on the fit's cached features when its
    backbone is frozen; else on the features of the pretrained backbone it starts from, or of
    PROBE_BACKBONE for a model trained from scratch (at most PROBE_TRAIN_MAX training and
    EVAL_MAX val/test images, seeded). None with --no-baseline."""
    if not cfg.baseline:
        return None
    labels = {n: y.numpy() for n, (_, y) in data.items()}
    if cached is not None:
        feats = {n: f[:, 0].float().numpy() for n, f in cached.items()}
        return multilabel_probe_baseline((feats["train"], labels["train"]), {n: (feats[n], labels[n]) for n in feats if n != "train"},
                                         cfg.model, cfg.seed, note="on the fit's cached features", cached=True)
    name, source = cfg.model, model
    if not (cfg.init or cfg.weights or (cfg.pretrained and model_spec(cfg.model).loads_weights())):
        name, source = PROBE_BACKBONE, None
        if not model_spec(PROBE_BACKBONE).loads_weights():
            return skipped("linear probe", f"--model {cfg.model} starts from random init and {PROBE_BACKBONE}'s pretrained "
                                           f"weights are not installed here")
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    picks = {n: np.sort(rng.permutation(len(y))[:PROBE_TRAIN_MAX if n == "train" else EVAL_MAX]) for n, y in labels.items()}
    with torch.random.fork_rng():  # the fit trains the same with or without its baseline
        side = max(size, model_spec(name).min_image_size)
        source = source or pretrained_backbone(name, side)
        feats = {}
        for n, (images, _) in data.items():
            x = images[torch.from_numpy(picks[n])]
            if x.shape[-1] < side:  # below the smallest side the backbone takes
                x = torch.nn.functional.interpolate(x.float(), size=side, mode="bilinear").round().clamp(0, 255).to(torch.uint8)
            feats[n] = image_features(source, x, cfg.eval_batch_size)
    counted = ", ".join(f"{len(picks[n])} {n}" for n in data)
    return multilabel_probe_baseline((feats["train"], labels["train"][picks["train"]]),
                                     {n: (feats[n], labels[n][picks[n]]) for n in feats if n != "train"}, name, cfg.seed,
                                     time.perf_counter() - t0, f"one forward pass of {name} at {side}px over {counted} images")


def fit(cfg: FitConfig, run: Run) -> FitResult:
    """Fit an image model with one sigmoid per label on a multi-label image table."""
    spec = model_spec(cfg.model)
    if spec.modality != "image" or spec.classic:
        raise ConfigError(f"--model {cfg.model} is not an image model; multi-label images take any of `tuneforge models`' "
                          f"image models")
    t_data = time.perf_counter()
    tables = load_tables(cfg)
    classes = tables["train"].classes
    size = cfg.image_size
    if not size:
        starts_from_weights = bool(cfg.init or cfg.weights) or (cfg.pretrained and spec.loads_weights())
        size, why = choose_image_size(cfg.model, spec, peek_sides(tables["train"].files, seed=cfg.seed), cfg.resize,
                                      starts_from_weights)
        log.info("image size %s", why)
    data = decode(cfg, tables, size)
    roots = {n: str(table_folder(Path((cfg.val if n == "val" else cfg.test if n == "test" else None) or cfg.data)).resolve())
             for n in tables}
    # the labels go under "labels": "classes" names class folders, which export's check reads paths by
    write_manifest(run.dir / "split.json", [], {n: [os.path.relpath(f, roots[n]) for f in t.files] for n, t in tables.items()},
                   cfg.seed, resume=run.resuming, roots=roots, unit="file", labels=classes,
                   tables={"train": str(cfg.data), "val": cfg.val, "test": cfg.test})
    data_s = time.perf_counter() - t_data
    log.info("data: %s images at %dpx, %d labels, %.2f per image (%.1fs)", ", ".join(f"{len(y)} {n}" for n, (_, y) in data.items()),
             size, len(classes), float(data["train"][1].sum(1).mean()), data_s)

    torch.manual_seed(cfg.seed)
    weights = resolve_init(cfg.init, cfg.model) if cfg.init else cfg.weights
    model = create_model(cfg.model, len(classes), size, cfg.pretrained, weights, cfg.dropout)
    if hasattr(model.backbone, "init_from_data") and weights is None:  # fast-cnn's patch whitening, as class folders do
        train_images = data["train"][0]
        pick = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(cfg.seed))[:5000]
        model.backbone.init_from_data(train_images[pick].float().div_(255.0))
    model.freeze(int(cfg.freeze) if cfg.freeze.isdigit() else cfg.freeze)
    if channels_last(run.device, cfg.channels_last):  # per device, as class folders (core/device.py)
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True
    cached = None
    if cfg.cache_features and model.frozen_stages == len(model.backbone.stages()):
        # a frozen backbone computes the same features every epoch: once, then the head trains on them
        t_feat = time.perf_counter()
        cached = {n: extract_features(model, x, cfg.eval_batch_size) for n, (x, _) in data.items()}
        log.info("frozen backbone: cached features of %d images in %.1fs%s", sum(len(x) for x, _ in data.values()),
                 time.perf_counter() - t_feat, f" (--augment {cfg.augment} is not applied to cached features)"
                 if Augment(cfg.augment) else "")
        trainable, strategy, inputs = HeadOnly(model), MultiLabel(cached=True), cached
    else:
        trainable, strategy, inputs = model, MultiLabel(augment=cfg.augment), {n: x for n, (x, _) in data.items()}
    baseline = train_baseline(cfg, model, data, size, cached) if run.range_test is None else None

    def loader(name: str, train: bool = False) -> BatchLoader:
        return BatchLoader(inputs[name], data[name][1], cfg.batch_size if train else cfg.eval_batch_size, shuffle=train,
                           seed=cfg.seed)
    plan_memory(run, trainable, strategy, loader("train", True))
    engine, state = train_model(run, trainable, strategy, loader("train", True), loader("val") if "val" in data else None)

    outputs = {n: (engine.predict(loader(n))["logits"], data[n][1]) for n in ("val", "test") if n in data}
    metrics, thresholds = multilabel_splits(outputs, classes)  # thresholds from validation only
    report = {"model": cfg.model, "task": "multi-label", "classes": classes, "best_epoch": state.get("best_epoch"),
              "epochs_run": state["epoch"], "stopped_because": state["stopped_because"],
              "data": {**{n: len(y) for n, (_, y) in data.items()}, "image_size": size, "load_s": round(data_s, 2),
                       "files": {"train": str(cfg.data), "val": cfg.val, "test": cfg.test},
                       "unknown_labels": {n: t.unknown for n, t in tables.items() if t.unknown}},
              "throughput": {"train_per_s": round(sum(h["images_per_s"] for h in state["history"]) / max(1, len(state["history"])), 1)},
              **metrics, "thresholds": dict(zip(classes, thresholds)), "config": cfg.to_dict()}
    if isinstance(baseline, Baseline):
        compare(report, baseline, run.warn)
    elif baseline is not None:
        report["baseline"] = baseline
    meta = {"task": "image-multilabel", "model": cfg.model, "model_args": {}, "classes": classes, "thresholds": thresholds,
            "preprocessing": {"image_size": size, "resize": cfg.resize, "scale": 1 / 255, "tta": None,
                              "mean": list(model.backbone.mean), "std": list(model.backbone.std)},
            "metrics": {k: {m: report[k][m] for m in ("micro_f1", "macro_f1", "mAP", "n")} for k in ("val", "test") if k in report},
            "data": {"train_file": str(cfg.data), "train_images": len(data["train"][1]), "image_column": cfg.image_column,
                     "label_column": cfg.label_column, "label_columns": cfg.label_columns, "encoding": cfg.encoding}}
    return finish(run, model, report, state, meta, None)
