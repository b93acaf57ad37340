"""Contrastive image-text alignment and what an aligned pair is for: `align` (train),
`retrieve` (text -> images, image -> texts, Recall@k), `zeroshot` (classify by class-name
prompts) and `embed` (a folder's embeddings, saved once).

    run = tuneforge.align(data="captions.csv", image_column="image", text_column="caption",
                          image_root="images", out="runs/pair")
    tuneforge.retrieve("runs/pair", query="a dog runs on grass", images="photos/")
    tuneforge.zeroshot("runs/pair", data="photos/", prompts=["a photo of a {}"])

The encoders stay frozen by default, so what they compute for an image or a caption never
changes: pooled features are computed once and cached on disk, keyed by the encoder's weights,
the input size and the files' contents (or the texts). Training the projection heads on them
takes seconds; `retrieve`/`zeroshot` on a folder seen before skip the image encoder entirely.
Training is the one Engine with the `Contrastive` strategy, through `core.run.train`."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ...config import AlignConfig, flag
from ...core.data import list_images, scan_class_folders
from ...core.data.cache import ItemCache, digest, memoised
from ...core.data.images import decode_files
from ...core.data.multimodal import read_image_text_table
from ...core.data.order import epoch_order
from ...core.data.split import subsample_per_class
from ...core.data.text_loader import SequenceBatchLoader
from ...core.metrics import classification_metrics
from ...core.models.aligned import AlignedPair, TailAndHeads, load_aligned, save_aligned
from ...core.models.text import hf_model_path, load_tokenizer
from ...core.report import print_summary, write_report
from ...core.run import prepare, setup, train_model
from ...core.strategies.contrastive import Contrastive
from ...core.fs import atomic_write_text
from ...errors import ConfigError, DataError

log = logging.getLogger("tuneforge")


@dataclass
class AlignResult:
    run_dir: Path
    model: "torch.nn.Module"
    report: dict
    config: AlignConfig


# --- cached encoder features -------------------------------------------------------------

def _digest(model, which: str) -> str:
    # hashing minilm's 22M weights takes a moment: once per model object
    memo = model.__dict__.setdefault("_digests", {})
    if which not in memo:
        memo[which] = model.encoder_digest(which)
    return memo[which]


@torch.inference_mode()
def image_features(model, files: list[Path], size: int, resize: str = "crop", mirrored: bool = False,
                   cache_dir: str | None = None, workers: int = 0, batch_size: int = 64,
                   strict: bool = False, stage: int | None = None) -> tuple[torch.Tensor, np.ndarray, list[dict]]:
    """Pooled image-encoder features (N_ok, V, D) of image files (V = 2 with the mirrored view),
    the ok mask (N,) and the unreadable files. Cached per image and view, keyed by (encoder
    weights, size, resize) and the file's contents, so any subset or superset of a folder seen
    before costs only its new images; those are decoded and encoded in chunks, so a folder of
    any size fits in memory. With `stage`, the output maps of the encoder's first `stage` stages
    (N_ok, V, C, h, w) instead, for training the stages after it."""
    files = [Path(f) for f in files]
    cache = ItemCache(cache_dir, digest(f"img:v1:{_digest(model, 'image')}:{size}:{resize}{f':stage{stage}' if stage else ''}",
                                        length=16))
    shas = [hashlib.sha1(f.read_bytes()).hexdigest() for f in files]
    views = ("", "mirrored") if mirrored else ("",)
    feats: list[np.ndarray | None] = [cache.load(sha, views) for sha in shas]
    todo = [i for i, f in enumerate(feats) if f is None]
    skipped: list[dict] = []
    if todo:
        model.eval()
        with torch.inference_mode(False):  # parameters made here inside inference mode could never train again
            model.image_encoder.to(memory_format=torch.channels_last)
        enc = model.image_encoder if stage is None else lambda x: model.image_encoder.forward_stages(x, 0, stage)
        t0 = time.perf_counter()
        for start in range(0, len(todo), 512):
            chunk = todo[start:start + 512]
            arr, ok, bad = decode_files([files[i] for i in chunk], size, resize, workers, strict)
            skipped += bad
            out = []
            for j in range(0, len(arr), batch_size):
                x = torch.from_numpy(arr[j:j + batch_size]).float().div_(255.0)
                x = ((x - model.mean) / model.std).contiguous(memory_format=torch.channels_last)
                out.append(torch.stack([enc(x)] + ([enc(x.flip(3))] if mirrored else []), 1))
            got = torch.cat(out).numpy() if out else []
            for i, f in zip([i for i, g in zip(chunk, ok) if g], got):
                feats[i] = f
                cache.save(shas[i], views, f)
            done = start + len(chunk)
            log.info("image features: %d/%d new images (%d cached), %.1f img/s", done, len(todo),
                     len(files) - len(todo), done / (time.perf_counter() - t0))
    ok = np.array([f is not None for f in feats], dtype=bool)
    if not ok.any():
        raise DataError(f"none of the {len(files)} images could be read (first: {files[0] if files else 'none'})")
    out = torch.from_numpy(np.stack([f for f in feats if f is not None]))
    return out, ok, skipped


@torch.inference_mode()
def text_features(model, tokenizer, texts: list[str], max_length: int, cache_dir: str | None = None,
                  batch_size: int = 256) -> torch.Tensor:
    """Pooled text-encoder features (N, D), batched by length; cached by (encoder weights,
    max_length, the texts)."""
    name = digest(f"txt:v1:{_digest(model, 'text')}:{max_length}:{len(texts)}", *(t + "\0" for t in texts))

    def compute() -> dict[str, torch.Tensor]:
        model.eval()
        ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        loader = SequenceBatchLoader(ids, torch.zeros(len(ids), dtype=torch.long), batch_size,
                                     pad_id=tokenizer.pad_token_id or 0)
        t0 = time.perf_counter()
        feats = [model.text_features(x) for x, _ in loader.epoch(0)]
        if texts:
            log.info("text features: %d texts, %.0f texts/s", len(texts), len(texts) / (time.perf_counter() - t0))
        out = torch.cat(feats) if feats else torch.zeros(0, model.text_encoder.feature_dim)
        return {"features": loader.unsort(out)}

    return memoised(cache_dir, name, compute)["features"]


# --- batches of (image features, text features, image id) ----------------------------------

class PairLoader:
    """Batches of caption rows with their image's cached features. As with BatchLoader, the
    order of epoch e depends only on (seed, e); training drops the last partial batch (a tiny
    batch is an easy, noisy InfoNCE problem)."""

    def __init__(self, image_feats: torch.Tensor, text_feats: torch.Tensor, image_ids: torch.Tensor,
                 text_ids: torch.Tensor, batch_size: int, shuffle: bool = False, seed: int = 0):
        self.image_feats, self.text_feats = image_feats, text_feats
        self.image_ids, self.text_ids = image_ids, text_ids
        self.batch_size, self.shuffle, self.seed = min(batch_size, len(image_ids)), shuffle, seed

    def __len__(self) -> int:
        n = len(self.image_ids)
        return n // self.batch_size if self.shuffle else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self) * self.batch_size if self.shuffle else len(self.image_ids)

    def epoch(self, epoch: int = 0):
        order = epoch_order(len(self.image_ids), self.seed, epoch, self.shuffle)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            img = self.image_ids[idx]
            yield self.image_feats[img], self.text_feats[self.text_ids[idx]], img


# --- retrieval metrics -------------------------------------------------------------------

def _chance_recall(n: int, positives: np.ndarray, k: int) -> float:
    """Expected Recall@k of a random ranking of n items, with `positives` correct items per query."""
    out = []
    for p in positives:
        miss = 1.0
        for i in range(min(k, n)):
            miss *= max(n - p - i, 0) / (n - i)
        out.append(1.0 - miss)
    return float(np.mean(out))


def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: torch.Tensor,
                      ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    """Recall@k both ways: text -> image (is the caption's image among the top k images?) and
    image -> text (is any of the image's captions among its top k texts?), with the recall a
    random ranking would get, and the median rank of the first correct item."""
    sim = text_emb @ image_emb.T  # (texts, images)
    n_img, n_txt = sim.shape[1], sim.shape[0]
    # text -> image: rank of the true image among all images
    true = sim[torch.arange(n_txt), text_image]
    t2i_rank = (sim > true[:, None]).sum(1) + 1
    # image -> text: best rank among the image's captions
    order = sim.T.argsort(1, descending=True)  # (images, texts)
    is_pos = text_image[order] == torch.arange(n_img)[:, None]
    i2t_rank = is_pos.float().argmax(1) + 1
    has_pos = is_pos.any(1)
    i2t_rank, pos_counts = i2t_rank[has_pos], torch.bincount(text_image, minlength=n_img)[has_pos].numpy()
    return {"n_images": n_img, "n_texts": n_txt,
            "text_to_image": {**{f"R@{k}": float((t2i_rank <= k).float().mean()) for k in ks},
                              "median_rank": float(t2i_rank.float().median())},
            "image_to_text": {**{f"R@{k}": float((i2t_rank <= k).float().mean()) for k in ks},
                              "median_rank": float(i2t_rank.float().median())},
            "chance": {"text_to_image": {f"R@{k}": min(k, n_img) / n_img for k in ks},
                       "image_to_text": {f"R@{k}": _chance_recall(n_txt, pos_counts, k) for k in ks}}}


# --- align -------------------------------------------------------------------------------

def _read_list(path: str, flag_name: str) -> set[str]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{flag_name}: no such file: {p}")
    return {line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()}


def _split_images(cfg: AlignConfig, images: list[Path], root: Path) -> dict[str, list[int]]:
    """Image indices per split: from the list files (an image is named by its path relative to
    the image root, or by its file name), else a seeded random split by image, so that no
    caption of a test image is ever trained on."""
    if cfg.train_list:
        lists = {s: _read_list(p, flag(f"{s}_list")) if p else set()
                 for s, p in (("train", cfg.train_list), ("val", cfg.val_list), ("test", cfg.test_list))}
        out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        unlisted = 0
        for i, f in enumerate(images):
            names = {f.name, f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name}
            where = [s for s in ("test", "val", "train") if names & lists[s]]
            if where:
                out[where[0]].append(i)
            else:
                unlisted += 1
        if unlisted:
            log.info("%d images are in none of the split lists and are left out", unlisted)
        if not out["train"]:
            raise DataError(f"--train-list {cfg.train_list}: names none of the table's images "
                            f"(names are file names or paths relative to {root})")
        return out
    order = np.random.default_rng(cfg.seed).permutation(len(images))
    n_test, n_val = int(round(cfg.test_fraction * len(images))), int(round(cfg.val_fraction * len(images)))
    return {"test": sorted(order[:n_test].tolist()), "val": sorted(order[n_test:n_test + n_val].tolist()),
            "train": sorted(order[n_test + n_val:].tolist())}


def align(config: AlignConfig | None = None, **kwargs) -> AlignResult:
    """Align an image and a text encoder on image-caption pairs (every keyword is an
    AlignConfig field); writes RUN/model (the aligned pair), split.json, metrics and
    report.json/html with Recall@1/5/10 on val and test."""

    run = prepare(AlignConfig, config, kwargs, name=lambda c: "align", recipes=False)
    cfg, run_dir = run.cfg, run.dir
    table = read_image_text_table(cfg.data, cfg.image_column, cfg.text_column, image_root=cfg.image_root,
                                  strict=cfg.strict, encoding=cfg.encoding)
    root = Path(cfg.image_root).resolve() if cfg.image_root else Path(cfg.data).resolve().parent
    images: list[Path] = list(dict.fromkeys(table.images))  # unique, in order of first appearance
    index = {p: i for i, p in enumerate(images)}
    row_image = torch.tensor([index[p] for p in table.images])
    splits = _split_images(cfg, images, root)

    torch.manual_seed(cfg.seed)
    model = AlignedPair(cfg.image_model, cfg.text_model, cfg.proj_dim, cfg.head, cfg.dropout, cfg.temperature,
                        cfg.image_size, pretrained=True)
    tokenizer = load_tokenizer(hf_model_path(cfg.text_model))
    t_feat = time.perf_counter()
    tail = None
    if cfg.train_image_stages:
        n_stages = len(model.image_encoder.stages())
        if not model.image_encoder.can_split() or cfg.train_image_stages >= n_stages:
            raise ConfigError(f"--train-image-stages {cfg.train_image_stages}: {cfg.image_model} has {n_stages} stages "
                              "and must be able to run a range of them")
        tail = n_stages - cfg.train_image_stages
    img_feats, ok, skipped = image_features(model, images, cfg.image_size, cfg.resize, cfg.flip, cfg.cache_dir, cfg.workers,
                                            strict=cfg.strict, stage=tail)
    # image index -> row of img_feats (-1: unreadable, its captions are dropped)
    pos = torch.full((len(images),), -1, dtype=torch.long)
    pos[torch.from_numpy(ok)] = torch.arange(int(ok.sum()))
    txt_feats = text_features(model, tokenizer, [str(t) for t in table.texts], cfg.max_length, cfg.cache_dir)
    feature_s = time.perf_counter() - t_feat

    def pairs(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        keep = torch.zeros(len(images), dtype=torch.bool)
        keep[torch.tensor(splits[split], dtype=torch.long)] = True
        rows = torch.nonzero(keep[row_image] & (pos[row_image] >= 0)).flatten()
        return pos[row_image[rows]], rows

    heads = model.heads if tail is None else TailAndHeads(model, tail)
    tr_img, tr_txt = pairs("train")
    if len(tr_img) < 2:
        raise DataError(f"{cfg.data}: fewer than 2 usable training pairs")
    used = torch.unique(tr_img)
    with torch.inference_mode():  # standardisation statistics of the (initial) pooled features, view 0
        if tail is None:
            pooled = img_feats[used]
        else:
            heads.eval()
            pooled = torch.cat([heads.image_features(img_feats[used[i:i + 256], 0]) for i in range(0, len(used), 256)])
    model.heads.image_norm.fit(pooled)
    model.heads.text_norm.fit(txt_feats[tr_txt])
    train_loader = PairLoader(img_feats, txt_feats, tr_img, tr_txt, cfg.batch_size, shuffle=True, seed=cfg.seed)
    va_img, va_txt = pairs("val")
    val_loader = PairLoader(img_feats, txt_feats, va_img, va_txt, cfg.eval_batch_size) if len(va_img) > 1 else None
    log.info("align: %d train / %d val / %d test images, %d train pairs; features in %.1fs", len(splits["train"]),
             len(splits["val"]), len(splits["test"]), len(tr_img), feature_s)
    engine, state = train_model(run, heads, Contrastive(cfg.flip), train_loader, val_loader, default_lr=1e-3)
    heads.eval()
    model.__dict__.pop("_digests", None)  # a trained image tail changed the encoder's weights

    report: dict = {"model": f"{cfg.image_model} + {cfg.text_model}", "task": "image-text-alignment",
                    "best_epoch": state.get("best_epoch"), "epochs_run": state["epoch"],
                    "stopped_because": state["stopped_because"], "temperature": float(1 / heads.scale().detach()),
                    "retrieval": {}, "config": cfg.to_dict()}
    with torch.inference_mode():
        for split in ("val", "test"):
            s_img, s_txt = pairs(split)
            if len(s_img) == 0:
                continue
            uniq, inverse = torch.unique(s_img, return_inverse=True)
            report["retrieval"][split] = retrieval_metrics(heads.embed_image(img_feats[uniq, 0]),
                                                           heads.embed_text(txt_feats[s_txt]), inverse)
    rel = lambda idx: [images[i].relative_to(root).as_posix() if images[i].is_relative_to(root) else str(images[i])
                       for i in idx]
    atomic_write_text(run_dir / "split.json", json.dumps({"seed": cfg.seed, "image_root": str(root), "table": str(cfg.data),
                                                    **{s: rel(splits[s]) for s in ("train", "val", "test")}}, indent=1))
    report["data"] = {"table": str(cfg.data), "rows": len(table), "skipped_rows": table.skipped,
                      "images": {s: len(v) for s, v in splits.items()}, "train_pairs": len(tr_img),
                      "skipped": skipped, "image_size": cfg.image_size, "feature_s": round(feature_s, 2)}
    report["fit_s"] = round(state.get("fit_s", 0.0), 2)
    report["wall_s"] = round(time.perf_counter() - run.t_start, 2)
    meta = {"model": {"image_model": cfg.image_model, "text_model": cfg.text_model, "embed_dim": cfg.proj_dim,
                      "head": cfg.head, "dropout": cfg.dropout, "hf_config": model.text_encoder.hf_config()},
            "classes": [], "name": f"aligned {cfg.image_model} + {cfg.text_model}",
            "preprocessing": {"image_size": cfg.image_size, "resize": cfg.resize, "scale": 1 / 255,
                              "mean": list(model.image_encoder.mean), "std": list(model.image_encoder.std),
                              "max_length": cfg.max_length, "tokenizer": "tokenizer"},
            "metrics": report["retrieval"], "data": {"table": str(cfg.data), "train_images": len(splits["train"])}}
    save_aligned(run_dir / "model", model, meta, tokenizer)
    paths = write_report(run_dir, report, state["history"])
    report["html_path"] = str(paths["html"])
    if cfg.progress:
        _print_retrieval(report["retrieval"])
    return AlignResult(run_dir, model, report, cfg)


def _print_retrieval(retrieval: dict) -> None:
    for split, m in retrieval.items():
        for d in ("text_to_image", "image_to_text"):
            r = m[d]
            log.info("%s %s (%d images, %d texts): R@1 %.1f%%  R@5 %.1f%%  R@10 %.1f%%  (random R@5 %.1f%%)", split, d,
                     m["n_images"], m["n_texts"], 100 * r["R@1"], 100 * r["R@5"], 100 * r["R@10"],
                     100 * m["chance"][d]["R@5"])


# --- using an aligned pair ---------------------------------------------------------------

class Aligned:
    """A loaded aligned pair: embeddings of image files (through the feature cache) and texts."""

    def __init__(self, run: str | Path, cache_dir: str | None = None, workers: int = 0):
        self.model, self.config, self.tokenizer = load_aligned(run)
        self.pre = self.config["preprocessing"]
        self.cache_dir, self.workers = cache_dir, workers

    @torch.inference_mode()
    def embed_images(self, files: list[Path]) -> tuple[torch.Tensor, list[Path], list[dict]]:
        """(embeddings of the readable files, those files, the unreadable ones)."""
        feats, ok, skipped = image_features(self.model, files, self.pre["image_size"], self.pre.get("resize", "crop"),
                                            cache_dir=self.cache_dir, workers=self.workers)
        return self.model.heads.embed_image(feats[:, 0]), [f for f, g in zip(files, ok) if g], skipped

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        feats = text_features(self.model, self.tokenizer, texts, self.pre["max_length"], self.cache_dir)
        return self.model.heads.embed_text(feats)

    @torch.inference_mode()
    def class_embeddings(self, names: list[str], prompts: list[str]) -> torch.Tensor:
        """One embedding per class: the normalised mean of its prompts' embeddings (CLIP's
        prompt ensembling)."""
        texts = [p.format(n) if "{}" in p else f"{p} {n}" for n in names for p in prompts]
        emb = self.embed_texts(texts).view(len(names), len(prompts), -1).mean(1)
        return torch.nn.functional.normalize(emb, dim=-1)

    @torch.inference_mode()
    def class_scores(self, image_emb: torch.Tensor, names: list[str], prompts: list[str]) -> torch.Tensor:
        """Logits (N, C) of images against classes. A name may list alternatives, "watch|handbag|belt":
        each is prompt-ensembled on its own and the class scores its best one (CHiLS, Novack et
        al. 2023): a broad class is easier to recognise as any of its kinds than as one averaged
        embedding, which lands between the kinds and matches none of them well."""
        alts = [[a.strip() for a in n.split("|") if a.strip()] or [n] for n in names]
        owner = torch.tensor([c for c, a in enumerate(alts) for _ in a])
        emb = self.class_embeddings([a for a_list in alts for a in a_list], prompts)
        sims = self.model.heads.scale().detach() * image_emb @ emb.T
        out = torch.full((len(image_emb), len(names)), float("-inf"))
        return out.scatter_reduce(1, owner.expand(len(image_emb), -1), sims, "amax")


def _image_source(images: str | Path) -> tuple[torch.Tensor | None, list[str]]:
    """A saved embeddings file (from `embed`) -> (embeddings, paths); a folder -> (None, [])."""
    p = Path(images)
    if p.is_file() and p.suffix == ".safetensors":
        with safe_open(str(p), "pt") as f:
            paths = json.loads((f.metadata() or {}).get("paths", "[]"))
            emb = f.get_tensor("embeddings")
        return emb, paths
    return None, []


def _lines(texts: str | Path | list[str]) -> list[str]:
    if isinstance(texts, list):
        return texts
    p = Path(texts)
    if not p.is_file():
        raise DataError(f"--texts: no such file: {p} (one text per line)")
    out = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not out:
        raise DataError(f"--texts: {p} has no non-empty lines")
    return out


def retrieve(run: str | Path, query: str | list[str] | None = None, images: str | Path | None = None,
             image: str | Path | list | None = None, texts: str | Path | list[str] | None = None, top_k: int = 5,
             cache_dir: str | None = None, threads: int = 0) -> list[dict]:
    """Text -> images (`query` + `images`: a folder, or an embeddings file from `embed`) or
    image -> texts (`image` files + `texts`: a file with one text per line, or a list). One
    dict per query: {"query" or "image", "results": [{"rank", "path" or "text", "score"}]},
    score = cosine similarity in the shared space."""
    setup(threads)
    pair = Aligned(run, cache_dir)
    if query is not None:
        if images is None:
            raise ConfigError("--query needs --images (a folder, or an embeddings file from `tuneforge embed`)")
        emb, paths = _image_source(images)
        if emb is None:
            emb, files, _ = pair.embed_images(list_images([images]))
            paths = [str(f) for f in files]
        queries = [query] if isinstance(query, str) else list(query)
        scores = pair.embed_texts(queries) @ emb.T
        top = scores.topk(min(top_k, len(paths)), dim=1)
        return [{"query": q, "results": [{"rank": r + 1, "path": paths[i], "score": round(float(s), 4)}
                                         for r, (s, i) in enumerate(zip(top.values[n], top.indices[n].tolist()))]}
                for n, q in enumerate(queries)]
    if image is not None:
        if texts is None:
            raise ConfigError("--image needs --texts (a file with one text per line)")
        candidates = _lines(texts)
        emb, files, skipped = pair.embed_images(list_images(image if isinstance(image, list) else [image]))
        scores = emb @ pair.embed_texts(candidates).T
        top = scores.topk(min(top_k, len(candidates)), dim=1)
        out = [{"image": str(f), "results": [{"rank": r + 1, "text": candidates[i], "score": round(float(s), 4)}
                                            for r, (s, i) in enumerate(zip(top.values[n], top.indices[n].tolist()))]}
               for n, f in enumerate(files)]
        return out + [{"image": s["path"], "error": s["reason"]} for s in skipped]
    raise ConfigError("give --query with --images (text -> images), or --image with --texts (image -> texts)")


def evaluate_retrieval(run: str | Path, data: str | Path, image_column: str = "image", text_column: str = "caption",
                       image_root: str | None = None, cache_dir: str | None = None, threads: int = 0) -> dict:
    """Recall@1/5/10 both ways over every row of an image+text table (e.g. a test split)."""
    setup(threads)
    pair = Aligned(run, cache_dir)
    table = read_image_text_table(data, image_column, text_column, image_root=image_root)
    images = list(dict.fromkeys(table.images))
    emb, files, _ = pair.embed_images(images)
    index = {f: i for i, f in enumerate(files)}
    rows = [r for r, p in enumerate(table.images) if p in index]
    text_emb = pair.embed_texts([table.texts[r] for r in rows])
    return retrieval_metrics(emb, text_emb, torch.tensor([index[table.images[r]] for r in rows]))


def embed(run: str | Path, images: str | Path | list, out: str | Path, cache_dir: str | None = None,
          threads: int = 0) -> dict:
    """Embeddings of every image in a folder (or of the given files), saved as safetensors
    ("embeddings" (N, E), L2-normalised; the paths in the file's metadata) for `retrieve
    --images FILE`. Returns {"out", "images", "skipped", "dim"}."""
    setup(threads)
    pair = Aligned(run, cache_dir)
    emb, files, skipped = pair.embed_images(list_images(images if isinstance(images, list) else [images]))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": emb.contiguous()}, str(out),
              metadata={"paths": json.dumps([str(f) for f in files]), "model": str(pair.config["_dir"]),
                        "weights_sha256": pair.config["weights_sha256"]})
    return {"out": str(out), "images": len(files), "skipped": len(skipped), "dim": int(emb.shape[1])}


def zeroshot(run: str | Path, data: str | Path | None = None, table: str | Path | None = None,
             image_column: str = "image", label_column: str | None = None, image_root: str | None = None,
             classes: str | list[str] | None = None, prompts: list[str] | None = None,
             class_names: dict[str, str] | None = None, out: str | Path | None = None,
             limit_per_class: int | None = None, cache_dir: str | None = None, threads: int = 0,
             seed: int = 0, progress: bool = True) -> dict:
    """Classify images by class-name prompts, with no labelled training image: a class's
    embedding is the mean of its prompts' embeddings ("a photo of a {}" with the name filled
    in), an image goes to the most similar class. `data`: class folders (its test/ if present;
    classes default to the folder names) or a plain image folder (with `classes`); `table`: a
    CSV/TSV/JSONL with an image column and a label column. With labels, writes report.json/html
    (accuracy beside chance and the majority class) into `out`. `class_names` maps a label to
    the words put into the prompts (default: the label itself); "a|b|c" lists kinds of the class,
    and an image scores the class by its best-matching kind."""
    setup(threads)
    t0 = time.perf_counter()
    prompts = list(prompts or ["a photo of a {}."])
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    labels: list[str] | None = None
    if table is not None:
        if not label_column and not classes:
            raise ConfigError("--table needs --label-column (to score) or --classes (to predict)")
        t = read_image_text_table(table, image_column, label_column or image_column, label_column, image_root)
        files, labels = list(t.images), t.labels
        source = str(table)
    elif data is not None:
        root = Path(data)
        if not root.is_dir():
            raise DataError(f"--data: no such folder: {root}")
        root = root / "test" if (root / "test").is_dir() else root
        if any(p.is_dir() for p in root.iterdir()):
            found, items = scan_class_folders(root)
            files, labels = [f for f, _ in items], [found[l] for _, l in items]
        else:
            files = list_images([root])
        source = str(root)
    else:
        raise ConfigError("give --data (an image folder, or class folders) or --table (an image+label table)")
    if labels is not None and limit_per_class:
        names = sorted(set(labels))
        keep = subsample_per_class(np.array([names.index(l) for l in labels]), limit_per_class, seed)
        files, labels = [files[i] for i in keep], [labels[i] for i in keep]
    if not classes:
        if labels is None:
            raise ConfigError("--classes is required for an image folder without class folders")
        classes = sorted(set(labels))
    class_names = class_names or {}
    pair = Aligned(run, cache_dir)
    emb, kept, skipped = pair.embed_images(files)
    logits = pair.class_scores(emb, [class_names.get(c, c) for c in classes], prompts)
    pred = logits.argmax(1)
    report: dict = {"model": str(pair.config["_dir"]), "task": "zero-shot classification", "classes": classes,
                    "prompts": prompts, "class_names": class_names,
                    "data": {"source": source, "test": len(kept), "skipped": skipped}}
    if labels is None:
        report["predictions"] = [{"path": str(f), "label": classes[i]} for f, i in zip(kept, pred.tolist())]
        return report
    kept_set = set(kept)
    lab = [l for l, f in zip(labels, files) if f in kept_set] if skipped else labels
    unknown = sorted(set(lab) - set(classes))
    if unknown:
        raise DataError(f"{source}: labels {unknown[:5]} are not among --classes {classes}")
    targets = torch.tensor([classes.index(l) for l in lab])
    report["test"] = classification_metrics(logits, targets, classes)
    counts = torch.bincount(targets, minlength=len(classes))
    report["baselines"] = {"chance": 1 / len(classes), "majority": float(counts.max() / counts.sum()),
                           "majority_class": classes[int(counts.argmax())]}
    report["wall_s"] = round(time.perf_counter() - t0, 2)
    out = Path(out) if out else Path(pair.config["_dir"]).parent / f"zeroshot-{Path(source).stem}"
    paths = write_report(out, report, None, {"logits": logits.numpy(), "targets": targets.numpy(),
                                             "paths": [str(f) for f in kept]})
    report["html_path"] = str(paths["html"])
    if progress:
        print_summary(report)
    return report

