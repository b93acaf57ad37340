"""`fit` for text files and numeric sequences: new readers, tokenizers and models feeding the
same Engine, callbacks, reports and bundle as images (core.run.train / core.run.finish).

    tuneforge fit --data sst2/ --columns text,label --model minilm --freeze backbone
    tuneforge fit --data tnews/train.tsv --test tnews/dev.tsv --columns text,label --model gru --vocab char
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from ...config import FitConfig
from ...core.data.duplicates import text_duplicates
from ...core.baseline import (Baseline, compare, mean_predictor, multilabel_tfidf_baseline, skipped, tfidf_baseline,
                              tfidf_ridge_baseline, window_baseline)
from ...core.bundle import save_bundle
from ...core.data import BatchLoader, stratified_split, subsample_per_class, write_manifest
from ...core.data.split import fingerprint
from ...core.data.sequences import read_sequences, standardize
from ...core.data.targets import numeric_targets, standardize_targets
from ...core.data.tables import is_arrow_table
from ...core.data.text import TextSet, Vocab, find_text_splits, is_table, is_text_data, read_text_file
from ...core.data.text_loader import SequenceBatchLoader
from ...errors import ConfigError, DataError
from ..semi.setup import read_semi_texts, setup_semi_text
from ...core.memory import plan_memory
from ...core.data.multilabel import multilabel_split, read_multilabel_file
from ...core.decision import check as check_decision, with_decision
from ...core.metrics import classification_metrics, multilabel_metrics, sigmoid, tune_thresholds
from ...core.models import create_model, model_spec
from ...core.models.base import HeadOnly
from ...core.models.text import extract_text_features, hf_model_path, load_tokenizer
from ...core.models.weights import resolve_init
from ...core.strategies import Supervised
from ...core.strategies.ema import EMAModel, with_ema
from ...core.strategies.features import CachedFeatures
from ...core.strategies.multilabel import MultiLabel
from ...core.strategies.regression import Regression
from ...core.run import FitResult, Run, finish, train_model
from ...core.tokenizer import TOKENIZER_DIR, VOCAB_FILE, TextEncoding

log = logging.getLogger("tuneforge")


def detect(cfg: FitConfig) -> bool:
    """The text plugin's test (tasks/text/__init__.py): a text table, or a folder of them given a text model."""
    return is_text_data(cfg.data, cfg.text_column) or (
        cfg.data is not None and Path(cfg.data).is_dir() and model_spec(cfg.model).modality == "text")


def _columns(cfg: FitConfig) -> list[str] | None:
    return [c.strip() for c in cfg.columns.split(",")] if cfg.columns else None


def _files(cfg: FitConfig) -> dict[str, Path | None]:
    data = Path(cfg.data)
    if is_arrow_table(data):  # a datasets folder is one table, not a folder of them
        found = {"train": data}
    elif data.is_dir():
        found = find_text_splits(data)
    elif data.is_file():
        found = {"train": data}
    else:
        raise DataError(f"--data: no such file or folder: {data}")
    for name in ("val", "test"):
        given = getattr(cfg, name)
        if given:
            if not is_table(given) and not Path(given).is_file():
                raise DataError(f"--{name}: no such file: {given}")
            found[name] = Path(given)
    return {k: found.get(k) for k in ("train", "val", "test")}


