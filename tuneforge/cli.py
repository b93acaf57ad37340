"""`tuneforge VERB ...`: each verb is a thin layer over the API function of the same name
(tuneforge/commands.py, imported only when a verb runs: parsing, `--help` and `--version` need
only the settings classes and the plugin declarations, not torch).

Every verb's flags are generated from its settings dataclass (tuneforge/config.py: `FitConfig`,
`PretrainConfig`, `AlignConfig`, and `EvaluateConfig` ... `EmbedConfig` for the verbs that use a
trained model), so a flag, a YAML key (`--config FILE.yaml`, on every verb) and a keyword argument
are always the same setting. Flags given on the command line override the file; a key the verb
does not know is refused naming it.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import textwrap
import typing
from dataclasses import dataclass
from typing import Callable

from . import __version__
from .config import (AlignConfig, BatchConfig, EmbedConfig, EnsembleConfig, EvaluateConfig, ExportConfig, FitConfig, LrFindConfig,
                     ModelsConfig, PredictConfig, PretrainConfig, RetrieveConfig, RunsConfig, SearchConfig, ServeConfig, Settings, ZeroshotConfig, display_name, flag, read_yaml)
from .errors import ConfigError, TuneforgeError
from .tasks import PLUGINS
from .tasks.plugins import load

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


# --------------------------------------------------------------------------- the verb table

@dataclass(frozen=True)
class Verb:
    """A subcommand: what runs it ("module:function" taking the settings -> exit status, imported
    when the verb runs), its settings class (None: it takes none), its one-line help."""
    run: str
    settings: type[Settings] | None
    help: str


def _fit_description() -> str:
    kinds = "\n".join(f"  {name:11s} {p.help}" for name, p in PLUGINS.items() if name not in VERBS)
    return ("Train a model on labelled data. The kind of data is told from --data and the columns named:\n"
            f"{kinds}\n"
            "Settings are grouped by what they configure; each group says which kinds of data read it, and a\n"
            "setting a kind does not read is refused naming it.")


VERBS: dict[str, Verb] = {
    "fit": Verb("tuneforge.commands:cmd_fit", FitConfig,
                "train a model on labelled data: class folders, a text or sequence table, an image+text table"),
    "lr-find": Verb("tuneforge.commands:cmd_lr_find", LrFindConfig,
                    "learning-rate range test on the data and model of a fit: a plot and a suggested --lr "
                    "(fit --lr auto runs it first)"),
    "pretrain": Verb("tuneforge.commands:cmd_pretrain", PretrainConfig,
                     "self-supervised pretraining of a backbone on unlabeled images, or MLM of a text encoder on "
                     "unlabeled texts (--method mlm); fit --init RUN"),
    "search": Verb("tuneforge.commands:cmd_search", SearchConfig,
                   "hyperparameter search (Optuna) over a fit's settings: pruned, resumable, several workers on one "
                   "database; the best trial's bundle in OUT/best"),
    "evaluate": Verb("tuneforge.commands:cmd_evaluate", EvaluateConfig,
                     "evaluate a run or bundle on labelled data of its kind (report.json + report.html)"),
    "predict": Verb("tuneforge.commands:cmd_predict", PredictConfig,
                    "top-k labels for images or texts, one JSON object per line"),
    "export": Verb("tuneforge.commands:cmd_export", ExportConfig,
                   "write a portable bundle (safetensors, optionally ONNX / int8 ONNX)"),
    "serve": Verb("tuneforge.commands:cmd_serve", ServeConfig, "HTTP prediction server with a try-it page at /"),
    "batch": Verb("tuneforge.commands:cmd_batch", BatchConfig,
                  "predict a folder of images or a table into CSV/JSONL, with a progress bar"),
    "ensemble": Verb("tuneforge.commands:cmd_ensemble", EnsembleConfig,
                     "combine trained models of the same kind into one bundle (weighted mean of their probabilities "
                     "or values); predict, evaluate, batch, serve and export take it"),
    "align": Verb("tuneforge.commands:cmd_align", AlignConfig,
                  "align an image and a text encoder on image-caption pairs (contrastive)"),
    "retrieve": Verb("tuneforge.commands:cmd_retrieve", RetrieveConfig,
                     "text -> images or image -> texts with an aligned pair, as JSON lines; or Recall@k of a table (--data)"),
    "zeroshot": Verb("tuneforge.commands:cmd_zeroshot", ZeroshotConfig,
                     "classify images by class-name prompts with an aligned pair"),
    "embed": Verb("tuneforge.commands:cmd_embed", EmbedConfig,
                  "embeddings of a folder of images with an aligned pair, saved as safetensors"),
    "models": Verb("tuneforge.commands:cmd_models", ModelsConfig,
                   "list the registered models, or timm's architectures (--timm PATTERN)"),
    "runs": Verb("tuneforge.commands:cmd_runs", RunsConfig,
                 "a leaderboard of run folders (a study's trials, separate fits): settings, state, epochs, wall "
                 "time and metrics, sorted by a metric; a table, csv or json"),
    "recipes": Verb("tuneforge.commands:cmd_recipes", None, "list the named, measured recipes (fit --recipe NAME)"),
}


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The `tuneforge` parser; its namespace holds every setting's default unless `defaults` is
    False, when it holds only what the command line gave."""
    p = argparse.ArgumentParser(prog="tuneforge", description="Fine-tune pretrained models on your data, on a CPU.")
    p.add_argument("--version", action="version", version=f"tuneforge {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, verb in VERBS.items():
        description = _fit_description() if name == "fit" else verb.help[0].upper() + verb.help[1:] + "."
        if name == "search":  # what its --config file holds
            description += "\n\n" + textwrap.fill(" ".join(SearchConfig.__doc__.split()), 100)
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


def _recorded(run: str | None, key: str):
    """A setting of the run `--resume` continues (its config.yaml), None when there is none."""
    path = os.path.join(run, "config.yaml") if run else None
    return read_yaml(path).get(key) if path and os.path.isfile(path) else None


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)  # --help, --version and usage errors, with the defaults shown
    # Only the flags given: they override a --config file, the file overrides the defaults.
    args = build_parser(defaults=False).parse_args(argv)
    try:
        given = settings_from(args) if args.settings is not None else {}
        nproc = int(given.get("nproc") or _recorded(given.get("resume"), "nproc") or 1)
        if nproc > 1 and "WORLD_SIZE" not in os.environ:
            # torch's launcher, imported only then (as a verb's module is): `--help` stays fast
            return load("tuneforge.core.engine.torchrun:relaunch")(nproc, sys.argv[1:] if argv is None else list(argv))
        if int(os.environ.get("RANK") or 0) > 0:  # a data-parallel run has one console, rank 0's: the others print no result
            sys.stdout = open(os.devnull, "w")
        return load(args.func)(given)
    except TuneforgeError as e:
        print(f"tuneforge: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `tuneforge predict ... | head`: the reader left, not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
