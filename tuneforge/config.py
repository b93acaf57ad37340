"""Typed settings in small groups. One dataclass field = one CLI flag (`--field-name`), one YAML
key and one keyword argument of the Python API; help texts and allowed values live here only.

A group (`Run`, `Optim`, `Model`, `Image`, `Table`, `Text`, `Lora`, `Vocab`, `Tfidf`, `Arch`, `Sequence`,
`Fusion`, `Semi`, `Baseline`, `Auto`, `SSL`, `MLM`, `AlignHeads`, ...) is a dataclass of the settings one concern
reads, with its own checks (`_check`). A verb's settings class inherits the groups it offers:
`FitConfig`, `PretrainConfig`, `AlignConfig`; the verbs that use a trained model have one small
class each (`EvaluateConfig` ... `EmbedConfig`, `COMMANDS`), whose positional arguments and required
settings are marked in the field's metadata (`opt(..., positional=True)`). A kind of task (tuneforge/tasks/<kind>) says which
groups it reads; a setting from another group is refused naming the flag and the kind
(`refuse_unread`). Validation errors name the flag and list what is allowed.

This module imports nothing of tuneforge but errors and recipes (layering: errors < config < core).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .errors import ConfigError
from .recipes import RECIPES


def opt(default: Any, help: str, choices: tuple | None = None, short: str | None = None, *, positional: bool = False,
        nargs: str | None = None, append: bool = False, required: bool = False, metavar: str | None = None,
        resume_safe: bool = False) -> Any:
    """A setting. `positional`: given on the command line without a flag (`tuneforge evaluate RUN`),
    never in a --config file; `nargs`: argparse's, for list settings; `append`: a repeatable flag
    collecting a list; `required`: no default, checked after a --config file and the flags are merged
    (so a required flag may come from the file); `metavar`: the placeholder shown in --help;
    `resume_safe`: `--resume RUN` may change it (it does not shape what the epochs already trained
    compute: how many more, when to stop, how to show progress, where to cache); every other
    setting of a resumed run is its identity and a changed value is refused (core/run.py)."""
    return field(default=default, metadata={"help": help, "choices": choices, "short": short, "positional": positional,
                                            "nargs": nargs, "append": append, "required": required, "metavar": metavar,
                                            "resume_safe": resume_safe})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


FREEZE_HELP = "'none' (full fine-tune), 'backbone' (train the head only), or K (first K stages)"
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")
SSL_METHODS = ("simclr", "byol", "simsiam")  # tuneforge/core/strategies/ssl.py implements exactly these
SEMI_METHODS = ("fixmatch", "pseudo-label", "mean-teacher")


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise ConfigError(f"{flag(name)} must be >= 1, got {v}")


def _fraction(cfg: Any, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not 0 <= v < 1:
            raise ConfigError(f"{flag(name)} must be in [0, 1), got {v}")


def _freeze_value(name: str, v: Any) -> None:
    if v is not None and v not in ("none", "backbone") and not str(v).isdigit():
        raise ConfigError(f"{flag(name)}: {v!r} is not allowed; use none, backbone, or a number of stages")


def _device_name(v: str) -> None:
    """The form of a --device value (whether that device is here is core/device.py's question)."""
    if v not in ("auto", "cpu", "cuda", "mps") and not (v.startswith("cuda:") and v[5:].isdigit()):
        raise ConfigError(f"--device: {v!r} is not allowed; choose auto, cpu, cuda, cuda:N or mps")


class Settings:
    """What every verb's settings class shares: validation by group, the group of a field,
    the explicitly given settings."""

    group: ClassVar[str] = ""
    verb: ClassVar[str] = ""

    def validate(self):
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices and not (value is None and f.default is None):
                raise ConfigError(f"{flag(f.name)}: {value!r} is not allowed; choose one of {', '.join(map(str, choices))}")
        for cls in reversed(type(self).__mro__):
            check = cls.__dict__.get("_check")
            if check is not None:
                check(self)
        return self

    @classmethod
    def groups(cls) -> dict[str, str]:
        """field name -> the group that declares it."""
        out: dict[str, str] = {}
        for c in reversed(cls.__mro__):
            g = c.__dict__.get("group")
            if g:
                for name in c.__dict__.get("__annotations__", {}):
                    out.setdefault(name, g)
        return out

    @classmethod
    def offered(cls) -> list[dataclasses.Field]:
        """The fields this verb offers as flags (a group may hold some it does not use)."""
        skip = set(getattr(cls, "UNOFFERED", ()))
        return [f for f in fields(cls) if f.name not in skip]

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in self.offered()}

    def explicit(self) -> dict:
        """Settings that differ from the defaults: what a recipe must not override."""
        return {f.name: getattr(self, f.name) for f in self.offered() if getattr(self, f.name) != f.default}


# --------------------------------------------------------------------------- groups

@dataclass
class Run(Settings):
    """Where data comes from and goes to; seeds, threads, logging, resuming."""
    group: ClassVar[str] = "run"
    data: str | None = opt(None, "training data: a folder with train/ (and val/, test/) class folders; a text or "
                                 "sequence table (CSV/TSV/JSONL/Parquet, a datasets save_to_disk folder) or a folder of "
                                 "train/val/test tables (a DatasetDict folder); an image+text table")
    val: str | None = opt(None, "validation data of the same kind (default: data/val, else a stratified split of train)")
    test: str | None = opt(None, "test data of the same kind, reported apart and never used for selection (default: data/test)")
    out: str | None = opt(None, "run folder (default: runs/MODEL-TIMESTAMP)")
    # resume_safe: a run started with --overwrite is resumed without it (its folder is its own)
    overwrite: bool = opt(False, "empty an existing --out folder first (without it a folder that holds anything "
                                 "is refused; --resume continues it instead)", resume_safe=True)
    recipe: str | None = opt(None, "named, measured defaults for every setting not given (`tuneforge recipes` lists them)",
                             tuple(RECIPES))
    val_fraction: float = opt(0.1, "fraction of train held out for validation when there is no val split")
    limit_per_class: int | None = opt(None, "use at most N training images (or texts) per class (seeded; for quick experiments)")
    seed: int = opt(0, "seed for split, order, initialisation and augmentation")
    threads: int = opt(0, "torch compute threads (0: one per core)", resume_safe=True)
    eval_batch_size: int = opt(256, "batch size for validation, test and prediction", resume_safe=True)
    precision: str = opt("fp32", "fp32; bf16 autocast (on CPU only faster with native bf16: AVX512-BF16/AMX); fp16 "
                                 "autocast with a gradient scaler (GPUs)", ("fp32", "bf16", "fp16"))
    grad_clip: float | None = opt(None, "clip the gradient norm to this value")
    max_minutes: float | None = opt(None, "stop training before the epoch that would end after this many minutes", resume_safe=True)
    tensorboard: bool = opt(True, "write TensorBoard event files", resume_safe=True)
    progress: bool = opt(True, "show progress (a live bar on a terminal, a line per epoch otherwise)", resume_safe=True)
    resume: str | None = opt(None, "continue the run in this folder from its last complete epoch", resume_safe=True)
    track: str | None = opt(None, "also log settings, per-epoch metrics, the report and the bundle to an experiment "
                                  "tracker: mlflow ($MLFLOW_TRACKING_URI, else ./mlruns/; pip install "
                                  "'tuneforge[mlflow]')", ("mlflow",), resume_safe=True)
    # data-parallel training (core/engine/distributed.py); the process count is checked on --resume
    # against the checkpoint's, so this flag itself may be given again or not
    nproc: int = opt(1, "train in N processes on this machine (data-parallel, one shard of each epoch per "
                        "process): `tuneforge fit --nproc N` re-launches itself through torchrun; for several "
                        "machines use torchrun itself (README: More than one process or machine)", resume_safe=True)
    sync_bn: bool = opt(False, "with more than one process: BatchNorm normalises by the statistics of the whole "
                               "batch across processes (SyncBatchNorm; CUDA only)")
    # resume_safe: a run started on a GPU may be continued on the CPU (or another GPU)
    device: str = opt("auto", "where to train: auto (a CUDA GPU when present, else Apple MPS, else the CPU), cpu, "
                              "cuda, cuda:N or mps", resume_safe=True, metavar="DEVICE")

    def _check(self) -> None:
        if self.track == "mlflow" and importlib.util.find_spec("mlflow") is None:
            raise ConfigError("--track mlflow: MLflow is not installed here; pip install 'tuneforge[mlflow]'")
        if self.data is None and self.resume is None:
            raise ConfigError(f"{flag('data')} is required ({self.__dataclass_fields__['data'].metadata['help']})")
        _positive(self, "eval_batch_size", "limit_per_class")
        _fraction(self, "val_fraction")
        _positive(self, "nproc")
        _device_name(self.device)


