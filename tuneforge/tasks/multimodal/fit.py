"""`fit` for image + text tables (`--modalities image,text`, or one of them for the baselines):
the table reader, a stratified seeded split saved in the run folder (rare classes folded into
"other"), decode + tokenise once, frozen encoders run once and cached on disk, the fusion model
(core/models/fusion.py) trained by `core/strategies/fusion.FusionSupervised` on
`core/data/loader.MultimodalLoader` batches, through the same `core.run.train_model` (engine,
callbacks) and `core.run.finish` (report, bundle with the tokenizer; task "image-text-classification")."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from ...config import FitConfig
from ...core.baseline import Baseline, compare, skipped, tfidf_baseline
from ...core.bundle import save_bundle
from ...core.data.cache import digest, memoised
from ...core.data.images import _cache_key, decode_cached
from ...core.progress import phase
from ...core.data.loader import MultimodalLoader
from ...core.data.multimodal import ImageTextTable, read_image_text_table
from ...core.data.split import stratified_split, write_manifest
from ...core.data.tables import is_dataset_dict
from ...core.data.text import find_text_splits, is_table
from ...core.data.text_loader import pad_batch
from ...core.metrics import classification_metrics
from ...core.models import create_model
from ...core.models.fusion import FusionHead
from ...core.models.text import hf_model_path, load_tokenizer, masked_pool
from ...core.run import FitResult, Run, finish, train_model
from ...core.strategies.fusion import FusionSupervised
from ...core.tokenizer import TOKENIZER_DIR, TextEncoding
from ...errors import ConfigError, DataError

log = logging.getLogger("tuneforge")
TASK = "image-text-classification"
OTHER = "other"


def modalities(cfg: FitConfig) -> tuple[str, ...]:
    return tuple(m.strip() for m in (cfg.modalities or "image,text").split(","))


# ---------------------------------------------------------------- data

def fold_rare(labels: list[str], min_count: int) -> tuple[list[str], list[str]]:
    """Labels with classes of fewer than `min_count` rows renamed "other"; the folded names."""
    counts: dict[str, int] = {}
    for l in labels:
        counts[l] = counts.get(l, 0) + 1
    rare = sorted(c for c, n in counts.items() if n < min_count)
    if not rare:
        return labels, []
    rare_set = set(rare)
    return [OTHER if l in rare_set else l for l in labels], rare


def split_rows(labels: np.ndarray, test_fraction: float, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Stratified, seeded: test first (so it does not depend on val_fraction), then val from the rest."""
    idx = np.arange(len(labels))
    out = {}
    if test_fraction > 0:
        rest, te = stratified_split(labels, test_fraction, seed)
        out["test"], idx = te, rest
    if val_fraction > 0:
        tr, va = stratified_split(labels[idx], val_fraction, seed + 1)
        out["val"], idx = idx[va], idx[tr]
    out["train"] = idx
    return out


def _read(cfg: FitConfig, path: str | Path, allow_missing: bool) -> ImageTextTable:
    return read_image_text_table(path, cfg.image_column, cfg.text_column, cfg.label_column, cfg.image_root,
                                 strict=cfg.strict, allow_missing=allow_missing, encoding=cfg.encoding)


@torch.inference_mode()
def _batched(fn, n: int, batch_size: int, dtype: torch.dtype = torch.float32, what: str = "rows") -> torch.Tensor:
    """A frozen encoder over `n` rows in batches, with its progress said (the long silence
    before a fusion fit's first line was this)."""
    out = []
    with phase(f"encoding {what} with the frozen encoder", n, what) as p:
        for i in range(0, n, batch_size):
            out.append(fn(slice(i, i + batch_size)).to(dtype))
            p.advance(min(batch_size, n - i))
    return torch.cat(out)


