"""`tuneforge pretrain --method mlm`: continued masked-language-model pretraining of a text
encoder (minilm or hf:PATH) on unlabeled text, through the same `core.run.train_model` as everything else.

    tuneforge pretrain --method mlm --model minilm --data reviews.csv --text-column text --max-minutes 10
    tuneforge fit --data labelled.csv --model minilm --init runs/pretrain-mlm-...   # starts from it

The MLM head comes from `AutoModelForMaskedLM.from_pretrained`: for minilm (a sentence-transformers
export, encoder weights only) the head's transform layer (dense + LayerNorm) starts fresh, while
the decoder is tied to the word embeddings and so is pretrained. The first steps therefore mostly
train that transform layer; the held-out loss before pretraining is measured with it fresh.

What the run folder gets: `backbone.safetensors` in exactly the key layout of the text
classifier's backbone (`HFEncoder`: "encoder.<HF key>", pooler included), so `fit --init RUN`
loads it like an image backbone; `pretrain.json`; report.json/html with the held-out masked-token
loss and perplexity before and after (a seeded `--heldout-fraction` slice, masked once, so before
and after see the same masks) and, with `--probe TABLE`, a logistic-regression probe accuracy of
the mean-pooled features before and after."""
from __future__ import annotations

import json
import logging
import math
import time

import numpy as np
import torch

from safetensors.torch import save_file

from ...core.data import stratified_split, subsample_per_class
from ...core.data.text import read_text_file
from ...core.data.text_loader import SequenceBatchLoader
from ...core.data.unlabeled import load_unlabeled_texts
from ...core.engine.callbacks import EpochMeasure
from ...core.models import create_model
from ...core.models.text import _transformers, hf_model_path, load_tokenizer, masked_pool
from ...core.models.weights import BACKBONE_FILE, resolve_init
from ...core.report import write_report
from ...core.run import Run, train_model
from ...core.strategies.mlm import MLM, MaskedLM
from ...core.tokenizer import TextEncoding
from ...core.fs import atomic_write_text
from ...errors import DataError
from .common import PretrainResult

log = logging.getLogger("tuneforge")


class HeldOutMLM(EpochMeasure):
    """Masked-token loss of the held-out slice (masked once, in advance) before the first epoch
    and after each one, as `heldout_mlm_loss` / `heldout_perplexity` in the epoch records."""

    start_key, record_key, label = "mlm_start", "heldout_mlm_loss", "held-out masked-token loss"

    def __init__(self, batches: list, strategy: MLM):
        self.batches, self.strategy = batches, strategy

    @torch.inference_mode()
    def score(self, model: MaskedLM) -> float:
        loss, tokens = 0.0, 0
        for b in self.batches:
            out = self.strategy.eval_step(model, b)
            loss, tokens = loss + float(out["loss_sum"]), tokens + int(out["tokens"])
        return loss / max(tokens, 1)

    def on_epoch_end(self, engine, record: dict) -> None:
        super().on_epoch_end(engine, record)
        record["heldout_perplexity"] = math.exp(min(record["heldout_mlm_loss"], 50.0))


class TextProbe(EpochMeasure):
    """Logistic-regression accuracy of the encoder's mean-pooled features on a labelled table
    (fit on one stratified half, scored on the other): before pretraining and after each epoch."""

    start_key, record_key, label = "probe_start", "probe_accuracy", "probe (logistic regression)"

    def __init__(self, fit: tuple[list, np.ndarray], test: tuple[list, np.ndarray], pad_id: int, batch_size: int):
        self.fit_set, self.test_set, self.pad_id, self.batch_size = fit, test, pad_id, batch_size

    @torch.inference_mode()
    def _features(self, model: MaskedLM, ids: list) -> np.ndarray:
        ld = SequenceBatchLoader(ids, torch.zeros(len(ids), dtype=torch.long), self.batch_size, pad_id=self.pad_id)
        out = [masked_pool(model.base(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).last_hidden_state,
                           x["attention_mask"], "mean") for x, _ in ld.epoch(0)]
        return ld.unsort(torch.cat(out)).numpy()

    def score(self, model: MaskedLM) -> float:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import accuracy_score
        a, b = self._features(model, self.fit_set[0]), self._features(model, self.test_set[0])
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(a, self.fit_set[1])
        return float(accuracy_score(self.test_set[1], clf.predict(b)))


def _premask(ids: list, strategy: MLM, pad_id: int, batch_size: int, seed: int) -> list:
    """The held-out slice as fixed, already-masked batches: same masks before and after."""
    ld = SequenceBatchLoader(ids, torch.zeros(len(ids), dtype=torch.long), batch_size, pad_id=pad_id)
    g = torch.Generator().manual_seed(seed * 1_000_003 + 99_991)
    out = []
    for x, y in ld.epoch(0):
        masked, labels = strategy.mask(x, g)
        out.append(({"input_ids": masked, "attention_mask": x["attention_mask"], "labels": labels}, y))
    return out


def _probe(cfg, encode, pad_id: int) -> TextProbe:
    cols = [c.strip() for c in cfg.columns.split(",")] if cfg.columns else None
    s = read_text_file(cfg.probe, cfg.text_column or "text", cfg.label_column, cols, cfg.encoding)
    s = s.subset(subsample_per_class(s.labels.numpy(), 2 * cfg.probe_per_class, cfg.seed))
    a, b = stratified_split(s.labels.numpy(), 0.5, cfg.seed)
    ids = encode(s.texts)
    return TextProbe(([ids[i] for i in a], s.labels.numpy()[a]), ([ids[i] for i in b], s.labels.numpy()[b]),
                     pad_id, cfg.eval_batch_size)