@dataclass
class Optim(Settings):
    """Optimizer, schedule, loss smoothing, epochs and early stopping."""
    group: ClassVar[str] = "optim"
    optimizer: str = opt("adamw", "optimizer", OPTIMIZERS)
    # "auto": the learning-rate range test (tuneforge/core/engine/lr_find.py) picks it
    lr: float | str | None = opt(None, "peak learning rate (default: 1e-3 for adam/adamw, 0.05 for sgd; 1e-2 where "
                                       "few images per class default to --freeze backbone); 'auto': "
                                       "chosen by a learning-rate range test before training (see `tuneforge lr-find`)")
    weight_decay: float | None = opt(None, "weight decay, not applied to biases and norm layers (default: 0.05 for adamw, 5e-4 for sgd, 0 for adam)")
    momentum: float = opt(0.9, "SGD momentum (Nesterov)")
    batch_size: int = opt(64, "training batch size")
    epochs: int = opt(10, "maximum number of epochs", resume_safe=True)
    schedule: str = opt("cosine", "learning-rate schedule (per step)", SCHEDULES)
    warmup_epochs: float = opt(0.0, "linear warm-up length in epochs (may be fractional)")
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy")
    monitor: str = opt("val_accuracy", "validation metric for early stopping and best-model selection", ("val_accuracy", "val_loss", "val_micro_f1"))
    patience: int = opt(3, "stop after this many epochs without improvement (0: never stop early)", resume_safe=True)
    # "auto": core/memory.py estimates a step's peak memory before training and splits it only when needed;
    # str first: argparse passes the word through and _check makes a number of it
    accumulate: str | int = opt("auto", "gradient accumulation: compute each training batch in N micro-batches, one "
                                        "optimizer step (the same gradient in less memory; BatchNorm sees the smaller "
                                        "batches); 'auto': 1 unless the step's estimated peak memory does not fit")

    def _check(self) -> None:
        _positive(self, "batch_size", "epochs")
        if self.accumulate != "auto":
            try:
                self.accumulate = int(self.accumulate)
            except (TypeError, ValueError):
                raise ConfigError(f"--accumulate must be a number >= 1 or 'auto', got {self.accumulate!r}") from None
            _positive(self, "accumulate")
        if isinstance(self.lr, str) and self.lr != "auto":
            try:  # YAML reads 1e-3 (no dot) as a string
                self.lr = float(self.lr)
            except ValueError:
                raise ConfigError(f"--lr must be a number > 0 or 'auto', got {self.lr!r}") from None
        if self.lr is not None and self.lr != "auto" and self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.patience < 0:
            raise ConfigError(f"--patience must be >= 0, got {self.patience}")


@dataclass
class Model(Settings):
    """Which model, from which weights, what is frozen."""
    group: ClassVar[str] = "model"
    model: str = opt("efficientnet_lite0", "model name; `tuneforge models` lists them")
    pretrained: bool = opt(True, "start from the model's packaged pretrained weights, when it has them")
    weights: str | None = opt(None, "local weights file (safetensors or plain state dict) for the backbone")
    init: str | None = opt(None, "backbone weights from a `tuneforge pretrain` run folder or a weight file (instead of --weights)")
    freeze: str = opt("none", FREEZE_HELP + "; image class folders with under 100 training images per class and a "
                              "pretrained backbone default to 'backbone' (said on the console)")
    cache_features: bool = opt(True, "with frozen layers and at most flip (images) augmentation, compute their outputs once")
    dropout: float = opt(0.0, "dropout before the classification head")

    def _check(self) -> None:
        _freeze_value("freeze", self.freeze)
        if self.init and self.weights:
            raise ConfigError("--init and --weights both set the backbone's weights; give one")


@dataclass
class Image(Settings):
    """Decoding, size, augmentation and layout of images."""
    group: ClassVar[str] = "image"
    image_size: int | None = opt(None, "input size in pixels (default for class folders: the training images' median "
                                            "side, at most the model's own and rounded down to its stride; pretrain and "
                                            "image+text: the model's own)")
    resize: str = opt("crop", "how images are brought to size: shorter side + centre crop, or squash", ("crop", "squash"))
    augment: str = opt("flip,crop=0.125", "batch augmentations, e.g. 'flip,shear=0.2,zoom=0.2', "
                                          "'flip,crop=0.125,randaugment=2/9,erase=0.25,mixup=0.8,cutmix=1' "
                                          "(also trivialaugment) or 'none' (see tuneforge.core.augment)")
    tta: bool = opt(False, "test-time augmentation: average predictions over the image and its mirror (val, test, predict)")
    head_init: str = opt("random", "class folders: 'probe' starts the head from the linear probe (logistic regression to "
                                   "convergence on the frozen backbone's features, then training goes on: LP-FT); the "
                                   "default under 100 training images per class with a pretrained backbone",
                         ("random", "probe"))
    channels_last: bool = opt(True, "NHWC memory layout (faster convolutions on CPU)")
    strict: bool = opt(False, "make an unreadable image an error instead of a skipped, counted file")
    cache_dir: str | None = opt(None, "decoded-image cache (default: $TUNEFORGE_CACHE or ~/.cache/tuneforge; '' disables)", resume_safe=True)
    workers: int = opt(0, "processes for decoding images (0: one per core)", resume_safe=True)
    # the switch of core/data/mapped.py (choose_store): why auto keeps small sets in memory is there
    cache: str = opt("auto", "where decoded images and cached frozen features live while training: 'memory' (in the "
                             "process), 'disk' (memory-mapped files in --cache-dir: sets larger than memory train), "
                             "'auto' (memory when the decoded set is at most a quarter of the available memory)",
                     ("auto", "memory", "disk"), resume_safe=True)
    label_names: str | None = opt(None, "arrays (--data FILE.npz): names of the label values 0, 1, ... in order, "
                                        "comma-separated, e.g. 'normal,pneumonia' (default: the numbers)")

    def _check(self) -> None:
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"--image-size must be >= 8, got {self.image_size}")


@dataclass
class Table(Settings):
    """How a CSV/TSV/JSONL/Parquet table (or a datasets folder) is read."""
    group: ClassVar[str] = "table"
    text_column: str | None = opt(None, "the column (CSV/TSV header, JSONL key, Parquet/datasets column) holding the text "
                                  "(default: 'text' for a text file)")
    label_column: str = opt("label", "the column holding the class (or the target, with --task regression)")
    columns: str | None = opt(None, "names of a headerless CSV/TSV file's columns in order, e.g. 'text,label' (SST-2, TNEWS)")
    encoding: str = opt("utf-8", "the files' encoding (UTF-8 with a byte-order mark is read as UTF-8)")
    skip_bad_rows: bool = opt(False, "skip and count rows with a bad byte, wrong field count or empty label instead of stopping")