def _load_tables(cfg: FitConfig, run_dir: Path, allow_missing: bool, resume: bool = False) -> tuple[dict[str, ImageTextTable], dict, list[str], dict]:
    """Per split: its table rows; plus the per-split row indices, classes and the fold record."""
    if not cfg.image_column or not cfg.text_column:
        raise ConfigError("--modalities needs --image-column and --text-column (the baselines read the same rows)")
    if cfg.data is None or not is_table(cfg.data):
        raise DataError(f"--data: no such file: {cfg.data} (image+text data is one CSV/TSV/JSONL/Parquet table "
                        "or a datasets folder)")
    # a DatasetDict folder: its train split, and its validation/test splits unless given
    files = find_text_splits(Path(cfg.data)) if is_dataset_dict(cfg.data) else {"train": Path(cfg.data)}
    files.update({n: Path(getattr(cfg, n)) for n in ("val", "test") if getattr(cfg, n)})
    full = _read(cfg, files["train"], allow_missing)
    tables = {"train": full}
    extra = {n: _read(cfg, files[n], allow_missing) for n in ("val", "test") if n in files}
    labels, folded = fold_rare(full.labels, cfg.min_class_count)
    if folded:
        log.info("classes with fewer than %d rows folded into %r: %s", cfg.min_class_count, OTHER, ", ".join(folded))
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[l] for l in labels])
    parts = split_rows(y, 0.0 if "test" in extra else cfg.test_fraction, 0.0 if "val" in extra else cfg.val_fraction, cfg.seed)
    rows = {n: (full, parts[n], y[parts[n]]) for n in parts}
    fold_set = set(folded)
    for n, t in extra.items():
        ls = [OTHER if l in fold_set else l for l in t.labels]
        keep = np.array([i for i, l in enumerate(ls) if l in index], dtype=np.int64)
        unknown = len(ls) - len(keep)
        if unknown:
            log.warning("%s: %d rows have labels the training data lacks; left out", files[n], unknown)
        rows[n] = (t, keep, np.array([index[ls[i]] for i in keep], dtype=np.int64))
    write_manifest(run_dir / "split.json", classes, {n: [int(r[0].rows[i]) for i in r[1]] for n, r in rows.items()},
                   cfg.seed, resume=resume, unit="line", roots={n: str(files.get(n, files["train"])) for n in rows},
                   folded_into_other=folded, min_class_count=cfg.min_class_count,
                   skipped={n: r[0].skipped for n, r in rows.items()})
    return rows, tables, classes, {"folded": folded}


def train_baseline(cfg: FitConfig, splits: dict, num_classes: int) -> Baseline | dict | None:
    """TF-IDF + linear SVM on the text column of the same rows (core/baseline.py): seconds, where
    a one-modality model (--modalities text) runs an encoder. None with --no-baseline."""
    if not cfg.baseline:
        return None
    texts = {n: [table.texts[i] or "" for i in idx.tolist()] for n, (table, idx, _) in splits.items()}
    if not any(t.strip() for t in texts["train"]):
        return skipped("tfidf", f"the training rows' {cfg.text_column!r} column holds no text")
    return tfidf_baseline((texts["train"], splits["train"][2].numpy()),
                          {n: (texts[n], splits[n][2].numpy()) for n in ("val", "test") if n in splits}, num_classes, cfg.seed)


