"""What image and text pretraining share: the result, and the check that the model fits the method."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...core.models import model_spec
from ...errors import ConfigError


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