@dataclass
class Heads(Settings):
    """Task heads beyond single-label classification (text tables, and tables of image paths)."""
    group: ClassVar[str] = "heads"
    multi_label: bool = opt(False, "several labels per row: the label column holds labels separated by '|' (or a JSON "
                                   "list); sigmoid outputs, per-label thresholds tuned on validation")
    label_columns: str | None = opt(None, "multi-label with one 0/1 column per label: their names, e.g. "
                                          "'billing,refund,fraud' (implies --multi-label)")


@dataclass
class Text(Settings):
    """Tokens per text and how token states become one vector."""
    group: ClassVar[str] = "text"
    max_length: int = opt(128, "text: tokens kept per text (longer ones are truncated); sequences: steps kept")
    pooling: str = opt("mean", "how token states become one vector: mean, first token (cls; last state for RNNs) or max",
                       ("mean", "cls", "max"))

    def _check(self) -> None:
        _positive(self, "max_length")


@dataclass
class Lora(Settings):
    """LoRA adapters (peft) on a pretrained text encoder."""
    group: ClassVar[str] = "lora"
    lora: bool = opt(False, "pretrained text encoders: train LoRA adapters (peft) and the head instead of all weights")
    lora_rank: int = opt(8, "rank of the LoRA adapters")

    def _check(self) -> None:
        _positive(self, "lora_rank")


@dataclass
class Vocab(Settings):
    """The vocabulary of a text model trained from scratch."""
    group: ClassVar[str] = "vocab"
    vocab: str = opt("word", "from-scratch text models: tokens are words, characters, or characters + bigrams (Chinese)",
                     ("word", "char", "char2"))
    vocab_size: int = opt(50_000, "from-scratch text models: at most this many tokens (most frequent in train)")
    min_freq: int = opt(1, "from-scratch text models: a token must occur this often in train to get its own id")

    def _check(self) -> None:
        _positive(self, "vocab_size", "min_freq")


TFIDF_ANALYZERS = ("auto", "word", "char", "char_wb", "word+char_wb", "word+char")  # core/models/tfidf.py implements these


@dataclass
class Tfidf(Settings):
    """The classic text model (--model tfidf): TF-IDF n-grams + a linear classifier (scikit-learn)."""
    group: ClassVar[str] = "tfidf"
    tfidf_analyzer: str = opt("auto", "--model tfidf: terms are word n-grams, character n-grams (across words: char; "
                                      "inside words: char_wb) or both; auto: for mostly CJK texts (no spaces "
                                      "between words) jieba's words + characters (word+char) when jieba is "
                                      "installed, else char_wb; word otherwise", TFIDF_ANALYZERS)
    tfidf_ngrams: str | None = opt(None, "--model tfidf: n-gram lengths MIN,MAX (default: 1,2 for words, 1,3 for characters)")
    tfidf_classifier: str = opt("auto", "--model tfidf: linear SVM, (multinomial) logistic regression, or the SVM "
                                        "plus a naive Bayes folded into the same linear layer, its share chosen "
                                        "on validation (svm+nb); auto: svm+nb when there is a validation split, "
                                        "else linearsvc", ("auto", "linearsvc", "logreg", "svm+nb"))
    tfidf_c: float | None = opt(None, "--model tfidf: inverse regularisation strength C (default: 0.5 for linearsvc, "
                                      "10 for logreg)")
    tfidf_refit: bool = opt(False, "--model tfidf: after C, the naive-Bayes share and the temperature are chosen on "
                                   "the validation split, refit on train + validation with those choices (the bundle "
                                   "learns from every labelled training text; report.json's val scores stay those of "
                                   "the held-out fit, its test scores are the refit's)")

    def _check(self) -> None:
        if self.tfidf_c is not None and self.tfidf_c <= 0:
            raise ConfigError(f"--tfidf-c must be > 0, got {self.tfidf_c}")
        self.tfidf_ngram_range()

    def tfidf_ngram_range(self) -> tuple[int, int] | None:
        """--tfidf-ngrams as (min, max), or None for the analyzer's default."""
        if self.tfidf_ngrams is None:
            return None
        try:
            lo, hi = (int(x) for x in str(self.tfidf_ngrams).split(","))
        except ValueError:
            raise ConfigError(f"--tfidf-ngrams: {self.tfidf_ngrams!r} is not MIN,MAX (e.g. 1,2)") from None
        if not 1 <= lo <= hi:
            raise ConfigError(f"--tfidf-ngrams: {self.tfidf_ngrams!r} needs 1 <= MIN <= MAX")
        return lo, hi


@dataclass
class Arch(Settings):
    """Size of the from-scratch sequence encoders (lstm, gru, transformer)."""
    group: ClassVar[str] = "arch"
    embed_dim: int = opt(128, "lstm/gru/transformer: embedding (and Transformer model) width")
    hidden_size: int = opt(128, "lstm/gru: hidden units per direction; transformer: feed-forward width")
    num_layers: int = opt(2, "lstm/gru/transformer: stacked layers")

    def _check(self) -> None:
        _positive(self, "embed_dim", "hidden_size", "num_layers")


@dataclass
class Sequence(Settings):
    """Numeric sequences: where the values are and what is predicted."""
    group: ClassVar[str] = "sequence"
    sequence_column: str | None = opt(None, "numeric sequences, one row per sequence: the column holding the list of values")
    id_column: str | None = opt(None, "numeric sequences, one row per time step: the column naming the sequence")
    time_column: str | None = opt(None, "numeric sequences, one row per time step: the column ordering the steps")
    feature_columns: str | None = opt(None, "numeric sequences, one row per step: value columns, comma-separated (default: all others)")


@dataclass
class Target(Settings):
    """What is predicted: classes, or a number (regression, on texts, text tables and numeric sequences)."""
    group: ClassVar[str] = "target"
    task: str = opt("classification", "classify, or regress a numeric target (the --label-column holds numbers; "
                                      "texts, text tables and numeric sequences)", ("classification", "regression"))
    loss: str = opt("mse", "regression and forecasting: the loss on the standardised target (huber: less pulled by "
                           "outliers)", ("mse", "huber"))


@dataclass
class Forecast(Settings):
    """One time series forecast H rows ahead from its last W rows (tuneforge/tasks/forecast)."""
    group: ClassVar[str] = "forecast"
    date_column: str | None = opt(None, "forecasting: the column ordering the series' rows (dates or numbers); "
                                        "with --target-column it makes the data a series to forecast")
    target_column: str | None = opt(None, "forecasting: the column forecast (--feature-columns adds inputs beside it)")
    horizon: int = opt(1, "forecasting: how many rows ahead the target is (1: the next row, 5: a trading week)")
    window: int = opt(30, "forecasting: how many past rows (up to and including the origin) the model sees")
    season: int = opt(5, "forecasting: the period of the seasonal-naive baseline in rows (5: trading days of a week)")
    residual: bool = opt(True, "forecasting: predict the change from the last value (added back), not the level")
    forecast_test_fraction: float = opt(0.15, "forecasting: the last rows held out as the test split (by time); "
                                              "--val-fraction: the rows before them, for validation")

    def _check(self) -> None:
        _positive(self, "horizon", "season")
        if self.window < 2:
            raise ConfigError(f"--window must be >= 2, got {self.window}")
        _fraction(self, "forecast_test_fraction")


