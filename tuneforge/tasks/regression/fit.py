"""`fit` for images with a number each (plugin `image-regression`): the image model with a
one-output head against the standardised target (MSE or Huber), selected on the validation
loss; the mean predictor and a ridge regression on the pretrained backbone's pooled features
(the linear probe's regression twin) are scored beside it."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from ...config import FitConfig
from ...core.baseline import Baseline, compare, image_features, mean_predictor, pretrained_backbone, regression_scores, skipped
from ...core.data import BatchLoader, write_manifest
from ...core.data.images import decode_cached, peek_sides
from ...core.data.targets import read_image_table as read_table
from ...core.memory import plan_memory
from ...core.models import create_model, model_spec
from ...core.models.weights import resolve_init
from ...core.run import FitResult, Run, finish, train_model
from ...core.strategies.regression import Regression
from ...errors import ConfigError
from ..image.fit import choose_image_size

log = logging.getLogger("tuneforge")


def resolve(cfg: FitConfig, given=()) -> None:
    """Regression selects on the validation loss (there is no accuracy)."""
    cfg.monitor = "val_loss"


def _split(cfg: FitConfig) -> dict[str, tuple[list[Path], np.ndarray]]:
    files, y = read_table(cfg.data, cfg.label_column, cfg.encoding, cfg.skip_bad_rows)
    out = {}
    if cfg.val:
        out["train"], out["val"] = (files, y), read_table(cfg.val, cfg.label_column, cfg.encoding, cfg.skip_bad_rows)
    elif cfg.val_fraction > 0:
        perm = np.random.default_rng(cfg.seed).permutation(len(files))
        k = max(1, int(round(cfg.val_fraction * len(files))))
        va, tr = sorted(perm[:k]), sorted(perm[k:])
        out["train"], out["val"] = ([files[i] for i in tr], y[tr]), ([files[i] for i in va], y[va])
    else:
        out["train"] = (files, y)
    if cfg.test:
        out["test"] = read_table(cfg.test, cfg.label_column, cfg.encoding, cfg.skip_bad_rows)
    return out


def probe_ridge(cfg: FitConfig, size: int, images: dict[str, torch.Tensor], y: dict[str, np.ndarray]) -> Baseline | dict:
    """Ridge regression on the pretrained backbone's pooled features (a linear probe for numbers)."""
    spec = model_spec(cfg.model)
    if not spec.loads_weights():
        return skipped("ridge probe", f"--model {cfg.model} has no pretrained weights here to probe")
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    t0 = time.perf_counter()
    net = pretrained_backbone(cfg.model, size)
    feats = {n: image_features(net, x, cfg.eval_batch_size) for n, x in images.items()}
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13))).fit(feats["train"], y["train"])
    scores = {n: regression_scores(ridge.predict(f), y[n]) for n, f in feats.items() if n != "train"}
    return Baseline("ridge probe", f"ridge regression on {cfg.model}'s frozen pretrained features",
                    round(time.perf_counter() - t0, 2), scores.get("val"), scores.get("test"),
                    f"{len(y['train'])} training images")


def fit(cfg: FitConfig, run: Run) -> FitResult:
    spec = model_spec(cfg.model)
    if spec.modality != "image" or spec.classic:
        raise ConfigError(f"--model {cfg.model} is not an image model; image regression takes any of `tuneforge models`' image models")
    t_data = time.perf_counter()
    raw = _split(cfg)
    if cfg.image_size:
        size = cfg.image_size
    else:
        size, why = choose_image_size(cfg.model, spec, peek_sides(raw["train"][0]), cfg.resize, cfg.pretrained)
        log.info("image size %s", why)
    images, y = {}, {}
    for name, (files, values) in raw.items():
        arr, ok, bad = decode_cached(files, size, cfg.resize, cfg.cache_dir, cfg.workers, cfg.strict)
        if bad:
            log.warning("%s: %d unreadable images skipped (first: %s)", name, len(bad), bad[0]["path"])
        images[name], y[name] = torch.from_numpy(arr), values[ok]
    write_manifest(run.dir / "split.json", [], {n: [str(f) for f in raw[n][0]] for n in raw}, cfg.seed, resume=run.resuming,
                   roots={"train": str(cfg.data), "val": cfg.val, "test": cfg.test}, unit="file")
    ym, ys = float(y["train"].mean()), float(max(y["train"].std(), 1e-6))
    z = {n: torch.tensor((v - ym) / ys, dtype=torch.float32) for n, v in y.items()}
    data_s = time.perf_counter() - t_data
    log.info("data: %s images at %dpx, target %s mean %.4g std %.4g (%.1fs)", ", ".join(f"{len(v)} {n}" for n, v in y.items()),
             size, cfg.label_column, ym, ys, data_s)
    baseline = probe_ridge(cfg, size, images, y) if cfg.baseline and run.range_test is None else None

    torch.manual_seed(cfg.seed)
    weights = resolve_init(cfg.init, cfg.model) if cfg.init else cfg.weights
    model = create_model(cfg.model, 1, size, cfg.pretrained, weights, cfg.dropout)
    model.freeze(int(cfg.freeze) if cfg.freeze.isdigit() else cfg.freeze)
    loader = lambda n, train=False: BatchLoader(images[n], z[n], cfg.batch_size if train else cfg.eval_batch_size,
                                                shuffle=train, seed=cfg.seed)
    plan_memory(run, model, Regression(cfg.loss), loader("train", True))
    engine, state = train_model(run, model, Regression(cfg.loss), loader("train", True),
                                loader("val") if "val" in y else None, 1e-3)
    report = {"model": cfg.model, "task": "regression", "classes": None, "best_epoch": state.get("best_epoch"),
              "epochs_run": state["epoch"], "stopped_because": state["stopped_because"],
              "data": {**{n: len(v) for n, v in y.items()}, "files": {"train": str(cfg.data), "val": cfg.val, "test": cfg.test},
                       "image_size": size, "load_s": round(data_s, 2)},
              "throughput": {"train_per_s": round(sum(h["images_per_s"] for h in state["history"]) / max(1, len(state["history"])), 1)},
              "mean_predictor": mean_predictor(y["train"], {n: v for n, v in y.items() if n != "train"}),
              "config": cfg.to_dict()}
    examples = None
    for name in ("val", "test"):
        if name not in y:
            continue
        out = engine.predict(loader(name))
        pred = out["predictions"].numpy().astype(np.float64) * ys + ym
        report[name] = {**regression_scores(pred, y[name]), "loss": float(out["loss"])}
        if name == "test" or "test" not in y:  # report.html's predicted-vs-true plot
            examples = {"predictions": pred, "targets": y[name], "split": name}
    if isinstance(baseline, Baseline):
        compare(report, baseline, run.warn)
    elif baseline is not None:
        report["baseline"] = baseline
    meta = {"task": "image-regression", "model": cfg.model, "model_args": {}, "classes": ["value"],
            "preprocessing": {"image_size": size, "resize": cfg.resize, "scale": 1 / 255, "tta": None,
                              "mean": list(model.backbone.mean), "std": list(model.backbone.std),
                              "target": [ym, ys]},
            "metrics": {k: {m: report[k][m] for m in ("rmse", "mae", "r2", "n")} for k in ("val", "test") if k in report},
            "data": {"train_file": str(cfg.data), "train_images": len(y["train"]), "label_column": cfg.label_column,
                     "encoding": cfg.encoding}}
    return finish(run, model, report, state, meta, examples)
