"""`tuneforge VERB ...`: each verb is a thin layer over the API function of the same name.
`fit`'s flags are generated from FitConfig, so a flag, a YAML key (--config) and a keyword
argument are always the same setting."""
from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

from . import api
from .config import AlignConfig, FitConfig, PretrainConfig, flag, read_yaml
from .errors import TuneforgeError


def _base_type(tp) -> type:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    hints = typing.get_type_hints(cls)
    for f in cls.offered():
        tp = _base_type(hints[f.name])
        kw: dict = {"dest": f.name, "default": argparse.SUPPRESS}
        default = "" if f.default is None else f" (default: {f.default})"
        kw["help"] = f.metadata.get("help", "") + default
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = tp
            kw["metavar"] = f.name.upper()
            if f.metadata.get("choices"):
                kw["choices"] = f.metadata["choices"]
                kw["metavar"] = "{" + ",".join(f.metadata["choices"]) + "}"
        parser.add_argument(flag(f.name), **kw)


def cmd_fit(args: argparse.Namespace) -> int:
    given = {k: v for k, v in vars(args).items() if k not in ("verb", "func", "config")}
    layers = read_yaml(args.config) if args.config else {}
    result = api.fit(**{**layers, **given})
    print(json.dumps({"run": str(result.run_dir), "report": result.report.get("html_path"),
                      "test_accuracy": result.report.get("test", {}).get("accuracy"),
                      "val_accuracy": result.report.get("val", {}).get("accuracy")}))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    given = {k: v for k, v in vars(args).items() if k not in ("verb", "func", "config")}
    layers = read_yaml(args.config) if args.config else {}
    result = api.pretrain(**{**layers, **given})
    probe = result.report.get("probe") or {}
    print(json.dumps({"run": str(result.run_dir), "backbone": str(result.backbone_path),
                      # image runs probe by kNN, text runs by logistic regression (report's "kind")
                      "probe": probe.get("kind", "kNN") if probe else None,
                      "probe_before": probe.get("before"), "probe_after": probe.get("after"),
                      **({"heldout_mlm_loss_before": result.report["heldout"]["loss_before"],
                          "heldout_mlm_loss_after": result.report["heldout"]["loss_after"]} if "heldout" in result.report else {})}))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    report = api.evaluate(args.run, args.data, args.out, strict=args.strict, cache_dir=args.cache_dir,
                          batch_size=args.batch_size, tta=args.tta)
    print(json.dumps({"report": report["html_path"], "accuracy": report["test"]["accuracy"]}))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    results = api.predict(args.run, args.paths, args.top_k, args.batch_size)
    if args.output:
        out = Path(args.output)
        if out.suffix == ".csv":
            import csv
            with open(out, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["path", "label", "probability", "top", "error"])
                for r in results:
                    top = ";".join(f"{t['label']}:{t['probability']:.4f}" for t in r.get("top", []))
                    w.writerow([r.get("path", r.get("text")), r.get("label", ""), r["top"][0]["probability"] if "top" in r else "",
                                top, r.get("error", "")])
        else:
            out.write_text("".join(json.dumps(r) + "\n" for r in results))
        print(f"wrote {len(results)} predictions to {out}", file=sys.stderr)
    else:
        for r in results:
            print(json.dumps(r))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .core.models import MODELS, model_spec
    for name in MODELS.names():
        spec = model_spec(name)
        weights = spec.pretrained or "none (from scratch, or --weights FILE)"
        size = f"{spec.default_image_size:4d}px" if spec.modality == "image" else f"{spec.modality:>6s}"
        print(f"{name:22s} {size}  {spec.doc}\n{'':28s}pretrained: {weights}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from .recipes import RECIPES
    for name, r in RECIPES.items():
        flags = " ".join(f"{flag(k)} {v}" for k, v in r.settings.items())
        print(f"{name}: {r.doc}\n  measured: {r.measured}\n  = {flags}\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    config = api.export(args.run, args.out, args.format, args.quantize, args.data)
    print(json.dumps({"bundle": config["_dir"], "files": sorted(config["files"]), "onnx": config.get("onnx"),
                      "int8": config.get("onnx_int8")}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    api.serve(args.bundle, args.host, args.port, args.token, backend=args.backend, threads=args.threads,
              max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
              timeout_ms=args.timeout_ms, max_body_mb=args.max_body_mb, busy_wait=args.busy_wait)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    counts = api.batch_predict(args.run, args.source, args.output, args.top_k, args.batch_size, args.column,
                               args.backend, progress=not args.no_progress)
    print(json.dumps(counts))
    return 0


def _add_deploy_verbs(sub) -> None:
    """export / serve / batch: the deployment verbs (tuneforge/export, tuneforge/serve)."""
    from .deploy.predictor import BACKENDS
    from .deploy.export import FORMATS
    ex = sub.add_parser("export", help="write a portable bundle (safetensors, optionally ONNX / int8 ONNX)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ex.add_argument("run", help="run folder or bundle")
    ex.add_argument("--out", required=True, help="bundle folder to write")
    ex.add_argument("--format", choices=FORMATS, default="safetensors",
                    help="onnx adds model.onnx (dynamic batch), checked against PyTorch within 1e-4 on real images")
    ex.add_argument("--quantize", choices=["int8"], default=None,
                    help="also write model.int8.onnx (ONNX Runtime static int8) and report its test accuracy change")
    ex.add_argument("--data", default=None,
                    help="images to check/calibrate/measure with when RUN is not a run folder with its split")
    ex.set_defaults(func=cmd_export)

    sv = sub.add_parser("serve", help="HTTP prediction server with a try-it page at /",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sv.add_argument("bundle", help="bundle or run folder (local only; never a URL)")
    sv.add_argument("--host", default="127.0.0.1", help="interface to bind; 0.0.0.0 exposes the server to the network")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on /v1/predict and /metrics")
    sv.add_argument("--backend", choices=BACKENDS, default="auto", help="auto: ONNX Runtime when the bundle has model.onnx")
    sv.add_argument("--threads", type=int, default=0, help="inference threads (0: all cores)")
    sv.add_argument("--max-batch-size", type=int, default=32, help="micro-batching: most requests per forward pass")
    sv.add_argument("--max-wait-ms", type=float, default=5.0, help="micro-batching: longest wait for a batch to fill")
    sv.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond this are refused (503)")
    sv.add_argument("--timeout-ms", type=float, default=5000.0, help="per-request timeout (504)")
    sv.add_argument("--max-body-mb", type=float, default=10.0, help="request size limit (413)")
    sv.add_argument("--busy-wait", action="store_true",
                    help="let ONNX Runtime's threads spin between operators (only when the server has cores to itself)")
    sv.set_defaults(func=cmd_serve)

    bp = sub.add_parser("batch", help="predict a folder of images or a table into CSV/JSONL, with a progress bar",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    bp.add_argument("run", help="run folder or bundle")
    bp.add_argument("source", help="image folder, or a .csv/.tsv/.jsonl table with a path (or text) column")
    bp.add_argument("--output", required=True, help="FILE.csv or FILE.jsonl")
    bp.add_argument("--column", default=None, help="the table's input column (default: path/image/file, or text)")
    bp.add_argument("--top-k", type=int, default=5)
    bp.add_argument("--batch-size", type=int, default=64)
    bp.add_argument("--backend", choices=BACKENDS, default="torch")
    bp.add_argument("--no-progress", action="store_true", help="no progress bar")
    bp.set_defaults(func=cmd_batch)


# --- Alignment (issue 6): align / retrieve / zeroshot / embed (tuneforge.align) ---

def cmd_align(args: argparse.Namespace) -> int:
    from .api import align
    given = {k: v for k, v in vars(args).items() if k not in ("verb", "func", "config")}
    result = align(**{**(read_yaml(args.config) if args.config else {}), **given})
    r = result.report["retrieval"]
    print(json.dumps({"run": str(result.run_dir), "report": result.report.get("html_path"),
                      **{f"{s}_{d}": {k: round(v, 4) for k, v in r[s][d].items() if k.startswith("R@")}
                         for s in r for d in ("text_to_image", "image_to_text")}}))
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    from .tasks.align.workflow import evaluate_retrieval, retrieve
    if args.data:
        print(json.dumps(evaluate_retrieval(args.run, args.data, args.image_column, args.text_column, args.image_root,
                                            args.cache_dir)))
        return 0
    for r in retrieve(args.run, args.query, args.images, args.image, args.texts, args.top_k, args.cache_dir):
        print(json.dumps(r))
    return 0


def cmd_zeroshot(args: argparse.Namespace) -> int:
    from .api import zeroshot
    from .errors import ConfigError
    names = {}
    for item in args.class_name or []:
        if "=" not in item:
            raise ConfigError(f"--class-name {item!r}: write LABEL=WORDS, e.g. 'Personal Care=cosmetics'")
        k, v = item.split("=", 1)
        if not any(part.strip() for part in v.split("|")):
            raise ConfigError(f"--class-name {item!r}: no words after '='; write LABEL=WORDS or LABEL=kind|kind")
        names[k.strip()] = v.strip()
    report = zeroshot(args.run, args.data, args.table, args.image_column, args.label_column, args.image_root,
                      args.classes, args.prompts, names, args.out, args.limit_per_class, args.cache_dir,
                      progress=not args.json)
    if "predictions" in report:
        for p in report["predictions"]:
            print(json.dumps(p))
    else:
        print(json.dumps({"report": report["html_path"], "accuracy": report["test"]["accuracy"], "n": report["test"]["n"],
                          **report["baselines"]}))
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from .api import embed
    print(json.dumps(embed(args.run, args.images, args.out, args.cache_dir)))
    return 0


def _add_align_verbs(sub) -> None:
    al = sub.add_parser("align", help="align an image and a text encoder on image-caption pairs (contrastive)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    al.add_argument("--config", help="YAML file of settings (flags given here override it)")
    add_dataclass_flags(al, AlignConfig)
    al.set_defaults(func=cmd_align)
    cache = "feature cache ('' disables; default: $TUNEFORGE_CACHE or ~/.cache/tuneforge)"

    rt = sub.add_parser("retrieve", help="text -> images or image -> texts with an aligned pair, as JSON lines")
    rt.add_argument("run", help="run folder of `tuneforge align` (or its model/ bundle)")
    rt.add_argument("--query", nargs="+", help="text queries (with --images)")
    rt.add_argument("--images", help="image folder, or an embeddings file from `tuneforge embed`")
    rt.add_argument("--image", nargs="+", help="image files or folders to find texts for (with --texts)")
    rt.add_argument("--texts", help="file of candidate texts, one per line")
    rt.add_argument("--top-k", type=int, default=5)
    rt.add_argument("--data", help="instead: Recall@1/5/10 over every row of this image+text table")
    rt.add_argument("--image-column", default="image")
    rt.add_argument("--text-column", default="caption")
    rt.add_argument("--image-root", default=None, help="folder the table's image paths are relative to")
    rt.add_argument("--cache-dir", default=None, help=cache)
    rt.set_defaults(func=cmd_retrieve)

    zs = sub.add_parser("zeroshot", help="classify images by class-name prompts with an aligned pair")
    zs.add_argument("run", help="run folder of `tuneforge align` (or its model/ bundle)")
    zs.add_argument("--data", help="class folders (their test/ if present), or a plain image folder with --classes")
    zs.add_argument("--table", help="instead: a CSV/TSV/JSONL with --image-column and --label-column")
    zs.add_argument("--image-column", default="image")
    zs.add_argument("--label-column", default=None)
    zs.add_argument("--image-root", default=None, help="folder the table's image paths are relative to")
    zs.add_argument("--classes", help="comma-separated class names (default: the folder names / table labels)")
    zs.add_argument("--prompts", nargs="+", default=None,
                    help="templates with {} for the class name, averaged (default: 'a photo of a {}.')")
    zs.add_argument("--class-name", action="append", metavar="LABEL=WORDS",
                    help="words to put into the prompts for a label (repeatable); 'Footwear=shoes|sandals|flip flops' "
                         "lists kinds of the class, scored by the best-matching one")
    zs.add_argument("--limit-per-class", type=int, default=None, help="score at most N images per class (seeded)")
    zs.add_argument("--out", help="report folder (default: RUN/zeroshot-NAME)")
    zs.add_argument("--cache-dir", default=None, help=cache)
    zs.add_argument("--json", action="store_true", help="print only the JSON summary")
    zs.set_defaults(func=cmd_zeroshot)

    em = sub.add_parser("embed", help="embeddings of a folder of images with an aligned pair, saved as safetensors")
    em.add_argument("run", help="run folder of `tuneforge align` (or its model/ bundle)")
    em.add_argument("--images", required=True, help="image folder (recursive) or file")
    em.add_argument("--out", required=True, help="FILE.safetensors (use it as `retrieve --images FILE`)")
    em.add_argument("--cache-dir", default=None, help=cache)
    em.set_defaults(func=cmd_embed)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = argparse.ArgumentParser(prog="tuneforge", description="Fine-tune pretrained models on your data, on a CPU.")
    p.add_argument("--version", action="version", version=f"tuneforge {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    fit = sub.add_parser("fit", help="train a model on a folder of class folders",
                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fit.add_argument("--config", help="YAML file of settings (flags given here override it)")
    add_dataclass_flags(fit, FitConfig)
    fit.set_defaults(func=cmd_fit)

    pt = sub.add_parser("pretrain", help="self-supervised pretraining of a backbone on unlabeled images, or MLM of a text "
                                         "encoder on unlabeled texts (--method mlm); fit --init RUN",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pt.add_argument("--config", help="YAML file of settings (flags given here override it)")
    add_dataclass_flags(pt, PretrainConfig)
    pt.set_defaults(func=cmd_pretrain)

    ev = sub.add_parser("evaluate", help="evaluate a run or bundle on a class-folder tree")
    ev.add_argument("run", help="run folder or bundle")
    ev.add_argument("--data", required=True, help="class folders (its test/ subfolder if present)")
    ev.add_argument("--out", help="report folder (default: RUN/eval-FOLDER)")
    ev.add_argument("--strict", action="store_true", help="unreadable image is an error")
    ev.add_argument("--cache-dir", default=None, help="decoded-image cache ('' disables)")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="flip test-time augmentation on/off (default: as the model was trained)")
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="top-k labels for images, one JSON object per line")
    pr.add_argument("run", help="run folder or bundle")
    pr.add_argument("paths", nargs="+", help="image files or folders; for a text model: texts, text files "
                    "(one text per line) or - (lines from standard input)")
    pr.add_argument("--top-k", type=int, default=5)
    pr.add_argument("--batch-size", type=int, default=256)
    pr.add_argument("--output", help="write to FILE.csv or FILE.jsonl instead of stdout")
    pr.set_defaults(func=cmd_predict)

    _add_deploy_verbs(sub)
    _add_align_verbs(sub)

    ms = sub.add_parser("models", help="list the registered models")
    ms.set_defaults(func=cmd_models)
    rs = sub.add_parser("recipes", help="list the named, measured recipes (fit --recipe NAME)")
    rs.set_defaults(func=cmd_recipes)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TuneforgeError as e:
        print(f"tuneforge: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tuneforge predict ... | head`: the reader left, not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