@dataclass
class Fusion(Settings):
    """Image + text tables: the two encoders and how they are fused."""
    group: ClassVar[str] = "fusion"
    modalities: str | None = opt(None, "image+text table: 'image,text' trains a fusion model; 'image' or 'text' alone "
                                 "trains a baseline on the same rows")
    image_column: str | None = opt(None, "image+text table, or multi-label image table: the column holding image "
                                         "paths (relative to the table or --image-root)")
    image_root: str | None = opt(None, "image+text table: folder the image paths are relative to (default: the table's folder)")
    image_model: str = opt("efficientnet_lite0", "image+text: the image encoder (any image model of `tuneforge models`)")
    text_model: str = opt("minilm", "image+text: the text encoder (minilm or hf:PATH)")
    fusion: str = opt("late", "image+text: concatenate pooled features, a learned gate, or text-to-image cross-attention",
                      ("late", "gated", "attention"))
    fusion_dim: int = opt(256, "image+text: width of the gated/attention fusion layers")
    image_freeze: str | None = opt(None, "image+text: the image encoder's --freeze (default: --freeze unless 'none', else 'backbone')")
    text_freeze: str | None = opt(None, "image+text: the text encoder's --freeze (default: --freeze unless 'none', else 'backbone')")
    image_lr: float | None = opt(None, "image+text: learning rate of a trained image encoder (default: --lr / 10)")
    text_lr: float | None = opt(None, "image+text: learning rate of a trained text encoder (default: --lr / 20)")
    modality_dropout: float = opt(0.2, "image+text: chance that a training row loses its image or its text, so the model "
                                  "predicts with one input missing (rows lacking one input are then kept)")
    min_class_count: int = opt(0, "image+text: classes with fewer rows are folded into 'other'")
    test_fraction: float = opt(0.0, "image+text: stratified fraction of the table held out as the test split (no --test)")

    def _check(self) -> None:
        _freeze_value("image_freeze", self.image_freeze)
        _freeze_value("text_freeze", self.text_freeze)
        _fraction(self, "modality_dropout", "test_fraction")


@dataclass
class EMA(Settings):
    """One EMA decay, read by the method that keeps an averaged copy of the weights."""
    group: ClassVar[str] = "ema"
    ema: float | None = opt(None, "EMA decay of the averaged weights: a supervised fit keeps an average (e.g. 0.999) "
                                  "and validates, selects and saves it; the mean teacher's teacher (default 0.999); "
                                  "byol's target (default 0.99)")

    def _check(self) -> None:
        if self.ema is not None and not 0 <= self.ema < 1:
            raise ConfigError(f"--ema must be in [0, 1), got {self.ema}")


@dataclass
class Semi(EMA):
    """Few labels and many unlabeled inputs: semi-supervised fit."""
    group: ClassVar[str] = "semi"
    unlabeled: str | None = opt(None, "folder of unlabeled images (any nesting, folder names ignored) for --semi; text: "
                                      "a table with the --text-column (or --columns) of --data, or a .txt file, one text a line")
    semi: str | None = opt(None, "semi-supervised method using --unlabeled", SEMI_METHODS)
    labels_per_class: int | None = opt(None, "keep N labelled training images per class (seeded; the files used are in split.json)")
    semi_threshold: float | str = opt(0.95, "confidence a prediction needs to become a pseudo-label, in (0, 1]; 'auto': "
                                            "FreeMatch's self-adaptive threshold, which starts low (1/classes) and follows "
                                            "the model's mean confidence on unlabeled batches, lower for classes it predicts "
                                            "less often")
    semi_weight: float | None = opt(None, "weight of the unlabeled loss (default: 1; mean-teacher 10)")
    semi_mu: int = opt(7, "unlabeled images per labelled image in a step")
    semi_align: bool = opt(False, "fixmatch/pseudo-label: distribution alignment of the pseudo-labels "
                                   "(evens out classes the model is over-confident about early on)")
    semi_steps: int | None = opt(None, "steps per epoch of a semi-supervised fit (default: one pass over the labelled "
                                       "images, ceil(labelled / --batch-size); the unlabeled pool is reshuffled as it runs out)")

    def _check(self) -> None:
        if self.semi and not self.unlabeled:
            raise ConfigError(f"--semi {self.semi} needs --unlabeled DIR (a folder of unlabeled images; text: a file of texts)")
        # without --semi the semi settings are inert, like --semi-threshold (a recipe for few labels
        # sets them, and its labelled-only baseline runs the same recipe without --semi)
        if self.ema is not None and self.semi in ("fixmatch", "pseudo-label"):
            raise ConfigError(f"--ema is the mean teacher's decay in a semi-supervised fit; --semi {self.semi} keeps no "
                              f"average (leave --ema out, or use --semi mean-teacher)")
        if self.semi_align and self.semi is not None and self.semi not in ("fixmatch", "pseudo-label"):
            raise ConfigError(f"--semi-align works with --semi fixmatch or pseudo-label (hard pseudo-labels), not {self.semi}")
        if self.unlabeled and not self.semi:
            raise ConfigError("--unlabeled needs --semi fixmatch|pseudo-label|mean-teacher")
        _positive(self, "labels_per_class", "semi_mu", "semi_steps")
        if isinstance(self.semi_threshold, str) and self.semi_threshold != "auto":
            try:  # a YAML or API string "0.8"
                self.semi_threshold = float(self.semi_threshold)
            except ValueError:
                raise ConfigError(f"--semi-threshold must be a number in (0, 1] or 'auto', got {self.semi_threshold!r}") from None
        if self.semi_threshold != "auto" and not 0 < self.semi_threshold <= 1:
            raise ConfigError(f"--semi-threshold must be in (0, 1] or 'auto', got {self.semi_threshold}")


@dataclass
class Baseline(Settings):
    """The classic baseline trained beside every fit (core/baseline.py) and shown in its report."""
    group: ClassVar[str] = "baseline"
    baseline: bool = opt(True, "also train the classic baseline on the same split (text: TF-IDF + linear SVM; images: "
                               "the linear probe of a pretrained backbone; sequences: a linear model on the window) "
                               "and report the model against it (--no-baseline: skip it)", resume_safe=True)


@dataclass
class Auto(Settings):
    """`--model auto`: a small portfolio of models trained within a time budget, chosen on validation."""
    group: ClassVar[str] = "auto"
    time_budget: float | None = opt(None, "--model auto: minutes for the whole run; members are trained in order of "
                                          "cost while the rest of the budget fits one, and the best on validation "
                                          "is the run's model")

    def _check(self) -> None:
        if self.time_budget is not None and self.time_budget <= 0:
            raise ConfigError(f"--time-budget must be > 0 minutes, got {self.time_budget}")


@dataclass
class Decision(Settings):
    """The decision rule of a binary classifier: a threshold chosen on validation for a stated recall."""
    group: ClassVar[str] = "decision"
    target_recall: str | None = opt(None, "binary classification: 'CLASS=R' chooses, on validation only, the highest "
                                          "threshold on CLASS's probability that keeps its recall (sensitivity) on "
                                          "validation >= R (e.g. pneumonia=0.95); kept in the bundle and used by predict, "
                                          "evaluate, batch and serve; the report gives sensitivity and specificity at it")

    def _check(self) -> None:
        if self.target_recall is not None:
            target_recall(self.target_recall)


def target_recall(spec: str) -> tuple[str, float]:
    """'CLASS=R' -> (CLASS, R), R in (0, 1]; a ConfigError naming --target-recall otherwise."""
    name, sep, value = str(spec).rpartition("=")
    try:
        recall = float(value)
    except ValueError:
        recall = -1.0
    if not sep or not name.strip() or not 0 < recall <= 1:
        raise ConfigError(f"--target-recall must be CLASS=R with R in (0, 1], e.g. pneumonia=0.95; got {spec!r}")
    return name.strip(), recall


# --------------------------------------------------------------------------- fit

@dataclass
class FitConfig(Decision, Auto, Baseline, Semi, Fusion, Forecast, Target, Sequence, Arch, Tfidf, Vocab, Lora, Text, Heads, Table,
                Image, Model, Optim, Run):
    """`tuneforge fit`: every group; the kind of task (tuneforge/tasks) reads some of them."""
    verb: ClassVar[str] = "fit"