def fit_multimodal(cfg: FitConfig, run: Run) -> FitResult:
    """Fit a fusion model (or a one-modality baseline) on an image+text table."""
    run_dir = run.dir

    mods = modalities(cfg)
    both = len(mods) == 2
    image_size = cfg.image_size or 224
    t_data = time.perf_counter()
    # Rows lacking one input are kept (and dropped below for a model without that input) when
    # the fusion model learns to do without: every modality choice then sees the same split.
    rows, _, classes, fold = _load_tables(cfg, run_dir, allow_missing=cfg.modality_dropout > 0, resume=run.resuming)

    # Decode every image once (disk-cached by content), tokenise every text once.
    sources = {}  # table id -> (table, images uint8 (N,3,S,S), has_image, ids, has_text)
    enc = TextEncoding(cfg.max_length, tokenizer=load_tokenizer(hf_model_path(cfg.text_model))) if "text" in mods else None
    decode_key = {}
    for table, _, _ in rows.values():
        if id(table) in sources:
            continue
        files = [p for p in table.images if p is not None]
        has_image = torch.tensor([p is not None for p in table.images])
        images = torch.zeros(len(table) if "image" in mods else 0, 3, image_size, image_size, dtype=torch.uint8)
        if "image" in mods and files:
            arr, ok, skipped = decode_cached(files, image_size, cfg.resize, cfg.cache_dir, cfg.workers, cfg.strict, cfg.cache)
            where = torch.nonzero(has_image).flatten()
            good = where[torch.from_numpy(ok)]
            images[good] = torch.from_numpy(arr)
            has_image[where[~torch.from_numpy(ok)]] = False
            decode_key[id(table)] = _cache_key(files, image_size, cfg.resize)  # by content, as the decode cache
        has_text = torch.tensor([t is not None for t in table.texts])
        ids = enc([t or "" for t in table.texts]) if enc else None
        sources[id(table)] = (table, images, has_image, ids, has_text)
    # Rows with no usable input for the chosen modalities (an image that did not decode) go.
    splits = {}
    for name, (table, idx, y) in rows.items():
        _, images, has_image, ids, has_text = sources[id(table)]
        usable = torch.zeros(len(table), dtype=torch.bool)
        if "image" in mods:
            usable |= has_image
        if "text" in mods:
            usable |= has_text
        if not both:  # a single-modality model needs its one input
            usable = has_image if mods == ("image",) else has_text
        keep = [k for k, i in enumerate(idx.tolist()) if usable[i]]
        if len(keep) < len(idx):
            log.warning("%s split: %d rows without a usable %s left out", name, len(idx) - len(keep), "/".join(mods))
        splits[name] = (table, torch.as_tensor(idx[keep], dtype=torch.long), torch.as_tensor(y[keep], dtype=torch.long))
    if len(splits["train"][1]) == 0:
        raise DataError(f"{cfg.data}: no usable training rows")
    data_s = time.perf_counter() - t_data

    baseline = train_baseline(cfg, splits, len(classes)) if run.range_test is None else None

    torch.manual_seed(cfg.seed)
    model_args = {"image_model": cfg.image_model, "text_model": cfg.text_model, "modalities": ",".join(mods),
                  "fusion": cfg.fusion, "dim": cfg.fusion_dim, "pooling": cfg.pooling}
    model = create_model("fusion", len(classes), image_size, cfg.pretrained, None, cfg.dropout, **model_args)
    default_freeze = cfg.freeze if cfg.freeze != "none" else "backbone"
    freeze = {"image": cfg.image_freeze or default_freeze, "text": cfg.text_freeze or default_freeze}
    model.freeze_encoders(freeze["image"], freeze["text"])
    # --lr auto: the range test scales every group alike, so the encoders keep these ratios to the head's rate
    lr = cfg.lr if cfg.lr not in (None, "auto") else 1e-3
    for name, enc_lr in (("image", cfg.image_lr or lr * 0.1), ("text", cfg.text_lr or lr * 0.05)):
        m = model.backbone.encoders().get(name)
        if m is not None:
            for p in m.parameters():
                p.lr_scale = enc_lr / lr  # read by engine/optim.param_groups: per-modality learning rates
    b = model.backbone
    tokens = cfg.fusion == "attention" and both

    # Per source table: what the model reads, cached encoder outputs where an encoder is frozen.
    t_feat = time.perf_counter()
    per_source: dict[int, dict] = {}
    cached_info = {}
    for sid, (table, images, has_image, ids, has_text) in sources.items():
        inp: dict = {}
        if "image" in mods:
            inp["has_image"] = has_image.float()
            if cfg.cache_features and model.encoder_frozen("image"):
                # One cache entry per (encoder, size, files): the map cells, from which the
                # pooled vector is their mean, so late, gated and attention runs share it.
                key = f"{cfg.image_model}:{cfg.pretrained}:{image_size}:{cfg.resize}:{decode_key.get(sid)}"
                which = torch.nonzero(has_image).flatten()
                big = len(which) * b.image_dim * max(1, (image_size // 32) ** 2) * 4 > (2 << 30)
                model.eval()
                feats = memoised(cfg.cache_dir, f"image-{digest(key)}", lambda: {"x": _batched(
                    lambda s: b.image_tokens(images[which[s]]), len(which), cfg.eval_batch_size,
                    torch.bfloat16 if big else torch.float32, "images")}, cfg.cache)["x"]
                if not tokens:
                    feats = feats.float().mean(1, keepdim=True)  # = the backbone's pool (global average)
                full = torch.zeros((len(table),) + feats.shape[1:], dtype=feats.dtype)
                full[which] = feats
                inp["image_tokens"] = full
                cached_info["image"] = list(feats.shape[1:])
            else:
                inp["images"] = images
        if "text" in mods:
            inp["has_text"] = has_text.float()
            if cfg.cache_features and model.encoder_frozen("text"):
                key = f"{cfg.text_model}:{cfg.pretrained}:{cfg.max_length}:" + digest(json.dumps(ids), length=64)
                padded = pad_batch(ids, None, enc.pad_id)
                pad, mask = padded["input_ids"], padded["attention_mask"]
                model.eval()
                feats = memoised(cfg.cache_dir, f"text-{digest(key)}", lambda: {"x": _batched(
                    lambda s: b.text_tokens(pad[s], mask[s]), len(ids), cfg.eval_batch_size, what="texts")}, cfg.cache)["x"]
                if tokens:
                    inp["text_tokens"], inp["text_mask"] = feats, mask
                else:  # the encoder's own pooling of the cached token states
                    inp["text_tokens"] = masked_pool(feats, mask, b.text.pooling)[:, None]
                    inp["text_mask"] = torch.ones(len(ids), 1, dtype=torch.long)
                cached_info["text"] = list(inp["text_tokens"].shape[1:])
            else:
                inp["input_ids"] = ids
        per_source[sid] = inp
    if cached_info:
        log.info("frozen encoders: cached %s in %.1fs", ", ".join(f"{k} {'x'.join(map(str, v))}" for k, v in cached_info.items()),
                 time.perf_counter() - t_feat)
    feat_s = time.perf_counter() - t_feat

    def subset(inp: dict, idx: torch.Tensor) -> dict:
        return {k: ([v[i] for i in idx.tolist()] if isinstance(v, list) else v[idx]) for k, v in inp.items()}

    inputs = {n: subset(per_source[id(t)], idx) for n, (t, idx, _) in splits.items()}
    pad_id = enc.pad_id if enc else 0

    def loader(name: str, train: bool = False) -> MultimodalLoader:
        return MultimodalLoader(inputs[name], splits[name][2], cfg.batch_size if train else cfg.eval_batch_size,
                                shuffle=train, seed=cfg.seed, pad_id=pad_id)

    strategy = FusionSupervised(cfg.modality_dropout if both else 0.0, cfg.label_smoothing,
                                cfg.augment if "images" in inputs["train"] else "none")
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("data: %s rows, %d classes, %dpx (%.1fs); fusion %s of %s, %d trainable parameters",
             ", ".join(f"{len(s[1])} {n}" for n, s in splits.items()), len(classes), image_size, data_s,
             b.fusion, "+".join(mods), n_train)
    frozen_all = all(k in cached_info for k in mods)
    trainable = FusionHead(model) if frozen_all else model
    if frozen_all and torch.get_num_threads() > 1:
        # Head-only steps are tiny matrix products: with a second thread they wait on each other
        # (measured on this shared 2-core machine under load: 0.5 s vs 0.011 s per step).
        torch.set_num_threads(1)
    engine, state = train_model(run, trainable, strategy, loader("train", True),
                          loader("val") if "val" in splits else None, lr)

    report = {"model": "fusion", "task": TASK, "classes": classes, "modalities": list(mods), "fusion": b.fusion,
              "best_epoch": state.get("best_epoch"), "epochs_run": state["epoch"], "stopped_because": state["stopped_because"],
              "data": {**{n: len(s[1]) for n, s in splits.items()}, "file": str(cfg.data), "image_size": image_size,
                       "load_s": round(data_s, 2), "features_s": round(feat_s, 2), "folded_into_other": fold["folded"],
                       "skipped": {n: s[0].skipped for n, s in splits.items()}},
              "encoders": {"image": cfg.image_model if "image" in mods else None, "text": cfg.text_model if "text" in mods else None,
                           "freeze": freeze, "cached": cached_info},
              "config": cfg.to_dict()}
    examples = None
    for name in ("val", "test"):
        if name not in splits:
            continue
        out = engine.predict(loader(name))
        report[name] = classification_metrics(out["logits"], splits[name][2], classes)
        if both:  # the same rows with one input taken away: what a missing modality costs
            for drop in ("image", "text"):
                ld = loader(name)
                ld.inputs = {**ld.inputs, f"has_{drop}": torch.zeros(len(splits[name][1]))}
                o = engine.predict(ld)
                report[name][f"accuracy_without_{drop}"] = float((o["logits"].argmax(1) == splits[name][2]).float().mean())
        if name == "test" or "test" not in splits:
            table, idx, y = splits[name]
            _, images, *_ = sources[id(table)]
            examples = {"images": images[idx].numpy() if "image" in mods else None,
                        "texts": [table.texts[i] or "" for i in idx.tolist()], "logits": out["logits"].numpy(),
                        "targets": y.numpy(), "paths": [f"{cfg.data if table is rows['train'][0] else ''}:{table.rows[i]}"
                                                         for i in idx.tolist()]}
    if isinstance(baseline, Baseline):
        compare(report, baseline, run.warn)
    elif baseline is not None:
        report["baseline"] = baseline
    if "text" in mods and hasattr(b.text, "hf_config"):
        model_args["hf_config"] = b.text.hf_config()
    pre = {"image_size": image_size, "resize": cfg.resize, "scale": 1 / 255, "max_length": cfg.max_length, "pad_id": pad_id,
           "tokenizer": TOKENIZER_DIR if enc else None, "modalities": list(mods)}
    meta = {"task": TASK, "model": "fusion", "model_args": model_args, "classes": classes, "preprocessing": pre,
            "metrics": {k: {m: report[k][m] for m in ("accuracy", "macro_f1", "n")} for k in ("val", "test") if k in report},
            "data": {"train_file": str(cfg.data), "image_column": cfg.image_column, "text_column": cfg.text_column,
                     "label_column": cfg.label_column, "image_root": cfg.image_root, "encoding": cfg.encoding}}
    # tokenizer files go beside the weights, listed with their checksums
    return finish(run, model, report, state, meta, examples, save=lambda d: save_bundle(d, model, meta, tokenizer=enc))


# ---------------------------------------------------------------- prediction