def load_splits(cfg: FitConfig, run_dir: Path, resume: bool = False) -> tuple[dict, dict[str, Path | None]]:
    """train/val/test TextSets (or SequenceSets); val carved from train (stratified, seeded)
    when there is no val file; split.json records files and line numbers."""
    files = _files(cfg)
    regression = cfg.task == "regression"
    multi = multi_label(cfg)
    if multi and (cfg.labels_per_class or cfg.limit_per_class):
        raise ConfigError("--labels-per-class / --limit-per-class count rows of one class: not for --multi-label")
    if cfg.sequence_column or cfg.id_column:
        feats = [c.strip() for c in cfg.feature_columns.split(",")] if cfg.feature_columns else None

        def read(path, classes=None):
            return read_sequences(path, cfg.label_column, regression, cfg.sequence_column, cfg.id_column,
                                  cfg.time_column, feats, _columns(cfg), cfg.encoding, cfg.skip_bad_rows, classes,
                                  cfg.max_length)
    else:
        text_column = cfg.text_column or "text"

        def read(path, classes=None):
            if regression:  # every label its number (core/data/targets.py)
                return numeric_targets(read_text_file(path, text_column, cfg.label_column, _columns(cfg), cfg.encoding,
                                                      cfg.skip_bad_rows), cfg.label_column)
            if multi:
                return read_multilabel_file(path, text_column, cfg.label_column, label_columns(cfg), _columns(cfg),
                                            cfg.encoding, cfg.skip_bad_rows, classes)
            return read_text_file(path, text_column, cfg.label_column, _columns(cfg), cfg.encoding, cfg.skip_bad_rows,
                                  classes)
    full = read(files["train"])
    if full.classes is not None and len(full.classes) < 2 and not multi:
        # one label trains a "classifier" that is always right: refuse it rather than report 1.0
        found = repr(full.classes[0]) if full.classes else "none"
        raise DataError(f"{files['train']}: the {cfg.label_column!r} column holds one class ({found}); a classifier "
                        f"needs at least 2 classes")
    per_class = cfg.labels_per_class or cfg.limit_per_class
    if per_class and full.classes is not None:  # seeded; the rows kept are the train/val lines of split.json
        full = full.subset(subsample_per_class(full.labels.numpy(), per_class, cfg.seed))
    if files["val"] is None and cfg.val_fraction > 0:
        if multi:
            tr, va = multilabel_split(full.labels, cfg.val_fraction, cfg.seed)
        elif regression:
            g = torch.Generator().manual_seed(cfg.seed)
            perm = torch.randperm(len(full), generator=g).numpy()
            k = max(1, int(round(cfg.val_fraction * len(full))))
            va, tr = sorted(perm[:k]), sorted(perm[k:])
        else:
            tr, va = stratified_split(full.labels.numpy(), cfg.val_fraction, cfg.seed)
        splits = {"train": full.subset(tr), "val": full.subset(va)}
        splits["val"].skipped = []
    else:
        splits = {"train": full}
        if files["val"]:
            splits["val"] = read(files["val"], full.classes)
    if files["test"]:
        splits["test"] = read(files["test"], full.classes)
    if full.classes is not None:
        has = (lambda i: (splits["train"].labels[:, i] > 0).any()) if multi else (lambda i: (splits["train"].labels == i).any())
        empty = [c for i, c in enumerate(full.classes) if not has(i)]
        if empty:
            raise DataError(f"{files['train']}: classes {empty} have no training rows")
    where = {n: (s.lines if isinstance(s, TextSet) else s.ids) for n, s in splits.items()}
    content = [x for s in splits.values() for x in (s.texts if isinstance(s, TextSet) else s.seqs, s.labels)]
    write_manifest(run_dir / "split.json", full.classes or [], where, cfg.seed, resume=resume,
                   roots={k: str(v) if v else None for k, v in files.items()}, unit="line" if isinstance(full, TextSet) else "id",
                   fingerprint=fingerprint(*content))
    return splits, files


def multi_label(cfg: FitConfig) -> bool:
    """--multi-label or --label-columns (text tables; other kinds do not read these settings)."""
    return bool(getattr(cfg, "multi_label", False) or getattr(cfg, "label_columns", None))


def label_columns(cfg: FitConfig) -> list[str] | None:
    return [c.strip() for c in cfg.label_columns.split(",") if c.strip()] if cfg.label_columns else None


def _model_setup(cfg: FitConfig, splits: dict, seq: bool) -> tuple[dict, TextEncoding | None, float | None]:
    """model_args for create_model, the text encoding, and the default learning rate."""
    pretrained = cfg.model == "minilm" or cfg.model.startswith("hf:")
    if pretrained:
        if seq:
            raise ConfigError(f"--model {cfg.model} reads text; numeric sequences take lstm, gru or transformer")
        enc = TextEncoding(cfg.max_length, tokenizer=load_tokenizer(hf_model_path(cfg.model)))
        args = {"pooling": cfg.pooling, "lora": cfg.lora, "lora_rank": cfg.lora_rank}
        lr = 1e-3 if cfg.freeze == "backbone" else 5e-4 if cfg.lora else 5e-5
        return args, enc, lr
    if cfg.lora:
        raise ConfigError("--lora applies to pretrained encoders (--model minilm or hf:PATH)")
    args = {"embed_dim": cfg.embed_dim, "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
            "pooling": cfg.pooling, "max_length": cfg.max_length}
    if seq:
        return {**args, "input_dim": int(splits["train"].seqs[0].shape[1])}, None, 2e-3
    vocab = Vocab.build(splits["train"].texts, cfg.vocab, cfg.vocab_size, cfg.min_freq)
    log.info("vocabulary: %d %s tokens from %d training texts", len(vocab), cfg.vocab, len(splits["train"]))
    return {**args, "vocab_size": len(vocab), "pad_id": vocab.pad_id}, TextEncoding(cfg.max_length, vocab=vocab), 2e-3


