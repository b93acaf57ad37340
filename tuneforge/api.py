"""The Python API; the CLI verbs call exactly these functions.

    import tuneforge
    run = tuneforge.fit(data="photos/", model="efficientnet_lite0", epochs=5)
    print(run.report["test"]["accuracy"])
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from . import config as cfgmod
from .config import FitConfig
from .data import BatchLoader, ImageSet, load_image_folder, scan_class_folders, stratified_split, subsample_per_class, write_manifest
from .engine import Checkpointer, EarlyStopping, Engine, MetricsLogger, Progress, build_optimizer, build_schedule, load_checkpoint
from .errors import ConfigError, DataError
from .evaluate import classification_metrics, print_summary, write_report
from .export import Predictor, load_bundle, save_bundle
from .augment import parse_spec
from .models import Classifier, create_model, model_spec
from .models.base import HeadOnly, StageTail, extract_features
from .strategies import Supervised
from .strategies.features import CachedFeatures

log = logging.getLogger("tuneforge")


@dataclass
class FitResult:
    run_dir: Path
    model: Classifier
    report: dict
    config: FitConfig


def _setup(threads: int) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s %(message)s", level=logging.INFO)
    torch.set_num_threads(threads or os.cpu_count() or 1)


def _resolve_splits(cfg: FitConfig) -> tuple[Path, Path | None, Path | None]:
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


def load_splits(cfg: FitConfig, image_size: int, run_dir: Path, train_dir: Path, val_dir: Path | None,
                test_dir: Path | None) -> tuple[ImageSet, ImageSet | None, ImageSet | None]:
    """Decode train/val/test once (disk-cached), carve a stratified val split when there is
    none, and write split.json so the run can be audited and repeated."""
    classes, items = scan_class_folders(train_dir)
    if cfg.labels_per_class or cfg.limit_per_class:
        keep = subsample_per_class(np.array([l for _, l in items]), cfg.labels_per_class or cfg.limit_per_class, cfg.seed)
        items = [items[i] for i in keep]
    kw = dict(size=image_size, resize=cfg.resize, cache_dir=cfg.cache_dir, workers=cfg.workers, strict=cfg.strict)
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
                   "test": rel(test, test_dir) if test_dir else []}, cfg.seed,
                   roots={"train": str(train_dir), "val": str(val_dir or train_dir), "test": str(test_dir) if test_dir else None})
    return train, val, test


def _run_dir(cfg: FitConfig) -> Path:
    if cfg.out:
        return Path(cfg.out)
    name = Path(cfg.model[3:]).name if cfg.model.startswith("hf:") else cfg.model  # hf:/path/to/model -> model
    return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


def _prepare_run(config: FitConfig | None, kwargs: dict) -> tuple[FitConfig, Path, dict | None]:
    """Resolved, validated settings (recipe, --resume), the run folder with config.yaml in it,
    and the checkpoint to resume from."""
    explicit = {**(config.explicit() if config else {}), **kwargs}
    cfg = cfgmod.build(FitConfig, cfgmod.with_recipe(explicit))
    resume_ckpt = None
    if cfg.resume:
        run_dir = Path(cfg.resume)
        saved = cfgmod.read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else None
        if saved is None:
            raise ConfigError(f"--resume: {run_dir} is not a run folder (no config.yaml)")
        given = {k: v for k, v in kwargs.items() if k not in ("resume",)}
        cfg = cfgmod.build(FitConfig, saved, given, {"resume": str(run_dir), "out": str(run_dir)})
        resume_ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    cfg.validate()
    _setup(cfg.threads)
    run_dir = _run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        for stale in ("metrics.jsonl",):
            (run_dir / stale).unlink(missing_ok=True)
    cfgmod.write_yaml(cfg, run_dir / "config.yaml")
    return cfg, run_dir, resume_ckpt


def _train(cfg: FitConfig, run_dir: Path, trainable: torch.nn.Module, strategy, train_loader, val_loader,
           resume_ckpt: dict | None, default_lr: float | None = None, extra_callbacks: tuple = ()) -> tuple[Engine, dict]:
    """Optimizer, schedule, callbacks and the one Engine, for every kind of data."""
    lr = cfg.lr or default_lr or (0.05 if cfg.optimizer == "sgd" else 1e-3)
    steps = len(train_loader) * cfg.epochs
    wd = cfg.weight_decay if cfg.weight_decay is not None else {"adamw": 0.05, "sgd": 5e-4}.get(cfg.optimizer, 0.0)
    optimizer = build_optimizer(trainable, cfg.optimizer, lr, wd, cfg.momentum)
    scheduler = build_schedule(optimizer, cfg.schedule, steps, int(cfg.warmup_epochs * len(train_loader)))
    early = EarlyStopping(cfg.monitor, cfg.patience if val_loader is not None else 0, run_dir)
    callbacks = [*extra_callbacks, early, Checkpointer(run_dir), MetricsLogger(run_dir, cfg.tensorboard), Progress(cfg.progress)]
    if getattr(cfg, "max_minutes", None):
        from .unlabeled import TimeLimit
        callbacks.insert(0, TimeLimit(cfg.max_minutes))
    engine = Engine(trainable, strategy, optimizer, scheduler, callbacks, cfg.precision, cfg.grad_clip, cfg.seed, cfg.epochs)
    if resume_ckpt is not None:
        engine.load_checkpoint(resume_ckpt)
        log.info("resuming %s after epoch %d", run_dir, engine.state["epoch"])
    return engine, engine.fit(train_loader, val_loader)


def _finish(cfg: FitConfig, run_dir: Path, model: Classifier, report: dict, state: dict, meta: dict,
            examples: dict | None, t_start: float) -> FitResult:
    """Timings, the bundle of the best weights, report.json/html and the summary."""
    report["fit_s"] = round(state.get("fit_s", 0.0), 2)
    report["wall_s"] = round(time.perf_counter() - t_start, 2)
    save_bundle(run_dir / "model", model, meta)
    paths = write_report(run_dir, report, state["history"], examples)
    report["html_path"] = str(paths["html"])
    if cfg.progress:
        print_summary(report)
    return FitResult(run_dir, model, report, cfg)


def fit(config: FitConfig | None = None, **kwargs) -> FitResult:
    """Fine-tune (or train) a classifier; every keyword is a FitConfig field. Image class
    folders, or text/sequence files (tuneforge.fit_text): the same engine, reports and bundle."""
    t_start = time.perf_counter()
    cfg, run_dir, resume_ckpt = _prepare_run(config, kwargs)
    from .fit_multimodal import fit_multimodal, is_multimodal_config
    if is_multimodal_config(cfg):  # image+text tables: fusion models and their single-modality baselines
        return fit_multimodal(cfg, run_dir, resume_ckpt, t_start)
    from .fit_text import fit_text, is_text_config
    if is_text_config(cfg):
        if cfg.init:  # a `pretrain --method mlm` run (backbone.safetensors in HFEncoder's layout) or a file
            from .unlabeled import resolve_init
            cfg.weights = resolve_init(cfg.init, cfg.model)
        return fit_text(cfg, run_dir, resume_ckpt, t_start)
    if cfg.init:
        from .unlabeled import resolve_init
        cfg.weights = resolve_init(cfg.init, cfg.model)

    spec = model_spec(cfg.model)
    image_size = cfg.image_size or spec.default_image_size
    t_data = time.perf_counter()
    dirs = _resolve_splits(cfg)
    train, val, test = load_splits(cfg, image_size, run_dir, *dirs)
    data_s = time.perf_counter() - t_data
    log.info("data: %d train, %d val, %d test images, %d classes, %dpx (%.1fs)", len(train), len(val) if val else 0,
             len(test) if test else 0, len(train.classes), image_size, data_s)

    torch.manual_seed(cfg.seed)
    model_args: dict = {}
    model = create_model(cfg.model, len(train.classes), image_size, cfg.pretrained, cfg.weights, cfg.dropout, **model_args)
    if hasattr(model.backbone, "init_from_data") and cfg.weights is None:
        # Data-dependent initialisation (fast-cnn's patch whitening) from a seeded sample of train.
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[:5000]
        model.backbone.init_from_data(train.images[pick].float().div_(255.0))
    model.freeze(int(cfg.freeze) if cfg.freeze.isdigit() else cfg.freeze)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        model.channels_last = True

    splits = {name: s for name, s in (("train", train), ("val", val), ("test", test)) if s is not None}
    ops = parse_spec(cfg.augment)
    encode = None  # what the frozen layers compute, when they are cached (unlabeled images get the same)
    frozen, n_stages = model.frozen_stages, len(model.backbone.stages())
    whole = frozen == n_stages  # frozen backbone: cache pooled features; else the maps of stage `frozen`
    if cfg.cache_features and frozen and set(ops) <= ({"flip"} if whole else {"flip", "crop"}) and (
            whole or model.backbone.can_split()):
        # Frozen stages compute the same thing every epoch: run them once and train the rest on
        # their outputs. Flip stays valid as a cached mirrored view (computed only where used:
        # train with flip, val/test with TTA); crop becomes a shift of the cached maps by the
        # same fraction of their size (reflect-padded, as for pixels).
        t_feat = time.perf_counter()
        mirrored = {"train": "flip" in ops, "val": cfg.tta, "test": cfg.tta}
        stage = None if whole else frozen
        inputs = {n: extract_features(model, s.images, cfg.eval_batch_size, mirrored[n], stage) for n, s in splits.items()}
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

    train_loader = BatchLoader(inputs["train"], train.labels, cfg.batch_size, shuffle=True, seed=cfg.seed)
    semi = None
    if cfg.semi:  # tuneforge/unlabeled.py: the same engine, a semi-supervised strategy and loader
        from .unlabeled import setup_semi
        semi = setup_semi(cfg, model, trainable, strategy, train, inputs["train"], val.paths if val else [],
                          test.paths if test else [], image_size, run_dir, encode)
        trainable, strategy, train_loader = semi.model, semi.strategy, semi.loader
    val_loader = BatchLoader(inputs["val"], val.labels, cfg.eval_batch_size) if val else None
    engine, state = _train(cfg, run_dir, trainable, strategy, train_loader, val_loader, resume_ckpt,
                           extra_callbacks=tuple(semi.callbacks) if semi else ())

    report = {"model": cfg.model, "classes": train.classes, "best_epoch": state.get("best_epoch"),
              "epochs_run": state["epoch"], "stopped_because": state["stopped_because"],
              "data": {"train": len(train), "val": len(val) if val else 0, "test": len(test) if test else 0,
                       "image_size": image_size, "decode_s": round(data_s, 2),
                       "skipped": train.skipped + (val.skipped if val and val is not train else []) + (test.skipped if test else [])},
              "config": cfg.to_dict()}
    if semi:
        report["semi"] = semi.finish(state, train.classes)
    examples = None
    for name, split in (("val", val), ("test", test)):
        if split is None:
            continue
        out = engine.predict(BatchLoader(inputs[name], split.labels, cfg.eval_batch_size))
        report[name] = classification_metrics(out["logits"], out["targets"], train.classes)
        if name == "test" or test is None:
            examples = {"images": split.images.numpy(), "logits": out["logits"].numpy(),
                        "targets": out["targets"].numpy(), "paths": split.paths}
    meta = {"model": cfg.model, "model_args": model_args, "classes": train.classes,
            "preprocessing": {"image_size": image_size, "resize": cfg.resize, "scale": 1 / 255, "tta": "flip" if cfg.tta else None,
                              "mean": list(model.backbone.mean), "std": list(model.backbone.std)},
            "metrics": {k: {m: report[k][m] for m in ("accuracy", "macro_f1", "n")} for k in ("val", "test") if k in report},
            "data": {"train_dir": str(dirs[0]), "train_images": len(train)}}
    return _finish(cfg, run_dir, model, report, state, meta, examples, t_start)


def load(path: str | Path) -> Classifier:
    """The model of a run folder or bundle, in eval mode."""
    return load_bundle(path)[0]


def evaluate(run: str | Path, data: str | Path, out: str | Path | None = None, strict: bool = False,
             cache_dir: str | None = None, batch_size: int = 256, threads: int = 0, progress: bool = True,
             tta: bool | None = None) -> dict:
    """Evaluate a trained model on a class-folder tree (its test/ subfolder if it has one);
    writes report.json/html into `out` (default RUN/eval-FOLDER) and returns the report.
    `tta` overrides the bundle's own test-time augmentation setting. A text model takes a
    labelled file with the columns it was trained on."""
    _setup(threads)
    from .export import read_bundle_config
    if read_bundle_config(run).get("task") == "image-text-classification":  # a labelled image+text table
        from .fit_multimodal import evaluate_table
        return evaluate_table(run, data, out, batch_size, progress)
    if read_bundle_config(run).get("task") == "text-classification":
        from .fit_text import evaluate_text
        return evaluate_text(run, data, out, batch_size, progress)
    predictor = Predictor(run)
    if tta is not None:
        predictor.pre["tta"] = "flip" if tta else None
    data = Path(data)
    folder = data / "test" if (data / "test").is_dir() else data
    pre = predictor.pre
    split = load_image_folder(folder, pre["image_size"], pre.get("resize", "crop"), classes=predictor.classes,
                              cache_dir=cache_dir, strict=strict)
    t0 = time.perf_counter()
    probs = predictor.probabilities(split.images, batch_size)  # with the bundle's own TTA setting
    logits = probs.clamp_min(1e-12).log()
    report = {"model": predictor.config["model"], "classes": predictor.classes, "tta": predictor.pre.get("tta"),
              "test": classification_metrics(logits, split.labels, predictor.classes),
              "data": {"test": len(split), "folder": str(folder), "skipped": split.skipped},
              "wall_s": round(time.perf_counter() - t0, 2)}
    out = Path(out) if out else Path(predictor.config["_dir"]).parent / f"eval-{folder.resolve().name}"
    out.mkdir(parents=True, exist_ok=True)
    paths = write_report(out, report, None, {"images": split.images.numpy(), "logits": logits.numpy(),
                                             "targets": split.labels.numpy(), "paths": split.paths})
    report["html_path"] = str(paths["html"])
    if progress:
        print_summary(report)
    return report


def predict(run: str | Path, paths: list[str | Path], top_k: int = 5, batch_size: int = 256) -> list[dict]:
    """Top-k labels for image files and folders; unreadable files get {"path", "error"}.
    For a text model: strings, files (one text per line) or '-' (standard input lines),
    each giving {"text", "label", "top"}."""
    from .export import read_bundle_config
    if read_bundle_config(run).get("task") == "image-text-classification":  # tables, images and/or texts
        from .fit_multimodal import predict_rows
        return predict_rows(run, [str(p) for p in paths], top_k, batch_size)
    if read_bundle_config(run).get("task") == "text-classification":
        from .fit_text import TextPredictor, read_inputs
        return TextPredictor(run).predict_texts(read_inputs([str(p) for p in paths]), top_k, batch_size)
    from .data import list_images
    predictor = Predictor(run)
    return predictor.predict_files(list_images(paths), top_k, batch_size)


# --- Deployment: export, serve, batch prediction (thin layers over tuneforge.export / tuneforge.serve) ---

def export(run: str | Path, out: str | Path, format: str = "safetensors", quantize: str | None = None,
           data: str | Path | None = None) -> dict:
    """Write a portable bundle of a run folder or bundle into `out`: safetensors weights,
    config.json, model card and, with format='onnx', a model.onnx checked against PyTorch on
    real images (and model.int8.onnx with quantize='int8', its test accuracy change measured).
    `data`: images to check/calibrate/measure with when `run` is not a run folder. Returns the
    bundle's config."""
    from .export.build import export_bundle
    _setup(0)
    return export_bundle(run, out, format, quantize, data)


def serve(bundle: str | Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          **settings) -> None:
    """Serve a bundle over HTTP until Ctrl-C: POST /v1/predict, /healthz, /readyz, /metrics, the
    try-it page at /. Other keywords: ServeSettings fields (backend, max_batch_size,
    max_wait_ms, max_queue, timeout_ms, max_body_mb, threads, busy_wait)."""
    from .export import read_bundle_config
    from .serve import ServeSettings, run
    read_bundle_config(bundle)  # a wrong path fails here, by name, before a socket is opened
    _setup(settings.get("threads", 0))
    run(bundle, ServeSettings(host=host, port=port, token=token, **settings))


def batch_predict(run: str | Path, source: str | Path, output: str | Path, top_k: int = 5, batch_size: int = 64,
                  column: str | None = None, backend: str = "torch", progress: bool = True) -> dict:
    """Predict a folder of images or a table (.csv/.tsv/.jsonl with a path or text column) into
    `output` (.csv or .jsonl), with a progress bar; returns {"rows", "errors", "output"}."""
    from .export.batch import predict_to_file
    _setup(0)
    return predict_to_file(Predictor(run, backend=backend), source, output, top_k, batch_size, column, progress)