def pretrain_text(run: Run) -> PretrainResult:
    """Continued MLM pretraining; `run.cfg` is a validated PretrainConfig with a text model."""
    cfg, run_dir, t_start = run.cfg, run.dir, run.t_start

    cols = [c.strip() for c in cfg.columns.split(",")] if cfg.columns else None
    pool = load_unlabeled_texts(cfg.data, cfg.text_column, cols, cfg.encoding, not cfg.strict, flag="--data")
    path = hf_model_path(cfg.model)
    tok = load_tokenizer(path)
    if tok.mask_token_id is None:
        raise DataError(f"--model {cfg.model}: its tokenizer has no mask token, so it cannot be MLM-pretrained")
    enc = TextEncoding(cfg.max_length, tokenizer=tok)
    ids = enc(pool.texts)
    n_held = max(1, int(round(cfg.heldout_fraction * len(ids))))
    if len(ids) - n_held < 2:
        raise DataError(f"--data: {cfg.data} has {len(ids)} texts; MLM pretraining needs at least {n_held + 2}")
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    held, train = [ids[i] for i in sorted(perm[:n_held])], [ids[i] for i in sorted(perm[n_held:])]
    data_s = time.perf_counter() - t_start
    log.info("pretrain mlm: %d texts (%d held out), mean %.1f tokens (%.1fs)", len(ids), len(held),
             sum(map(len, ids)) / len(ids), data_s)

    torch.manual_seed(cfg.seed)
    tf = _transformers()
    hf = tf.AutoModelForMaskedLM.from_pretrained(str(path), local_files_only=True)
    weights = resolve_init(cfg.init, cfg.model) if cfg.init else None
    if weights:  # an earlier MLM run (or any HFEncoder-layout file): the encoder continues from it
        start = create_model(cfg.model, 1, None, True, weights).backbone.core()
        hf.base_model.load_state_dict(start.state_dict(), strict=False)
    log.info("MLM head: the decoder is tied to the word embeddings (pretrained); the transform layer "
             "(dense + LayerNorm) %s", "starts fresh: %s ships the encoder only" % cfg.model
             if cfg.model == "minilm" else "is loaded from the folder when it has one, else starts fresh")
    model = MaskedLM(hf)
    strategy = MLM(tok.all_special_ids, tok.mask_token_id, len(tok), cfg.mask_prob)
    pad_id = tok.pad_token_id or 0
    loader = SequenceBatchLoader(train, torch.zeros(len(train), dtype=torch.long), cfg.batch_size, shuffle=True,
                                 seed=cfg.seed, pad_id=pad_id)
    callbacks = [HeldOutMLM(_premask(held, strategy, pad_id, cfg.eval_batch_size, cfg.seed), strategy)]
    if cfg.probe:
        callbacks.append(_probe(cfg, enc, pad_id))
    engine, state = train_model(run, model, strategy, loader, None, 1e-4,
                           extra_callbacks=tuple(callbacks))

    # The classifier's backbone layout: an HFEncoder whose `encoder` is the MLM model's base model.
    backbone = create_model(cfg.model, 1, None, True).backbone
    missing, unexpected = backbone.encoder.load_state_dict(hf.base_model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("pooler.") for k in missing):
        raise RuntimeError(f"MLM encoder and HFEncoder disagree: missing {missing}, unexpected {unexpected}")
    backbone_path = run_dir / BACKBONE_FILE
    save_file({k: v.detach().contiguous() for k, v in backbone.state_dict().items()}, str(backbone_path))
    hist = state["history"]
    after = next((r["heldout_mlm_loss"] for r in reversed(hist) if "heldout_mlm_loss" in r), None)
    before = state.get("mlm_start")
    probes = [r["probe_accuracy"] for r in hist if "probe_accuracy" in r]
    heldout = {"texts": len(held), "fraction": cfg.heldout_fraction, "masked_tokens": sum(int((b[0]["labels"] != -100).sum())
                                                                                    for b in callbacks[0].batches),
               "loss_before": before, "loss_after": after,
               "perplexity_before": math.exp(before) if before is not None else None,
               "perplexity_after": math.exp(after) if after is not None else None}
    report = {"kind": "pretrain", "method": "mlm", "model": cfg.model, "max_length": cfg.max_length,
              "start": "init file" if weights else "packaged weights",
              "mlm_head": "transform layer fresh, decoder tied to the word embeddings" if cfg.model == "minilm" else "from the folder",
              "data": {"texts": len(pool), "train_texts": len(train), "file": str(cfg.data), "skipped": pool.skipped,
                       "load_s": round(data_s, 2)},
              "epochs_run": state["epoch"], "steps": state["step"], "stopped_because": state["stopped_because"],
              "heldout": heldout,
              "probe": {"table": cfg.probe, "kind": "logistic regression on mean-pooled features",
                        "before": state.get("probe_start"), "after": probes[-1] if probes else None,
                        "per_epoch": probes} if cfg.probe else None,
              "backbone": str(backbone_path), "config": cfg.to_dict(),
              "fit_s": round(state.get("fit_s", 0.0), 2), "wall_s": round(time.perf_counter() - t_start, 2)}
    atomic_write_text(run_dir / "pretrain.json", json.dumps({"model": cfg.model, "method": "mlm", "max_length": cfg.max_length,
                                                       "epochs": state["epoch"], "heldout": heldout,
                                                       "probe": report["probe"]}, indent=1))
    paths = write_report(run_dir, report, hist)
    report["html_path"] = str(paths["html"])
    if cfg.progress:
        log.info("held-out masked-token loss: %.4f before, %.4f after %d epochs", before or 0, after or 0, state["epoch"])
    return PretrainResult(run_dir, backbone_path, report, cfg)
