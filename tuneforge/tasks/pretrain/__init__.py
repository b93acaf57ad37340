"""Pretraining on unlabeled data (`tuneforge pretrain`): self-supervised image methods (SimCLR,
BYOL, SimSiam; image.py) and continued masked-language-model pretraining of a text encoder
(text.py). Both end in `backbone.safetensors`, which `fit --init RUN` loads."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...core.models import model_spec
from ...errors import ConfigError
from ..registry import Plugin, register_plugin


@dataclass
class PretrainResult:
    run_dir: Path
    backbone_path: Path
    report: dict
    config: object


def resolve(cfg, given=()) -> None:
    """The model must fit the method: image methods on image models, MLM on a pretrained text encoder."""
    mlm = cfg.method == "mlm"
    modality = model_spec(cfg.model).modality
    if mlm and not (cfg.model == "minilm" or cfg.model.startswith("hf:")):
        raise ConfigError(f"--method mlm pretrains a pretrained text encoder (--model minilm or hf:PATH), "
                          f"not --model {cfg.model} ({modality})")
    if not mlm and modality != "image":
        raise ConfigError(f"--model {cfg.model} is a text model: --method {cfg.method} is for images; "
                          "text encoders take --method mlm")


PLUGIN = register_plugin(Plugin(
    "pretrain", groups=("run", "optim", "model", "image", "table", "text", "ssl", "mlm", "ema"), detect=lambda cfg: False,
    fit="tuneforge.tasks.pretrain.image:pretrain", resolve="tuneforge.tasks.pretrain:resolve",
    help="`tuneforge pretrain`: unlabeled images (simclr, byol, simsiam) or texts (mlm)"))
