"""Typed settings. One dataclass field = one CLI flag (`--field-name`), one YAML key and one
keyword argument of the Python API; the help text and allowed values live here only.
Validation errors name the flag and list what is allowed."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .recipes import RECIPES


def opt(default: Any, help: str, choices: tuple | None = None, short: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices, "short": short})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class FitConfig:
    data: str | None = opt(None, "folder with train/ (and optionally val/, test/) class folders, or a train folder itself")
    val: str | None = opt(None, "validation class folder (default: data/val, else a stratified split of train)")
    test: str | None = opt(None, "test class folder, reported apart and never used for selection (default: data/test)")
    out: str | None = opt(None, "run folder (default: runs/MODEL-TIMESTAMP)")
    recipe: str | None = opt(None, "named, measured defaults for every setting not given (`tuneforge recipes` lists them)",
                             tuple(RECIPES))
    model: str = opt("efficientnet_lite0", "model name; `tuneforge models` lists them")
    pretrained: bool = opt(True, "start from the model's packaged pretrained weights, when it has them")
    weights: str | None = opt(None, "local weights file (safetensors or plain state dict) for the backbone")
    image_size: int | None = opt(None, "input size in pixels (default: the model's own)")
    resize: str = opt("crop", "how images are brought to size: shorter side + centre crop, or squash", ("crop", "squash"))
    freeze: str = opt("none", "'none' (full fine-tune), 'backbone' (train the head only), or K (first K stages)")
    cache_features: bool = opt(True, "with --freeze backbone and at most flip augmentation, compute the frozen features once")
    dropout: float = opt(0.0, "dropout before the classification head")
    optimizer: str = opt("adamw", "optimizer", ("adam", "adamw", "sgd"))
    lr: float | None = opt(None, "peak learning rate (default: 1e-3 for adam/adamw, 0.05 for sgd)")
    weight_decay: float | None = opt(None, "weight decay, not applied to biases and norm layers (default: 0.05 for adamw, 5e-4 for sgd, 0 for adam)")
    momentum: float = opt(0.9, "SGD momentum (Nesterov)")
    batch_size: int = opt(64, "training batch size")
    epochs: int = opt(10, "maximum number of epochs")
    schedule: str = opt("cosine", "learning-rate schedule (per step)", ("constant", "cosine", "onecycle"))
    warmup_epochs: float = opt(0.0, "linear warm-up length in epochs (may be fractional)")
    label_smoothing: float = opt(0.0, "label smoothing of the cross-entropy")
    grad_clip: float | None = opt(None, "clip the gradient norm to this value")
    precision: str = opt("fp32", "bf16 autocast is only faster on CPUs with native bf16 (AVX512-BF16/AMX)", ("fp32", "bf16"))
    channels_last: bool = opt(True, "NHWC memory layout (faster convolutions on CPU)")
    augment: str = opt("flip,crop=0.125", "batch augmentations, e.g. 'flip,shear=0.2,zoom=0.2' or 'none' (see tuneforge.augment)")
    tta: bool = opt(False, "test-time augmentation: average predictions over the image and its mirror (val, test, predict)")
    monitor: str = opt("val_accuracy", "validation metric for early stopping and best-model selection", ("val_accuracy", "val_loss"))
    patience: int = opt(3, "stop after this many epochs without improvement (0: never stop early)")
    val_fraction: float = opt(0.1, "fraction of train held out for validation when there is no val split")
    limit_per_class: int | None = opt(None, "use at most N training images (or texts) per class (seeded; for quick experiments)")
    seed: int = opt(0, "seed for split, order, initialisation and augmentation")
    strict: bool = opt(False, "make an unreadable image an error instead of a skipped, counted file")
    cache_dir: str | None = opt(None, "decoded-image cache (default: $TUNEFORGE_CACHE or ~/.cache/tuneforge; '' disables)")
    workers: int = opt(0, "processes for decoding images (0: one per core)")
    threads: int = opt(0, "torch compute threads (0: one per core)")
    eval_batch_size: int = opt(256, "batch size for validation, test and prediction")
    tensorboard: bool = opt(True, "write TensorBoard event files")
    progress: bool = opt(True, "show progress (a live bar on a terminal, a line per epoch otherwise)")
    resume: str | None = opt(None, "continue the run in this folder from its last complete epoch")
    # Image + text tables (tuneforge/fit_multimodal.py): --data TABLE with an image-path and a text column
    modalities: str | None = opt(None, "image+text table: 'image,text' trains a fusion model; 'image' or 'text' alone "
                                 "trains a baseline on the same rows")
    image_column: str | None = opt(None, "image+text table: the column holding image paths (relative to the table or --image-root)")
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
    # Text and sequences (--data FILE or a folder of train/val/test files; tuneforge.data.text)
    text_column: str | None = opt(None, "text data: the column (CSV/TSV header, JSONL key) holding the text (default: 'text' for a text file)")
    label_column: str = opt("label", "text/sequence data: the column holding the class (or the target, with --task regression)")
    columns: str | None = opt(None, "names of a headerless CSV/TSV file's columns in order, e.g. 'text,label' (SST-2, TNEWS)")
    encoding: str = opt("utf-8", "text files' encoding (UTF-8 with a byte-order mark is read as UTF-8)")
    skip_bad_rows: bool = opt(False, "skip and count rows with a bad byte, wrong field count or empty label instead of stopping")
    max_length: int = opt(128, "text: tokens kept per text (longer ones are truncated); sequences: steps kept")
    pooling: str = opt("mean", "how token states become one vector: mean, first token (cls; last state for RNNs) or max",
                       ("mean", "cls", "max"))
    lora: bool = opt(False, "pretrained text encoders: train LoRA adapters (peft) and the head instead of all weights")
    lora_rank: int = opt(8, "rank of the LoRA adapters")
    vocab: str = opt("word", "from-scratch text models: tokens are words, characters, or characters + bigrams (Chinese)",
                     ("word", "char", "char2"))
    vocab_size: int = opt(50_000, "from-scratch text models: at most this many tokens (most frequent in train)")
    min_freq: int = opt(1, "from-scratch text models: a token must occur this often in train to get its own id")
    embed_dim: int = opt(128, "lstm/gru/transformer: embedding (and Transformer model) width")
    hidden_size: int = opt(128, "lstm/gru: hidden units per direction; transformer: feed-forward width")
    num_layers: int = opt(2, "lstm/gru/transformer: stacked layers")
    task: str = opt("classification", "sequence data: classify, or regress a numeric target", ("classification", "regression"))
    sequence_column: str | None = opt(None, "numeric sequences, one row per sequence: the column holding the list of values")
    id_column: str | None = opt(None, "numeric sequences, one row per time step: the column naming the sequence")
    time_column: str | None = opt(None, "numeric sequences, one row per time step: the column ordering the steps")
    feature_columns: str | None = opt(None, "numeric sequences, one row per step: value columns, comma-separated (default: all others)")
    # Unlabeled data (issue 5): semi-supervised fit, initialisation from `tuneforge pretrain`
    unlabeled: str | None = opt(None, "folder of unlabeled images (any nesting, folder names ignored) for --semi; text: "
                                      "a table with the --text-column (or --columns) of --data, or a .txt file, one text a line")
    semi: str | None = opt(None, "semi-supervised method using --unlabeled", ("fixmatch", "pseudo-label", "mean-teacher"))
    labels_per_class: int | None = opt(None, "keep N labelled training images per class (seeded; the files used are in split.json)")
    init: str | None = opt(None, "backbone weights from a `tuneforge pretrain` run folder or a weight file (sets --weights)")
    semi_threshold: float = opt(0.95, "confidence a prediction needs to become a pseudo-label")
    semi_weight: float | None = opt(None, "weight of the unlabeled loss (default: 1; mean-teacher 10)")
    semi_mu: int = opt(7, "unlabeled images per labelled image in a step")
    semi_align: bool = opt(False, "fixmatch/pseudo-label: distribution alignment of the pseudo-labels "
                                   "(evens out classes the model is over-confident about early on)")
    semi_steps: int | None = opt(None, "steps per epoch of a semi-supervised fit (default: one pass over the unlabeled images)")
    ema: float = opt(0.999, "mean teacher: EMA decay of the teacher")
    max_minutes: float | None = opt(None, "stop training before the epoch that would end after this many minutes")

    def validate(self) -> "FitConfig":
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices and not (value is None and f.default is None):
                raise ConfigError(f"{flag(f.name)}: {value!r} is not allowed; choose one of {', '.join(choices)}")
        if self.data is None and self.resume is None:
            raise ConfigError(f"{flag('data')} is required (a folder of class folders)")
        if self.freeze not in ("none", "backbone") and not str(self.freeze).isdigit():
            raise ConfigError(f"--freeze: {self.freeze!r} is not allowed; use none, backbone, or a number of stages")
        positive = {"batch_size": self.batch_size, "epochs": self.epochs, "eval_batch_size": self.eval_batch_size}
        for name, v in positive.items():
            if v is None or v < 1:
                raise ConfigError(f"{flag(name)} must be >= 1, got {v}")
        for name in ("image_freeze", "text_freeze"):
            v = getattr(self, name)
            if v is not None and v not in ("none", "backbone") and not str(v).isdigit():
                raise ConfigError(f"{flag(name)}: {v!r} is not allowed; use none, backbone, or a number of stages")
        if not 0 <= self.modality_dropout < 1 or not 0 <= self.test_fraction < 1:
            raise ConfigError(f"--modality-dropout and --test-fraction must be in [0, 1), got {self.modality_dropout}, {self.test_fraction}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr is not None and self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"--image-size must be >= 8, got {self.image_size}")
        if self.patience < 0:
            raise ConfigError(f"--patience must be >= 0, got {self.patience}")
        for name in ("max_length", "lora_rank", "vocab_size", "min_freq", "embed_dim", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{flag(name)} must be >= 1, got {getattr(self, name)}")
        if self.semi and not self.unlabeled:
            raise ConfigError(f"--semi {self.semi} needs --unlabeled DIR (a folder of unlabeled images; text: a file of texts)")
        if self.semi_align and self.semi not in ("fixmatch", "pseudo-label"):
            raise ConfigError(f"--semi-align works with --semi fixmatch or pseudo-label (hard pseudo-labels), not {self.semi}")
        if self.unlabeled and not self.semi:
            raise ConfigError("--unlabeled needs --semi fixmatch|pseudo-label|mean-teacher")
        for name in ("labels_per_class", "semi_mu", "semi_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{flag(name)} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.semi_threshold <= 1 or not 0 <= self.ema < 1:
            raise ConfigError(f"--semi-threshold must be in (0, 1] and --ema in [0, 1), got {self.semi_threshold}, {self.ema}")
        if self.init and self.weights:
            raise ConfigError("--init and --weights both set the backbone's weights; give one")
        from .augment import parse_spec
        parse_spec(self.augment)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def explicit(self) -> dict:
        """Settings that differ from the defaults: what a recipe must not override."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}


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
    names = {f.name for f in fields(cls)}
    merged: dict = {}
    for layer in layers:
        for k, v in layer.items():
            key = k.replace("-", "_")
            if key not in names:
                close = [n for n in names if n.startswith(key[:3])]
                hint = f" (did you mean {', '.join(flag(c) for c in close)}?)" if close else ""
                raise ConfigError(f"unknown setting {flag(key)}{hint}")
            merged[key] = v
    try:
        return cls(**merged)
    except TypeError as e:
        raise ConfigError(str(e)) from None


def with_recipe(explicit: dict) -> dict:
    """The recipe's settings under the explicitly given ones (flags, YAML keys, keywords)."""
    name = explicit.get("recipe")
    if not name:
        return explicit
    if name not in RECIPES:
        raise ConfigError(f"--recipe: unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return {**RECIPES[name].settings, **explicit}


def write_yaml(cfg: Any, path: Path) -> None:
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