def refuse_unread(cfg: Settings, given: set[str], reads: set[str], kind: str, recipe_keys: set[str] = frozenset()) -> None:
    """A setting the chosen kind of task never reads is an error naming the flag and the kind
    (a setting from a recipe names the recipe), rather than silently ignored."""
    groups = type(cfg).groups()
    for name in sorted(given | recipe_keys):
        if name in reads or name not in groups:
            continue
        where = f" (from --recipe {getattr(cfg, 'recipe', None)})" if name in recipe_keys and name not in given else ""
        raise ConfigError(f"{flag(name)}{where} is not read when fitting {kind} data (it is a {groups[name]} setting); "
                          f"`tuneforge fit --help` lists the settings each kind of data reads")


# --------------------------------------------------------------------------- pretrain

@dataclass
class SSL(EMA):
    """Self-supervised image methods and the kNN probe."""
    group: ClassVar[str] = "ssl"
    temperature: float = opt(0.2, "simclr: softmax temperature of the contrastive loss")
    proj_dim: int = opt(128, "projection head output size")
    proj_hidden: int = opt(512, "projection (and predictor) hidden size")
    knn_k: int = opt(20, "probe: neighbours that vote")

    def _check(self) -> None:
        _positive(self, "proj_dim", "proj_hidden", "knn_k")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")


@dataclass
class MLM(Settings):
    """Masked-language-model pretraining of a text encoder."""
    group: ClassVar[str] = "mlm"
    mask_prob: float = opt(0.15, "mlm: fraction of the tokens masked (BERT's 80% [MASK] / 10% random / 10% kept)")
    heldout_fraction: float = opt(0.05, "mlm: seeded fraction of the texts held out for the masked-token loss before/after")

    def _check(self) -> None:
        if not 0 < self.mask_prob < 1 or not 0 < self.heldout_fraction < 1:
            raise ConfigError(f"--mask-prob and --heldout-fraction must be in (0, 1), got {self.mask_prob}, "
                              f"{self.heldout_fraction}")


@dataclass
class PretrainConfig(MLM, SSL, Table, Text, Image, Model, Optim, Run):
    """`tuneforge pretrain`: self-supervised image methods, or MLM on texts (`--method mlm`)."""
    verb: ClassVar[str] = "pretrain"
    data: str | None = opt(None, "folder of unlabeled images (any nesting; folder names are ignored); --method mlm: "
                                 "a CSV/TSV/JSONL table (--text-column) or a .txt file with one text per line")
    out: str | None = opt(None, "run folder (default: runs/pretrain-METHOD-TIMESTAMP)")
    method: str = opt("simclr", "self-supervised method (mlm: masked-language-model pretraining of a text encoder)",
                      (*SSL_METHODS, "mlm"))
    model: str = opt("fast-cnn", "model whose backbone is pretrained (an image model; --method mlm: minilm or hf:PATH); "
                                 "`tuneforge models` lists them")
    pretrained: bool = opt(True, "start from the model's packaged weights when it has them (continued pretraining); "
                                 "--no-pretrained starts from random init")
    init: str | None = opt(None, "start from a pretrain run folder or a backbone weight file instead")
    epochs: int = opt(20, "passes over the unlabeled images", resume_safe=True)
    batch_size: int | None = opt(None, "images per step (each seen as two views) (default: 256; mlm: 32 texts)")
    optimizer: str | None = opt(None, "optimizer (default: sgd; mlm: adamw)", OPTIMIZERS)
    lr: float | None = opt(None, "peak learning rate (default: 0.1 for sgd, 1e-3 for adam/adamw; mlm: 1e-4)")
    weight_decay: float | None = opt(None, "weight decay, not on biases and norm layers (default: 5e-4; mlm: 0.01)")
    warmup_epochs: float | None = opt(None, "linear warm-up length in epochs (default: 1; mlm: 0.1)")
    probe: str | None = opt(None, "labelled class folders (train/ and test/, or one tree split in half) for a kNN "
                                  "accuracy after every epoch; mlm: a labelled text table (--text-column, --label-column) "
                                  "for a logistic-regression accuracy of the mean-pooled features")
    probe_per_class: int = opt(200, "probe: images (texts) per class in the kNN memory bank (probe fit) and in the queries")
    eval_batch_size: int = opt(512, "batch size of the probe's feature extraction", resume_safe=True)
    # There is no validation split to select on: the last epoch is the model.
    patience: int = opt(0, "pretraining has no validation split: the last epoch is the model (0: never stop early)", resume_safe=True)
    # Settings of the groups above that pretraining does not offer (refused by name if given); --track
    # logs fits (core/run.finish), and pretraining writes its report itself.
    UNOFFERED: ClassVar[tuple[str, ...]] = (
        "val", "test", "recipe", "val_fraction", "limit_per_class", "label_smoothing", "monitor", "weights", "freeze",
        "cache_features", "dropout", "augment", "tta", "head_init", "pooling", "skip_bad_rows", "track")

    def _check(self) -> None:
        mlm = self.method == "mlm"  # defaults that differ between image methods and MLM on text
        for name, image, text in (("optimizer", "sgd", "adamw"), ("batch_size", 256, 32), ("weight_decay", 5e-4, 0.01),
                                  ("warmup_epochs", 1.0, 0.1)):
            if getattr(self, name) is None:
                setattr(self, name, text if mlm else image)
        if self.batch_size < 2:
            raise ConfigError("--batch-size must be >= 2 (views are compared within a batch)")
        _positive(self, "probe_per_class")
        if self.max_length < 4:
            raise ConfigError(f"--max-length must be >= 4, got {self.max_length}")


# --------------------------------------------------------------------------- align

@dataclass
class AlignHeads(Settings):
    """Contrastive image-text alignment: projection heads, temperature, what is trained."""
    group: ClassVar[str] = "align"
    image_column: str = opt("image", "the table's image-path column (relative to --image-root, else to the table's folder)")
    image_root: str | None = opt(None, "folder the image paths are relative to (default: the table's folder)")
    image_model: str = opt("efficientnet_lite0", "image encoder (`tuneforge models` lists them)")
    text_model: str = opt("minilm", "text encoder: minilm or hf:PATH (any local Hugging Face encoder folder)")
    proj_dim: int = opt(256, "width of the shared embedding space (was --embed-dim, still accepted)")
    head: str = opt("linear", "projection heads: one matrix, or a one-hidden-layer MLP", ("linear", "mlp"))
    temperature: float = opt(0.07, "initial softmax temperature (learned during training)")
    flip: bool = opt(True, "augment with the mirrored image (its features are cached too)")
    train_image_stages: int = opt(0, "also train the image encoder's last K stages (their input maps are cached: "
                                  "efficientnet_lite0's stage 1 from the end is its final 1x1 conv + BN)")
    train_list: str | None = opt(None, "file listing the training images (one name per line); with --val-list/--test-list "
                                 "it replaces the random split (e.g. Flickr8k's official lists)")
    val_list: str | None = opt(None, "file listing the validation images (early stopping, best epoch)")
    test_list: str | None = opt(None, "file listing the test images (Recall@k reported, never used for selection)")
    test_fraction: float = opt(0.1, "without lists: fraction of the images held out for the test")

    def _check(self) -> None:
        _positive(self, "proj_dim")
        if bool(self.val_list or self.test_list) and not self.train_list:
            raise ConfigError("--val-list/--test-list need --train-list too (the images to train on)")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        if self.train_image_stages < 0:
            raise ConfigError(f"--train-image-stages must be >= 0, got {self.train_image_stages}")


