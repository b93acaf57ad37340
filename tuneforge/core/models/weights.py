"""Pretrained weights from local files only: safetensors, or PyTorch files loaded with
`weights_only=True` (never unpickling arbitrary objects). Nothing here touches the network."""
from __future__ import annotations

import json

from pathlib import Path

import torch
from torch import nn

from ...errors import ConfigError


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--weights: no such file: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends: the file holds more than tensors
        raise ConfigError(f"--weights: {path} is not a plain tensor file ({e.__class__.__name__}); "
                          "use safetensors or a state dict saved with torch.save") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    return obj


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str, ignore: tuple[str, ...] = ()) -> None:
    """Strict load that lists every missing, unexpected or wrong-shape key in the error."""
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    missing = [k for k in own if k not in state and not k.startswith(ignore)]
    unexpected = [k for k in state if k not in own]
    shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shape:
        parts = [f"missing {missing[:10]}" if missing else "", f"unexpected {unexpected[:10]}" if unexpected else "",
                 f"wrong shape {shape[:10]}" if shape else ""]
        raise ConfigError(f"weights from {source} do not fit the model: " + "; ".join(p for p in parts if p))
    module.load_state_dict(state, strict=False)


BACKBONE_FILE = "backbone.safetensors"  # what `tuneforge pretrain` writes and `fit --init` reads


def resolve_init(init: str, model: str) -> str:
    """--init RUN_OR_FILE -> a backbone weight file. A pretrain run folder names its model;
    starting a different architecture from it is refused by name."""
    p = Path(init)
    if p.is_dir():
        f = p / BACKBONE_FILE
        if not f.is_file():
            raise ConfigError(f"--init: {p} has no {BACKBONE_FILE} (a `tuneforge pretrain` run folder writes one); "
                              "or pass a weight file")
        meta = p / "pretrain.json"
        if meta.is_file():
            trained = json.loads(meta.read_text()).get("model")
            if trained and trained != model:
                raise ConfigError(f"--init: {p} pretrained --model {trained}, but this fit uses --model {model}; "
                                  f"pass --model {trained}")
        return str(f)
    if p.is_file():
        return str(p)
    raise ConfigError(f"--init: no such file or run folder: {p}")