def train_baseline(cfg: FitConfig, splits: dict, seq: bool, scale: dict | None) -> Baseline | dict | None:
    """The classic baseline on the fit's own split (core/baseline.py): TF-IDF + linear SVM for
    texts, a linear model on the flattened window for numeric sequences; None with --no-baseline."""
    if not cfg.baseline:
        return None
    train, rest = splits["train"], {n: s for n, s in splits.items() if n in ("val", "test")}
    if seq:
        target = (scale or {}).get("target")
        unscale = (lambda v: v * target[1] + target[0]) if target else (lambda v: v)
        return window_baseline((train.seqs, train.labels.numpy()), {n: (s.seqs, s.labels.numpy()) for n, s in rest.items()},
                               target is not None, len(train.classes or []), min(32, cfg.max_length), cfg.seed, unscale)
    if scale and "target" in scale:  # text regression: TF-IDF + ridge, in the target's units
        ym, ys = scale["target"]
        return tfidf_ridge_baseline((train.texts, train.labels.numpy()), {n: (s.texts, s.labels.numpy()) for n, s in rest.items()},
                                    lambda v: v * ys + ym)
    if multi_label(cfg):
        return multilabel_tfidf_baseline((train.texts, train.labels.numpy()),
                                         {n: (s.texts, s.labels.numpy()) for n, s in rest.items()}, cfg.seed)
    try:
        return tfidf_baseline((train.texts, train.labels.numpy()), {n: (s.texts, s.labels.numpy()) for n, s in rest.items()},
                              len(train.classes), cfg.seed)
    except DataError as e:  # texts TF-IDF finds no terms in can still train this model
        return skipped("tfidf", str(e))