@dataclass
class AlignConfig(AlignHeads, Table, Text, Image, Optim, Run):
    """`tuneforge align`: an image and a text encoder aligned on image-caption pairs."""
    verb: ClassVar[str] = "align"
    ALIASES: ClassVar[dict[str, str]] = {"embed_dim": "proj_dim"}  # the flag's earlier name
    data: str | None = opt(None, "image+text table (CSV/TSV/JSONL) with an image-path column and a caption column")
    out: str | None = opt(None, "run folder (default: runs/align-TIMESTAMP)")
    text_column: str = opt("caption", "the table's text column; several rows may share an image (all captions are used)")
    image_size: int = opt(224, "image encoder input size in pixels")
    max_length: int = opt(64, "tokens kept per text")
    dropout: float = opt(0.1, "dropout on the encoder features before the projection heads")
    batch_size: int = opt(256, "pairs per training batch (each batch is one InfoNCE problem: bigger is harder)")
    epochs: int = opt(40, "maximum number of epochs", resume_safe=True)
    lr: float | None = opt(None, "peak learning rate (default 1e-3)")
    weight_decay: float | None = opt(None, "weight decay of the heads' matrices (default: 0.05 for adamw)")
    warmup_epochs: float = opt(1.0, "linear warm-up length in epochs")
    monitor: str = opt("val_loss", "validation metric for early stopping and best-epoch selection", ("val_loss",))
    patience: int = opt(5, "stop after this many epochs without improvement (0: never stop early)", resume_safe=True)
    strict: bool = opt(False, "a missing image or empty caption is an error naming the row, not a skipped row")
    cache_dir: str | None = opt(None, "feature cache (default: $TUNEFORGE_CACHE or ~/.cache/tuneforge; '' disables)", resume_safe=True)
    eval_batch_size: int = opt(1024, "pairs per validation batch (val loss is InfoNCE within a batch)", resume_safe=True)
    tensorboard: bool = opt(False, "write TensorBoard event files", resume_safe=True)
    UNOFFERED: ClassVar[tuple[str, ...]] = (
        "val", "test", "recipe", "limit_per_class", "label_smoothing", "augment", "tta", "head_init", "channels_last",
        "pooling", "label_column", "columns", "skip_bad_rows", "track")

    def _check(self) -> None:
        if self.batch_size < 2:
            raise ConfigError("--batch-size must be >= 2: a contrastive batch needs negatives")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(f"--val-fraction and --test-fraction must sum to < 1, got {self.val_fraction}, {self.test_fraction}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")


# --------------------------------------------------------------------------- the verbs that use a trained model

# The same tuples as tuneforge/deploy/export.py's FORMATS and deploy/predictor.py's BACKENDS (tests/test_cli.py
# checks they agree): config sits below deploy and cannot import them, yet allowed values belong here.
EXPORT_FORMATS = ("safetensors", "onnx")
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
RUN_HELP = "run folder or bundle"
ALIGNED_HELP = "run folder of `tuneforge align` (or its model/ bundle)"
FEATURE_CACHE_HELP = "feature cache ('' disables; default: $TUNEFORGE_CACHE or ~/.cache/tuneforge)"


def display_name(f: dataclasses.Field) -> str:
    """How a user names a setting: RUN for a positional argument, --flag-name otherwise."""
    if f.metadata.get("positional"):
        return f.metadata.get("metavar") or f.name.upper()
    return flag(f.name)


@dataclass
class Command(Settings):
    """Base of a verb's settings that are not a training run's: required settings are checked
    once the --config file and the flags are merged."""

    def _check(self) -> None:
        for f in fields(self):
            if f.metadata.get("required") and getattr(self, f.name) in (None, "", []):
                where = f"`tuneforge {self.verb} {display_name(f)} ...`" if f.metadata.get("positional") else \
                    f"give {flag(f.name)} or `{f.name}:` in --config"
                raise ConfigError(f"{display_name(f)} is required ({f.metadata['help']}; {where})")


@dataclass
class EvaluateConfig(Command):
    """`tuneforge evaluate`: a trained model's report on labelled data of its kind."""
    verb: ClassVar[str] = "evaluate"
    run: str | None = opt(None, RUN_HELP, positional=True, required=True)
    data: str | None = opt(None, "labelled data of the kind the model was trained on: class folders (their test/ "
                                 "if present), a text or sequence table with the training columns, an image+text table",
                           required=True)
    out: str | None = opt(None, "report folder (default: RUN/eval-FOLDER)")
    strict: bool = opt(False, "make an unreadable image an error instead of a skipped, counted file")
    cache_dir: str | None = opt(None, "decoded-image cache ('' disables)")
    batch_size: int = opt(256, "inputs per forward pass")
    tta: bool | None = opt(None, "flip test-time augmentation on/off (default: as the model was trained)")
    device: str = opt("auto", "where the model runs: auto (a GPU when present), cpu, cuda, cuda:N or mps", metavar="DEVICE")

    def _check(self) -> None:
        _positive(self, "batch_size")
        _device_name(self.device)


@dataclass
class PredictConfig(Command):
    """`tuneforge predict`: top-k labels, one JSON object per line (or a CSV/JSONL file)."""
    verb: ClassVar[str] = "predict"
    run: str | None = opt(None, RUN_HELP, positional=True, required=True)
    paths: list[str] | None = opt(None, "what the model reads: image files or folders; texts, text files (one text "
                                        "per line) or - (lines from standard input); numeric sequences (JSON lists, or "
                                        "a table in the training layout); for an image+text model: a table, images "
                                        "and/or texts", positional=True, nargs="*")
    text: list[str] | None = opt(None, "a text to classify as it is, even one that looks like a file name (repeatable; "
                                       "after the PATHS)", append=True, metavar="TEXT")
    top_k: int = opt(5, "labels per input, most probable first")
    batch_size: int = opt(256, "inputs per forward pass")
    output: str | None = opt(None, "write to FILE.csv or FILE.jsonl instead of stdout")
    device: str = opt("auto", "where the model runs: auto (a GPU when present), cpu, cuda, cuda:N or mps", metavar="DEVICE")

    def _check(self) -> None:
        _positive(self, "top_k", "batch_size")
        _device_name(self.device)
        if not self.paths and not self.text:
            raise ConfigError("predict: nothing to predict; give PATHS (files, folders, texts or -) and/or --text TEXT")


@dataclass
class ExportConfig(Command):
    """`tuneforge export`: a portable bundle."""
    verb: ClassVar[str] = "export"
    run: str | None = opt(None, RUN_HELP, positional=True, required=True)
    out: str | None = opt(None, "bundle folder to write", required=True)
    format: str = opt("safetensors", "onnx adds model.onnx (dynamic batch), checked against PyTorch within 1e-4 on "
                                     "real inputs", EXPORT_FORMATS)
    quantize: str | None = opt(None, "also write model.int8.onnx (ONNX Runtime static int8) and report its test "
                                     "accuracy change (needs --format onnx)", ("int8",))
    data: str | None = opt(None, "inputs to check/calibrate/measure with when RUN is not a run folder with its split")


