"""`tuneforge pretrain`: self-supervised pretraining of an image backbone on unlabeled images.

    run = tuneforge.pretrain(data="unlabeled/", model="fast-cnn", method="simclr", epochs=20,
                             probe="cifar10/")          # kNN accuracy on labelled images per epoch
    tuneforge.fit(data="few_labels/", model="fast-cnn", init=run.run_dir)

The same engine as `fit` (`api._train`: optimizer, schedule, checkpoints, exact --resume,
metrics, progress, --max-minutes); only the strategy (`strategies/ssl.py`) and the loader
differ. From random init (`--no-pretrained`, or a model without packaged weights), or from
the packaged / given weights: continued, domain-adaptive pretraining. The run folder gets
`backbone.safetensors` (what `fit --init RUN` loads), `pretrain.json`, `report.json/html`,
metrics and checkpoints, like a fit run."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ...config import PretrainConfig
from ...core.device import channels_last
from ...core.data import load_image_folder, scan_class_folders, stratified_split, subsample_per_class
from ...core.data.unlabeled import UnlabeledLoader, load_unlabeled, scan_unlabeled
from ...core.engine.callbacks import EpochMeasure
from ...core.models import create_model, model_spec
from ...core.strategies.ssl import build_ssl
from ...core.models.weights import BACKBONE_FILE, resolve_init
from ...core.run import prepare, train_model
from ...core.report import write_report
from ...core.fs import atomic_write_text
from .common import PretrainResult, resolve
from .text import pretrain_text

log = logging.getLogger("tuneforge")


class KNNProbe(EpochMeasure):
    """Weighted kNN accuracy (cosine similarity, votes exp(s / 0.07), InstDisc/DINO style) of the
    backbone's pooled features: a labelled memory bank, a labelled query set, no training. Run
    before the first epoch (the starting point) and after each one, as `probe_knn_accuracy`."""

    start_key, record_key, label = "probe_start", "probe_knn_accuracy", "kNN probe"

    def __init__(self, bank: tuple[torch.Tensor, torch.Tensor], query: tuple[torch.Tensor, torch.Tensor],
                 k: int = 20, batch_size: int = 512):
        self.bank, self.query, self.k, self.batch_size = bank, query, k, batch_size

    @torch.inference_mode()
    def _features(self, model, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.normalize(model(images[i:i + self.batch_size].float().div_(255)).float(), dim=1)
                          for i in range(0, len(images), self.batch_size)])

    def score(self, model) -> float:
        bank, q = self._features(model, self.bank[0]), self._features(model, self.query[0])
        sim, idx = (q @ bank.T).topk(min(self.k, len(bank)), dim=1)
        votes = torch.zeros(len(q), int(self.bank[1].max()) + 1)
        votes.scatter_add_(1, self.bank[1][idx], (sim / 0.07).exp())
        return (votes.argmax(1) == self.query[1]).float().mean().item()


def _probe_sets(cfg: PretrainConfig, size: int) -> tuple[tuple, tuple]:
    root = Path(cfg.probe)
    kw = dict(size=size, resize=cfg.resize, cache_dir=cfg.cache_dir, workers=cfg.workers, strict=cfg.strict,
              store=cfg.cache)

    def load(folder: Path, classes=None):
        found, items = scan_class_folders(folder)
        keep = subsample_per_class(np.array([l for _, l in items]), cfg.probe_per_class, cfg.seed)
        s = load_image_folder(folder, classes=classes, items=[items[i] for i in keep], **kw)
        return s
    if (root / "train").is_dir() and (root / "test").is_dir():
        bank = load(root / "train")
        query = load(root / "test", bank.classes)
    else:
        full = load(root)
        b, q = stratified_split(full.labels.numpy(), 0.5, cfg.seed)
        bank, query = full.subset(b), full.subset(q)
    return (bank.images, bank.labels), (query.images, query.labels)


# A self-supervised epoch of fewer steps than this in all has barely moved the backbone.
MIN_SSL_STEPS = 100
# Steps an epoch should have at least when the batch size is chosen for a small pool.
SMALL_POOL_STEPS = 8


def pool_batch_size(requested: int, images: int) -> int:
    """The batch of a pool of `images` when --batch-size was not given: the default (256) for
    a large pool, but at least SMALL_POOL_STEPS steps an epoch for a small one (never under 32:
    contrastive losses need negatives). The last partial batch is dropped, so 500 images at 256
    would be one step an epoch, 20 steps in a 20-epoch run."""
    return min(requested, max(32, images // SMALL_POOL_STEPS))


def _choose_batch(cfg: PretrainConfig) -> str | None:
    """`resolve` for a run whose --batch-size is not given: the batch from the pool's size (set
    before config.yaml is written, so the run records what it used); returns the reason, said
    once the run's console is set up."""
    n = len(scan_unlabeled(cfg.data, "--data"))
    b = pool_batch_size(cfg.batch_size, n)
    if b == cfg.batch_size:
        return None
    was = max(1, n // cfg.batch_size)  # a pool smaller than a batch is one batch
    why = (f"pretrain: batch size {b} (not the default {cfg.batch_size}): {n} unlabeled images make "
           f"{was} step{'s' * (was != 1)} an epoch at {cfg.batch_size}, {n // b} at {b} (--batch-size sets it)")
    cfg.batch_size = b
    return why


def ssl_warnings(cfg: PretrainConfig, loader: UnlabeledLoader) -> list[str]:
    """Too few steps in all: the run ends with the backbone it started from, or close to it."""
    total = cfg.epochs * len(loader)
    if total >= MIN_SSL_STEPS:
        return []
    need = -(-MIN_SSL_STEPS // len(loader))
    return [f"self-supervised pretraining of only {total} steps in all ({cfg.epochs} epochs x {len(loader)} steps of "
            f"{loader.batch_size} images; an epoch is one pass over the {len(loader.images)} unlabeled images, the last "
            f"partial batch dropped): too few to change the backbone much. Give --epochs {need} or more (at least "
            f"{MIN_SSL_STEPS} steps), or a smaller --batch-size"]


def pretrain(config: PretrainConfig | None = None, **kwargs) -> PretrainResult:
    """Self-supervised pretraining; every keyword is a PretrainConfig field (= a CLI flag)."""
    # not given (here or in `config`) and not resuming: the batch follows the pool's size
    auto_batch = kwargs.get("batch_size", getattr(config, "batch_size", None)) is None and not kwargs.get("resume")

    said: list[str] = []

    def resolve_all(cfg: PretrainConfig) -> None:
        resolve(cfg)
        if auto_batch and cfg.method != "mlm" and not cfg.resume:
            said.extend(filter(None, [_choose_batch(cfg)]))
    run = prepare(PretrainConfig, config, kwargs, name=lambda c: f"pretrain-{c.method}", resolve=resolve_all, recipes=False)
    for line in said:
        log.info("%s", line)
    cfg, run_dir, t_start = run.cfg, run.dir, run.t_start
    if cfg.method == "mlm":  # text encoders: continued masked-language-model pretraining
        return pretrain_text(run)
    spec = model_spec(cfg.model)
    size = cfg.image_size or spec.default_image_size
    pool = load_unlabeled(cfg.data, size, cfg.resize, cfg.cache_dir, cfg.workers, cfg.strict, flag="--data", store=cfg.cache)
    probe = KNNProbe(*_probe_sets(cfg, size), cfg.knn_k, cfg.eval_batch_size) if cfg.probe else None
    data_s = time.perf_counter() - t_start
    log.info("pretrain: %d unlabeled images at %dpx (%.1fs)", len(pool), size, data_s)

    torch.manual_seed(cfg.seed)
    weights = resolve_init(cfg.init, cfg.model) if cfg.init else None
    encoder = create_model(cfg.model, 1, size, cfg.pretrained, weights)
    if hasattr(encoder.backbone, "init_from_data") and weights is None:
        # fast-cnn's patch whitening: a statistic of the images, no labels involved.
        pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(cfg.seed))[:5000]
        encoder.backbone.init_from_data(pool.images[pick].float().div_(255.0))
    if channels_last(run.device, cfg.channels_last):  # per device: off on MPS (core/device.py)
        encoder = encoder.to(memory_format=torch.channels_last)
        encoder.channels_last = True
    model, strategy = build_ssl(cfg.method, encoder, cfg.proj_dim, cfg.proj_hidden, cfg.temperature,
                                cfg.ema if cfg.ema is not None else 0.99)
    loader = UnlabeledLoader(pool.images, cfg.batch_size, cfg.seed)
    loader.warnings = ssl_warnings(cfg, loader)  # said by train_model (console and report)
    if len(pool) < cfg.batch_size:
        log.warning("--batch-size %d > %d images: batches of %d", cfg.batch_size, len(pool), loader.batch_size)
    default_lr = 0.1 if cfg.optimizer == "sgd" else 1e-3
    engine, state = train_model(run, model, strategy, loader, None, default_lr,
                           extra_callbacks=(probe,) if probe else ())

    backbone_path = run_dir / BACKBONE_FILE
    save_file({k: v.detach().contiguous() for k, v in encoder.backbone.state_dict().items()}, str(backbone_path))
    probes = [r["probe_knn_accuracy"] for r in state["history"] if "probe_knn_accuracy" in r]
    report = {"kind": "pretrain", "method": cfg.method, "model": cfg.model, "image_size": size,
              "start": "init file" if weights else ("packaged weights" if cfg.pretrained and spec.loads_weights() else "random init"),
              "data": {"unlabeled": len(pool), "folder": str(cfg.data), "skipped": pool.skipped, "decode_s": round(data_s, 2)},
              "epochs_run": state["epoch"], "stopped_because": state["stopped_because"],
              "probe": {"folder": cfg.probe, "knn_k": cfg.knn_k, "before": state.get("probe_start"),
                        "after": probes[-1] if probes else None, "per_epoch": probes} if probe else None,
              "backbone": str(backbone_path), "config": cfg.to_dict(), "warnings": list(run.warnings),
              "fit_s": round(state.get("fit_s", 0.0), 2), "wall_s": round(time.perf_counter() - t_start, 2)}
    atomic_write_text(run_dir / "pretrain.json", json.dumps({"model": cfg.model, "method": cfg.method, "image_size": size,
                                                       "epochs": state["epoch"], "probe": report["probe"]}, indent=1))
    paths = write_report(run_dir, report, state["history"])
    report["html_path"] = str(paths["html"])
    if cfg.progress and probe:
        log.info("kNN probe: %.4f before, %.4f after %d epochs", report["probe"]["before"] or 0,
                 report["probe"]["after"] or 0, state["epoch"])
    return PretrainResult(run_dir, backbone_path, report, cfg)