def fit_text(cfg: FitConfig, run: Run) -> FitResult:
    """Fit a text or numeric-sequence model (plugins `text` and `sequence`)."""
    run_dir = run.dir

    if model_spec(cfg.model).modality != "text":
        raise ConfigError(f"--model {cfg.model} is an image model; text takes minilm, hf:PATH, lstm, gru or transformer")
    seq = bool(cfg.sequence_column or cfg.id_column)
    regression = cfg.task == "regression"
    if regression and cfg.monitor != "val_loss":
        cfg.monitor = "val_loss"
    t_data = time.perf_counter()
    splits, files = load_splits(cfg, run_dir, resume=run.resuming)
    multi = multi_label(cfg)
    duplicates = text_duplicates(splits, None if multi else splits["train"].classes)  # warned about, and in the report
    unlabeled = None
    if cfg.semi:  # read (and check) the unlabeled texts before any model is loaded
        if seq or regression or multi:
            raise ConfigError("--semi works for single-label text classification (tokens), not numeric sequences, "
                              "--task regression or --multi-label")
        unlabeled = read_semi_texts(cfg, splits, files)
    classes = splits["train"].classes
    scale = None
    if seq:
        mean, std = standardize(list(splits.values()))
        scale = {"mean": mean.tolist(), "std": std.tolist()}
    if regression:  # the target is standardised too, predictions are scaled back
        mean_ref = mean_predictor(splits["train"].labels.numpy(), {n: s.labels.numpy() for n, s in splits.items() if n != "train"})
        scale = {**(scale or {}), "target": list(standardize_targets(splits))}
    model_args, enc, default_lr = _model_setup(cfg, splits, seq)
    inputs = {n: (s.seqs if seq else enc(s.texts)) for n, s in splits.items()}
    pad_id = enc.pad_id if enc else 0
    data_s = time.perf_counter() - t_data
    lens = torch.tensor([len(x) for x in inputs["train"]], dtype=torch.float)
    log.info("data: %d train, %d val, %d test %s, %s, mean length %.1f (max %d) (%.1fs)", len(splits["train"]),
             len(splits.get("val", [])), len(splits.get("test", [])), "sequences" if seq else "texts",
             f"{len(classes)} classes" if classes else "regression", lens.mean(), cfg.max_length, data_s)
    if cfg.target_recall:  # checked before training, not after it
        check_decision(cfg.target_recall, classes, "val" in splits)
    baseline = train_baseline(cfg, splits, seq, scale) if run.range_test is None else None  # lr_find stops before training

    torch.manual_seed(cfg.seed)
    weights = resolve_init(cfg.init, cfg.model) if cfg.init else cfg.weights  # a `pretrain --method mlm` run or a file
    model = create_model(cfg.model, len(classes) if classes else 1, None, cfg.pretrained, weights, cfg.dropout,
                         **model_args)
    model.freeze(int(cfg.freeze) if cfg.freeze.isdigit() else cfg.freeze)

    def loader(name: str, train: bool = False):
        return SequenceBatchLoader(inputs[name], splits[name].labels, cfg.batch_size if train else cfg.eval_batch_size,
                                   shuffle=train, seed=cfg.seed, pad_id=pad_id)

    cached = cfg.cache_features and cfg.freeze == "backbone" and not regression
    if cached:  # a frozen encoder's features never change: compute them once, train the head on them
        t_feat = time.perf_counter()
        feats = {n: extract_text_features(model, loader(n)) for n in splits}
        encode_per_s = sum(map(len, inputs.values())) / (time.perf_counter() - t_feat)
        log.info("frozen encoder: cached features of %d texts in %.1fs (%.0f texts/s)", sum(map(len, inputs.values())),
                 time.perf_counter() - t_feat, encode_per_s)
        trainable, strategy = HeadOnly(model), MultiLabel(cached=True) if multi else CachedFeatures(cfg.label_smoothing)
        make = lambda n, train=False: BatchLoader(feats[n], splits[n].labels, cfg.batch_size if train else cfg.eval_batch_size,
                                                  shuffle=train, seed=cfg.seed)
    else:
        trainable = model
        strategy = Regression(cfg.loss) if regression else MultiLabel() if multi else Supervised("none", cfg.label_smoothing)
        make = loader
    train_loader, semi = make("train", True), None
    if cfg.semi:  # tuneforge/unlabeled.py: the same semi-supervised strategies, text views or cached features
        semi = setup_semi_text(cfg, model, trainable, strategy, splits, unlabeled, enc, inputs["train"] if not cached
                               else feats["train"], run_dir, cached)
        trainable, strategy, train_loader = semi.model, semi.strategy, semi.loader
    else:  # --ema: validated, selected and saved with the averaged weights (semi: the mean teacher's decay)
        trainable, strategy = with_ema(trainable, strategy, cfg.ema)
    trainable_params = sum(p.numel() for p in trainable.parameters() if p.requires_grad)
    log.info("model %s: %d trainable of %d parameters", cfg.model, trainable_params, sum(p.numel() for p in model.parameters()))
    plan_memory(run, trainable, strategy, train_loader)  # says the step's peak memory; splits it or refuses
    engine, state = train_model(run, trainable, strategy, train_loader,
                          make("val") if "val" in splits else None, default_lr,
                           extra_callbacks=tuple(semi.callbacks) if semi else ())
    if isinstance(trainable, EMAModel):
        trainable.finalize()

    report = {"model": cfg.model, "task": "regression" if regression else "multi-label" if multi else "classification",
              "classes": classes,
              "best_epoch": state.get("best_epoch"), "epochs_run": state["epoch"], "stopped_because": state["stopped_because"],
              "data": {**{n: len(s) for n, s in splits.items()}, "files": {k: str(v) if v else None for k, v in files.items()},
                       "max_length": cfg.max_length, "mean_length": round(float(lens.mean()), 2), "load_s": round(data_s, 2),
                       "skipped": [r for s in splits.values() for r in s.skipped],
                       "unknown_labels": {n: s.unknown for n, s in splits.items() if s.unknown},
                       "duplicates": duplicates},
              "throughput": {"train_per_s": round(sum(h["images_per_s"] for h in state["history"]) / max(1, len(state["history"])), 1),
                             **({"encode_per_s": round(encode_per_s, 1)} if cached else {})},
              "config": cfg.to_dict()}
    if semi:
        report["semi"] = semi.finish(state, classes)
    examples, thresholds, scores = None, None, {}
    for name in ("val", "test"):
        if name not in splits:
            continue
        ld = make(name)
        t0 = time.perf_counter()
        out = engine.predict(ld)
        report["throughput"][f"{name}_predict_per_s"] = round(len(splits[name]) / (time.perf_counter() - t0), 1)
        unsort = ld.unsort if isinstance(ld, SequenceBatchLoader) else (lambda x: x)
        if regression:
            ym, ys = scale["target"]
            pred, target = unsort(out["predictions"]) * ys + ym, splits[name].labels * ys + ym
            report[name] = {"n": len(target), "rmse": float((pred - target).pow(2).mean().sqrt()),
                            "mae": float((pred - target).abs().mean()), "loss": float(out["loss"]),
                            "r2": float(1 - (pred - target).pow(2).sum() / (target - target.mean()).pow(2).sum().clamp_min(1e-12))}
            if name == "test" or "test" not in splits:  # report.html's predicted-vs-true plot
                examples = {"predictions": pred.numpy(), "targets": target.numpy(), "split": name}
            continue
        logits = unsort(out["logits"])
        if multi:  # thresholds from validation only (val comes first); test is scored with them
            if name == "val" or thresholds is None:
                thresholds = tune_thresholds(sigmoid(logits.numpy()), splits[name].labels.numpy()) \
                    if name == "val" else [0.5] * len(classes)
            report[name] = multilabel_metrics(logits, splits[name].labels, classes, thresholds)
            continue
        report[name] = classification_metrics(logits, splits[name].labels, classes)
        scores[name] = (logits.numpy(), splits[name].labels.numpy())
        if name == "test" or "test" not in splits:
            s = splits[name]
            examples = {"texts": s.texts, "logits": logits.numpy(), "targets": s.labels.numpy(),
                        "paths": [f"{s.path}:{l}" for l in s.lines] if isinstance(s, TextSet) else s.ids}
    if isinstance(baseline, Baseline):
        compare(report, baseline, run.warn)
    elif baseline is not None:
        report["baseline"] = baseline
    if regression:
        report["mean_predictor"] = mean_ref
    backbone = model.backbone
    if getattr(backbone, "lora", False):
        backbone.merge_lora()  # the bundle holds a plain encoder with the adapters folded in
        model_args["lora"] = False
    if hasattr(backbone, "hf_config"):
        model_args["hf_config"] = backbone.hf_config()
    pre = {"image_size": None, "max_length": cfg.max_length, "pad_id": pad_id,
           "tokenizer": None if seq else (VOCAB_FILE if enc.vocab else TOKENIZER_DIR)}
    if scale:
        pre["scale"] = scale
    meta = {"task": "text-multilabel" if multi else ("sequence-" if seq else "text-") + ("regression" if regression else "classification"),
            "model": cfg.model, "model_args": model_args, "classes": classes or ["value"], "preprocessing": pre,
            "metrics": {k: {m: report[k][m] for m in (("rmse", "mae", "n") if regression else ("micro_f1", "macro_f1", "mAP", "n")
                                                      if multi else ("accuracy", "macro_f1", "n"))}
                        for k in ("val", "test") if k in report},
            "data": {"train_file": str(files["train"]), "train_rows": len(splits["train"]), "text_column": cfg.text_column or "text",
                     "label_column": cfg.label_column, "columns": cfg.columns, "encoding": cfg.encoding}}
    if multi:  # per-label decision thresholds (validation-tuned), read by predict, serve and the ONNX bundle
        meta["thresholds"] = thresholds
        meta["data"]["label_columns"] = cfg.label_columns
        report["thresholds"] = dict(zip(classes, thresholds))
    if seq:  # the table layout, so predict/evaluate/batch read a table as training did
        meta["data"].update({k: getattr(cfg, k) for k in ("sequence_column", "id_column", "time_column", "feature_columns")})
    if cfg.target_recall:
        with_decision(cfg.target_recall, classes, scores, report, meta)
    # tokenizer / vocabulary files go beside the weights, listed with their checksums
    return finish(run, model, report, state, meta, examples, save=lambda d: save_bundle(d, model, meta, tokenizer=enc))