@dataclass
class ServeConfig(Command):
    """`tuneforge serve`: the HTTP prediction server."""
    verb: ClassVar[str] = "serve"
    bundle: str | None = opt(None, "bundle or run folder (local only; never a URL)", positional=True, required=True)
    host: str = opt("127.0.0.1", "interface to bind; 0.0.0.0 exposes the server to the network")
    port: int = opt(8000, "TCP port")
    token: str | None = opt(None, "require 'Authorization: Bearer TOKEN' on /v1/predict, /v1/info and /metrics "
                                  "(visible in `ps`: prefer --token-file or $TUNEFORGE_TOKEN)")
    token_file: str | None = opt(None, "read the bearer token from this file (first line)", metavar="PATH")
    backend: str = opt("auto", "auto: ONNX Runtime when the bundle has model.onnx", BACKENDS)
    threads: int = opt(0, "inference threads (0: all cores)")
    max_batch_size: int = opt(32, "micro-batching: most requests per forward pass")
    max_wait_ms: float = opt(5.0, "micro-batching: longest wait for a batch to fill")
    max_queue: int = opt(256, "requests waiting beyond this are refused (503)")
    timeout_ms: float = opt(5000.0, "per-request timeout (504)")
    max_body_mb: float = opt(10.0, "request size limit (413)")
    max_pixels: int = opt(40_000_000, "images whose header announces more pixels (width x height) are refused "
                                      "undecoded (413)")
    decode_threads: int = opt(0, "threads that decode images and tokenise texts, off the event loop (0: up to 4)")
    busy_wait: bool = opt(False, "let ONNX Runtime's threads spin between operators (only when the server has cores "
                                 "to itself)")
    device: str = opt("auto", "where the model runs: auto (a GPU when present), cpu, cuda, cuda:N or mps (ONNX "
                              "backends: ONNX Runtime's CUDA provider on a CUDA device)", metavar="DEVICE")

    def _check(self) -> None:
        _positive(self, "max_batch_size", "max_queue", "max_pixels")
        _device_name(self.device)


@dataclass
class BatchConfig(Command):
    """`tuneforge batch`: a folder or a table predicted into a CSV/JSONL file."""
    verb: ClassVar[str] = "batch"
    run: str | None = opt(None, RUN_HELP, positional=True, required=True)
    source: str | None = opt(None, "image folder, or a .csv/.tsv/.jsonl/.parquet table or datasets folder with a path (or text) column",
                             positional=True, required=True)
    output: str | None = opt(None, "FILE.csv or FILE.jsonl", required=True)
    column: str | None = opt(None, "the table's input column (default: path/image/file, or text)")
    top_k: int = opt(5, "labels per input, most probable first")
    batch_size: int = opt(64, "inputs per forward pass")
    backend: str = opt("torch", "what runs the model (onnx, onnx-int8: the bundle's ONNX files)", BACKENDS)
    progress: bool = opt(True, "show a progress bar")
    device: str = opt("auto", "where the model runs: auto (a GPU when present), cpu, cuda, cuda:N or mps", metavar="DEVICE")

    def _check(self) -> None:
        _positive(self, "top_k", "batch_size")
        _device_name(self.device)


@dataclass
class RetrieveConfig(Command):
    """`tuneforge retrieve`: text -> images or image -> texts with an aligned pair, or Recall@k of a table."""
    verb: ClassVar[str] = "retrieve"
    run: str | None = opt(None, ALIGNED_HELP, positional=True, required=True)
    query: list[str] | None = opt(None, "text queries (with --images)", nargs="+")
    images: str | None = opt(None, "image folder, or an embeddings file from `tuneforge embed`")
    image: list[str] | None = opt(None, "image files or folders to find texts for (with --texts)", nargs="+")
    texts: str | None = opt(None, "file of candidate texts, one per line")
    top_k: int = opt(5, "results per query")
    data: str | None = opt(None, "instead: Recall@1/5/10 over every row of this image+text table")
    image_column: str = opt("image", "--data: the table's image-path column")
    text_column: str = opt("caption", "--data: the table's text column")
    image_root: str | None = opt(None, "folder the table's image paths are relative to")
    cache_dir: str | None = opt(None, FEATURE_CACHE_HELP)

    def _check(self) -> None:
        _positive(self, "top_k")


@dataclass
class ZeroshotConfig(Command):
    """`tuneforge zeroshot`: classify images by class-name prompts with an aligned pair."""
    verb: ClassVar[str] = "zeroshot"
    run: str | None = opt(None, ALIGNED_HELP, positional=True, required=True)
    data: str | None = opt(None, "class folders (their test/ if present), or a plain image folder with --classes")
    table: str | None = opt(None, "instead: a CSV/TSV/JSONL with --image-column and --label-column")
    image_column: str = opt("image", "--table: the image-path column")
    label_column: str | None = opt(None, "--table: the label column")
    image_root: str | None = opt(None, "folder the table's image paths are relative to")
    classes: str | None = opt(None, "comma-separated class names (default: the folder names / table labels)")
    prompts: list[str] | None = opt(None, "templates with {} for the class name, averaged (default: 'a photo of a {}.')",
                                    nargs="+")
    class_name: list[str] | None = opt(None, "words to put into the prompts for a label (repeatable; in --config a list "
                                             "or a mapping LABEL: WORDS); 'Footwear=shoes|sandals|flip flops' lists "
                                             "kinds of the class, scored by the best-matching one",
                                       append=True, metavar="LABEL=WORDS")
    limit_per_class: int | None = opt(None, "score at most N images per class (seeded)")
    out: str | None = opt(None, "report folder (default: RUN/zeroshot-NAME)")
    cache_dir: str | None = opt(None, FEATURE_CACHE_HELP)
    json: bool = opt(False, "print only the JSON summary")

    def _check(self) -> None:
        _positive(self, "limit_per_class")
        self.class_names()

    def class_names(self) -> dict[str, str]:
        """--class-name as {label: words}; an item without words is refused naming it."""
        items = self.class_name or []
        if isinstance(items, dict):  # a --config file may write the mapping itself
            items = [f"{k}={v}" for k, v in items.items()]
        names: dict[str, str] = {}
        for item in items:
            if "=" not in str(item):
                raise ConfigError(f"--class-name {item!r}: write LABEL=WORDS, e.g. 'Personal Care=cosmetics'")
            k, v = str(item).split("=", 1)
            if not any(part.strip() for part in v.split("|")):
                raise ConfigError(f"--class-name {item!r}: no words after '='; write LABEL=WORDS or LABEL=kind|kind")
            names[k.strip()] = v.strip()
        return names


@dataclass
class EmbedConfig(Command):
    """`tuneforge embed`: embeddings of a folder of images, saved once for `retrieve --images FILE`."""
    verb: ClassVar[str] = "embed"
    run: str | None = opt(None, ALIGNED_HELP, positional=True, required=True)
    images: str | None = opt(None, "image folder (recursive) or file", required=True)
    out: str | None = opt(None, "FILE.safetensors (use it as `retrieve --images FILE`)", required=True)
    cache_dir: str | None = opt(None, FEATURE_CACHE_HELP)


@dataclass
class ModelsConfig(Command):
    """`tuneforge models`: the registered models, or timm's architectures (`--timm PATTERN`)."""
    verb: ClassVar[str] = "models"
    timm: str | None = opt(None, "list timm's architectures matching PATTERN (e.g. 'convnext*'), each usable as "
                                 "--model timm:NAME, marking those whose pretrained weights are in the local Hugging "
                                 "Face cache", metavar="PATTERN")


RUNS_FORMATS = ("table", "csv", "json")


@dataclass
class RunsConfig(Command):
    """`tuneforge runs`: a leaderboard of run folders (core/leaderboard.py)."""
    verb: ClassVar[str] = "runs"
    dirs: list[str] | None = opt(None, "run folders, or folders holding run folders (a study's trials/, runs/), "
                                       "searched 3 levels down", positional=True, nargs="+", required=True,
                                 metavar="DIR")
    sort: str | None = opt(None, "the metric to rank by, as SPLIT_METRIC (val_accuracy, val_macro_f1, test_rmse, "
                                 "val_loss...); loss, rmse, mae rank ascending, the others descending (default: "
                                 "val_accuracy, else val_loss)", metavar="METRIC")
    format: str = opt("table", "a table on the terminal, or csv / json (every metric of report.json)", RUNS_FORMATS)
    top: int | None = opt(None, "show only the K best runs", metavar="K")

    def _check(self) -> None:
        _positive(self, "top")


