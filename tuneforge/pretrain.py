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

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from . import config as cfgmod
from .config import opt
from .data import load_image_folder, scan_class_folders, stratified_split, subsample_per_class
from .data.unlabeled import UnlabeledLoader, load_unlabeled
from .engine import load_checkpoint
from .engine.callbacks import EpochMeasure
from .errors import ConfigError, DataError
from .models import create_model, model_spec
from .strategies.ssl import METHODS, build_ssl
from .unlabeled import BACKBONE_FILE, resolve_init

log = logging.getLogger("tuneforge")


@dataclass
class PretrainConfig:
    data: str | None = opt(None, "folder of unlabeled images (any nesting; folder names are ignored); --method mlm: "
                                 "a CSV/TSV/JSONL table (--text-column) or a .txt file with one text per line")
    out: str | None = opt(None, "run folder (default: runs/pretrain-METHOD-TIMESTAMP)")
    method: str = opt("simclr", "self-supervised method (mlm: masked-language-model pretraining of a text encoder)",
                      (*METHODS, "mlm"))
    model: str = opt("fast-cnn", "model whose backbone is pretrained (an image model; --method mlm: minilm or hf:PATH); "
                                 "`tuneforge models` lists them")
    pretrained: bool = opt(True, "start from the model's packaged weights when it has them (continued pretraining); "
                                 "--no-pretrained starts from random init")
    init: str | None = opt(None, "start from a pretrain run folder or a backbone weight file instead")
    image_size: int | None = opt(None, "input size in pixels (default: the model's own)")
    resize: str = opt("crop", "how images are brought to size", ("crop", "squash"))
    epochs: int = opt(20, "passes over the unlabeled images")
    batch_size: int | None = opt(None, "images per step (each seen as two views) (default: 256; mlm: 32 texts)")
    optimizer: str | None = opt(None, "optimizer (default: sgd; mlm: adamw)", ("adam", "adamw", "sgd"))
    lr: float | None = opt(None, "peak learning rate (default: 0.1 for sgd, 1e-3 for adam/adamw; mlm: 1e-4)")
    weight_decay: float | None = opt(None, "weight decay, not on biases and norm layers (default: 5e-4; mlm: 0.01)")
    momentum: float = opt(0.9, "SGD momentum (Nesterov)")
    schedule: str = opt("cosine", "learning-rate schedule (per step)", ("constant", "cosine", "onecycle"))
    warmup_epochs: float | None = opt(None, "linear warm-up length in epochs (default: 1; mlm: 0.1)")
    temperature: float = opt(0.2, "simclr: softmax temperature of the contrastive loss")
    proj_dim: int = opt(128, "projection head output size")
    proj_hidden: int = opt(512, "projection (and predictor) hidden size")
    ema: float = opt(0.99, "byol: EMA decay of the target network")
    probe: str | None = opt(None, "labelled class folders (train/ and test/, or one tree split in half) for a kNN "
                                  "accuracy after every epoch; mlm: a labelled text table (--text-column, --label-column) "
                                  "for a logistic-regression accuracy of the mean-pooled features")
    probe_per_class: int = opt(200, "probe: images (texts) per class in the kNN memory bank (probe fit) and in the queries")
    knn_k: int = opt(20, "probe: neighbours that vote")
    max_minutes: float | None = opt(None, "stop before the epoch that would end after this many minutes")
    grad_clip: float | None = opt(None, "clip the gradient norm to this value")
    precision: str = opt("fp32", "bf16 autocast (only faster on CPUs with native bf16)", ("fp32", "bf16"))
    channels_last: bool = opt(True, "NHWC memory layout")
    seed: int = opt(0, "seed for order, views and initialisation")
    strict: bool = opt(False, "make an unreadable image an error instead of a skipped, counted file")
    cache_dir: str | None = opt(None, "decoded-image cache (default: $TUNEFORGE_CACHE or ~/.cache/tuneforge; '' disables)")
    workers: int = opt(0, "processes for decoding images (0: one per core)")
    threads: int = opt(0, "torch compute threads (0: one per core)")
    eval_batch_size: int = opt(512, "batch size of the probe's feature extraction")
    tensorboard: bool = opt(True, "write TensorBoard event files")
    progress: bool = opt(True, "show progress")
    resume: str | None = opt(None, "continue the pretrain run in this folder from its last complete epoch")
    # Text (--method mlm; tuneforge/pretrain_text.py): the readers of `fit` for text
    text_column: str | None = opt(None, "mlm: the column (CSV/TSV header, JSONL key) holding the text (default: 'text')")
    label_column: str = opt("label", "mlm --probe: the probe table's label column")
    columns: str | None = opt(None, "mlm: names of a headerless CSV/TSV file's columns in order, e.g. 'text,label' (SST-2)")
    encoding: str = opt("utf-8", "mlm: the text files' encoding")
    max_length: int = opt(128, "mlm: tokens kept per text (longer ones are truncated)")
    mask_prob: float = opt(0.15, "mlm: fraction of the tokens masked (BERT's 80% [MASK] / 10% random / 10% kept)")
    heldout_fraction: float = opt(0.05, "mlm: seeded fraction of the texts held out for the masked-token loss before/after")
    # Read by api._train; there is no validation split to select on: the last epoch is the model.
    monitor: ClassVar[str] = "val_accuracy"
    patience: ClassVar[int] = 0

    def validate(self) -> "PretrainConfig":
        mlm = self.method == "mlm"  # defaults that differ between image methods and MLM on text
        for name, image, text in (("optimizer", "sgd", "adamw"), ("batch_size", 256, 32), ("weight_decay", 5e-4, 0.01),
                                  ("warmup_epochs", 1.0, 0.1)):
            if getattr(self, name) is None:
                setattr(self, name, text if mlm else image)
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"{cfgmod.flag(f.name)}: {getattr(self, f.name)!r} is not allowed; choose one of {', '.join(choices)}")
        if self.data is None and self.resume is None:
            raise ConfigError("--data is required (a folder of unlabeled images)")
        for name in ("epochs", "batch_size", "proj_dim", "proj_hidden", "probe_per_class", "knn_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{cfgmod.flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigError("--batch-size must be >= 2 (views are compared within a batch)")
        if self.temperature <= 0 or not 0 <= self.ema < 1:
            raise ConfigError(f"--temperature must be > 0 and --ema in [0, 1), got {self.temperature}, {self.ema}")
        modality = model_spec(self.model).modality
        if mlm and not (self.model == "minilm" or self.model.startswith("hf:")):
            raise ConfigError(f"--method mlm pretrains a pretrained text encoder (--model minilm or hf:PATH), "
                              f"not --model {self.model} ({modality})")
        if not mlm and modality != "image":
            raise ConfigError(f"--model {self.model} is a text model: --method {self.method} is for images; "
                              "text encoders take --method mlm")
        if not 0 < self.mask_prob < 1 or not 0 < self.heldout_fraction < 1:
            raise ConfigError(f"--mask-prob and --heldout-fraction must be in (0, 1), got {self.mask_prob}, "
                              f"{self.heldout_fraction}")
        if self.max_length < 4:
            raise ConfigError(f"--max-length must be >= 4, got {self.max_length}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class PretrainResult:
    run_dir: Path
    backbone_path: Path
    report: dict
    config: PretrainConfig


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
    kw = dict(size=size, resize=cfg.resize, cache_dir=cfg.cache_dir, workers=cfg.workers, strict=cfg.strict)

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


def _prepare(config: PretrainConfig | None, kwargs: dict) -> tuple[PretrainConfig, Path, dict | None]:
    explicit = {**({f.name: getattr(config, f.name) for f in dataclasses.fields(config)} if config else {}), **kwargs}
    cfg = cfgmod.build(PretrainConfig, explicit)
    ckpt = None
    if cfg.resume:
        run_dir = Path(cfg.resume)
        if not (run_dir / "config.yaml").exists():
            raise ConfigError(f"--resume: {run_dir} is not a pretrain run folder (no config.yaml)")
        given = {k: v for k, v in kwargs.items() if k != "resume"}
        cfg = cfgmod.build(PretrainConfig, cfgmod.read_yaml(run_dir / "config.yaml"), given,
                           {"resume": str(run_dir), "out": str(run_dir)})
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    cfg.validate()
    from .api import _setup
    _setup(cfg.threads)
    run_dir = Path(cfg.out) if cfg.out else Path("runs") / f"pretrain-{cfg.method}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    cfgmod.write_yaml(cfg, run_dir / "config.yaml")
    return cfg, run_dir, ckpt


def pretrain(config: PretrainConfig | None = None, **kwargs) -> PretrainResult:
    """Self-supervised pretraining; every keyword is a PretrainConfig field (= a CLI flag)."""
    from .api import _train
    from .evaluate import write_report
    from safetensors.torch import save_file
    t_start = time.perf_counter()
    cfg, run_dir, resume_ckpt = _prepare(config, kwargs)
    if cfg.method == "mlm":  # text encoders: continued masked-language-model pretraining
        from .pretrain_text import pretrain_text
        return pretrain_text(cfg, run_dir, resume_ckpt, t_start)
    spec = model_spec(cfg.model)
    size = cfg.image_size or spec.default_image_size
    pool = load_unlabeled(cfg.data, size, cfg.resize, cfg.cache_dir, cfg.workers, cfg.strict, flag="--data")
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
    if cfg.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
        encoder.channels_last = True
    model, strategy = build_ssl(cfg.method, encoder, cfg.proj_dim, cfg.proj_hidden, cfg.temperature, cfg.ema)
    loader = UnlabeledLoader(pool.images, cfg.batch_size, cfg.seed)
    if len(pool) < cfg.batch_size:
        log.warning("--batch-size %d > %d images: batches of %d", cfg.batch_size, len(pool), loader.batch_size)
    default_lr = 0.1 if cfg.optimizer == "sgd" else 1e-3
    engine, state = _train(cfg, run_dir, model, strategy, loader, None, resume_ckpt, default_lr,
                           extra_callbacks=(probe,) if probe else ())

    backbone_path = run_dir / BACKBONE_FILE
    save_file({k: v.detach().contiguous() for k, v in encoder.backbone.state_dict().items()}, str(backbone_path))
    probes = [r["probe_knn_accuracy"] for r in state["history"] if "probe_knn_accuracy" in r]
    report = {"kind": "pretrain", "method": cfg.method, "model": cfg.model, "image_size": size,
              "start": "init file" if weights else ("packaged weights" if cfg.pretrained and spec.pretrained else "random init"),
              "data": {"unlabeled": len(pool), "folder": str(cfg.data), "skipped": pool.skipped, "decode_s": round(data_s, 2)},
              "epochs_run": state["epoch"], "stopped_because": state["stopped_because"],
              "probe": {"folder": cfg.probe, "knn_k": cfg.knn_k, "before": state.get("probe_start"),
                        "after": probes[-1] if probes else None, "per_epoch": probes} if probe else None,
              "backbone": str(backbone_path), "config": cfg.to_dict(),
              "fit_s": round(state.get("fit_s", 0.0), 2), "wall_s": round(time.perf_counter() - t_start, 2)}
    (run_dir / "pretrain.json").write_text(json.dumps({"model": cfg.model, "method": cfg.method, "image_size": size,
                                                       "epochs": state["epoch"], "probe": report["probe"]}, indent=1))
    paths = write_report(run_dir, report, state["history"])
    report["html_path"] = str(paths["html"])
    if cfg.progress and probe:
        log.info("kNN probe: %.4f before, %.4f after %d epochs", report["probe"]["before"] or 0,
                 report["probe"]["after"] or 0, state["epoch"])
    return PretrainResult(run_dir, backbone_path, report, cfg)