@dataclass
class LrFindConfig(FitConfig):
    """`tuneforge lr-find`: the learning-rate range test on the data, model and optimizer a fit with
    the same settings would use; writes plots/lr_find.png and lr_find.json and prints the suggestion."""
    verb: ClassVar[str] = "lr-find"
    out: str | None = opt(None, "folder of the range test's plot and lr_find.json (default: runs/lr-find-MODEL-TIMESTAMP)")
    start_lr: float = opt(1e-7, "range test: the first learning rate")
    end_lr: float = opt(10.0, "range test: the last learning rate (the test stops earlier when the loss explodes)")
    num_steps: int = opt(100, "range test: optimizer steps, the learning rate growing exponentially between the two")
    # what only a real fit reads (how long, when to stop, where to continue)
    UNOFFERED: ClassVar[tuple[str, ...]] = ("lr", "epochs", "patience", "max_minutes", "resume", "time_budget", "track")

    def _check(self) -> None:
        if not 0 < self.start_lr < self.end_lr:
            raise ConfigError(f"--start-lr and --end-lr must satisfy 0 < start < end, got {self.start_lr}, {self.end_lr}")
        if self.num_steps < 5:
            raise ConfigError(f"--num-steps must be >= 5, got {self.num_steps}")


# --------------------------------------------------------------------------- search

SAMPLERS = ("tpe", "random", "grid", "cmaes")
PRUNERS = ("median", "hyperband", "sha", "none")


@dataclass
class SearchConfig(Command):
    """`tuneforge search`: a hyperparameter search (Optuna) over the settings of a fit. The --config
    file holds `fit:` (the base settings, as `fit --config`) and `space:` (setting -> {log_uniform:
    [a, b]}, {uniform: [a, b]}, {int: [a, b], step: k}, {float: [a, b], step: s} or {choice: [...]})."""
    verb: ClassVar[str] = "search"
    out: str | None = opt(None, "study folder: trials/NNNN (one run folder per trial), best/ (the best trial's "
                                "bundle), report.html, study.db (default: runs/search-TIMESTAMP)")
    trials: int | None = opt(None, "trials to finish (completed or pruned), over every worker and --resume")
    max_minutes: float | None = opt(None, "minutes of trials over the whole study: no trial starts after them, the "
                                          "running one is stopped at them", resume_safe=True)
    storage: str | None = opt(None, "Optuna storage URL shared by the workers of one study (postgresql://..., "
                                    "sqlite:///...; default: sqlite:///OUT/study.db)")
    study: str | None = opt(None, "study name in --storage (default: the OUT folder's name)")
    resume: str | None = opt(None, "continue the study in this folder (its search.yaml) until its budget is spent",
                             resume_safe=True)
    sampler: str = opt("tpe", "how trials choose settings (grid: every combination of choices / stepped ranges)",
                       SAMPLERS)
    pruner: str = opt("median", "stop a trial whose per-epoch validation score is worse than the others' at the "
                                "same epoch (sha: successive halving)", PRUNERS)
    prune_after: int = opt(1, "epochs every trial trains before the pruner may stop it: a one-cycle or warm-up "
                              "schedule's first epoch says little about where a trial ends")
    objective: str | None = opt(None, "the validation metric to optimise: accuracy, macro_f1, loss, top5_accuracy, "
                                      "rmse, mae, r2, mase (forecasts) (default: accuracy, rmse for regression)")
    direction: str = opt("auto", "auto: minimise loss, rmse, mae and mase, maximise the others",
                         ("auto", "maximize", "minimize"))
    seed: int = opt(0, "seed of the sampler (each trial's fit keeps the fit's own --seed)")
    heartbeat: int = opt(10, "seconds between a running trial's heartbeats; a trial silent for twice as long is "
                             "failed and its settings tried once more", resume_safe=True)

    def _check(self) -> None:
        _positive(self, "trials", "heartbeat")
        if self.prune_after < 0:
            raise ConfigError(f"--prune-after must be >= 0, got {self.prune_after}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"--max-minutes must be > 0, got {self.max_minutes}")


@dataclass
class EnsembleConfig(Command):
    """`tuneforge ensemble`: bundles answering together (core/ensemble.py)."""
    verb: ClassVar[str] = "ensemble"
    members: list[str] | None = opt(None, "two or more run folders or bundles of the same kind (classifiers with the "
                                          "same classes, multi-label classifiers, or regressors)", positional=True,
                                    nargs="+", required=True, metavar="RUN_OR_BUNDLE")
    out: str | None = opt(None, "the ensemble bundle's folder (use it as any bundle: predict, evaluate, batch, serve, "
                                "export)", required=True)
    weights: str | None = opt(None, "comma-separated weights, one per member in order, e.g. 0.7,0.3 (normalised to sum "
                                    "1; default: equal)", metavar="W1,W2,...")
    val: str | None = opt(None, "choose the weights on this labelled validation table (read as `evaluate --data` reads "
                                "it): the best accuracy on a 0.1 grid, then the lower log-loss. Never the test set "
                                "you report the ensemble on", metavar="DATA")
    batch_size: int = opt(256, "--val: inputs per forward pass")
    device: str = opt("auto", "--val: where the members run: auto (a GPU when present), cpu, cuda, cuda:N or mps",
                      metavar="DEVICE")

    def _check(self) -> None:
        _positive(self, "batch_size")
        _device_name(self.device)
        if self.members is not None and len(self.members) < 2:
            raise ConfigError("RUN_OR_BUNDLE: give at least two members")
        self.weight_list()

    def weight_list(self) -> list[float] | None:
        """--weights as numbers; a word that is not one is refused naming the flag."""
        if self.weights is None:
            return None
        try:
            return [float(w) for w in str(self.weights).split(",")]
        except ValueError:
            raise ConfigError(f"--weights: {self.weights!r} is not a comma-separated list of numbers (e.g. 0.7,0.3)") from None


COMMANDS: tuple[type[Command], ...] = (EvaluateConfig, PredictConfig, ExportConfig, ServeConfig, BatchConfig,
                                      RetrieveConfig, ZeroshotConfig, EmbedConfig, EnsembleConfig)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"--config: no such file: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"--config: {path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of settings, got {type(doc).__name__}")
    return doc


def build(cls: type, *layers: dict) -> Any:
    """cls(**merged layers), later layers winning; an unknown key is an error naming it."""
    names = {f.name for f in cls.offered()}
    aliases = getattr(cls, "ALIASES", {})
    layers = tuple({k: _plain(v) for k, v in layer.items()} for layer in layers)
    merged: dict = {}
    for layer in layers:
        for k, v in layer.items():
            key = k.replace("-", "_")
            key = aliases.get(key, key)
            if key not in names:
                close = [n for n in names if n.startswith(key[:3])]
                hint = f" (did you mean {', '.join(flag(c) for c in close)}?)" if close else ""
                raise ConfigError(f"unknown setting {flag(key)}{hint}" + (f" for `tuneforge {cls.verb}`" if cls.verb else ""))
            merged[key] = v
    try:
        return cls(**merged)
    except TypeError as e:
        raise ConfigError(str(e)) from None


def _plain(value: Any) -> Any:
    """A setting as config.yaml holds it: a path object (pathlib.Path, any os.PathLike) becomes its
    string, in lists too, so every path argument takes str or Path alike."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)) and any(isinstance(v, os.PathLike) for v in value):
        return [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value]
    return value


def with_recipe(explicit: dict) -> dict:
    """The recipe's settings under the explicitly given ones (flags, YAML keys, keywords)."""
    name = explicit.get("recipe")
    if not name:
        return explicit
    if name not in RECIPES:
        raise ConfigError(f"--recipe: unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return {**RECIPES[name].settings, **explicit}


def write_yaml(cfg: Settings, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
