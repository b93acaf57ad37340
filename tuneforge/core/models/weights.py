"""Pretrained weights from local files only: safetensors, or PyTorch files loaded with
`weights_only=True` (never unpickling arbitrary objects). Nothing here touches the network."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ...errors import ConfigError


def load_state_dict_file(path: str | Path, flag: str = "--weights") -> dict[str, torch.Tensor]:
    """name -> tensor of a safetensors file or a plain PyTorch state dict. Every failure is a
    ConfigError naming `flag` and the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{flag}: no such file: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:  # bad or truncated header, empty file
            raise ConfigError(f"{flag}: {path} is not a readable safetensors file ({e}); "
                              "pass an intact file (copy it again, or re-run what wrote it)") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends: the file holds more than tensors
        raise ConfigError(f"{flag}: {path} is not a plain tensor file ({e.__class__.__name__}); "
                          "use safetensors or a state dict saved with torch.save") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ConfigError(f"{flag}: {path} holds a {type(obj).__name__}, not a state dict (names -> tensors); "
                          "save model.state_dict() or use safetensors")
    return obj


def check_weight_file(path: str | Path, flag: str) -> None:
    """Fail early, naming `flag` and the file, on a weight file that cannot be read: for
    safetensors only the header is read (it records every tensor's extent, so truncation
    shows), other files are loaded."""
    path = Path(path)
    if path.suffix != ".safetensors":
        load_state_dict_file(path, flag)
        return
    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{flag}: {path} is not a readable safetensors file ({e}); "
                          "pass an intact file (copy it again, or re-run what wrote it)") from None


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
    """--init RUN_OR_FILE -> a backbone weight file, checked readable. A pretrain run folder
    names its model; starting a different architecture from it is refused by name. The file is
    checked here so that a damaged one is an error naming --init, not the --weights it is
    passed on as."""
    p = Path(init)
    if p.is_dir():
        f = p / BACKBONE_FILE
        if not f.is_file():
            raise ConfigError(f"--init: {p} has no {BACKBONE_FILE} (a `tuneforge pretrain` run folder writes one); "
                              "or pass a weight file")
        meta = p / "pretrain.json"
        if meta.is_file():
            try:
                trained = json.loads(meta.read_text()).get("model")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
                raise ConfigError(f"--init: {meta} is damaged ({e.__class__.__name__}); "
                                  "pass the weight file itself") from None
            if trained and trained != model:
                raise ConfigError(f"--init: {p} pretrained --model {trained}, but this fit uses --model {model}; "
                                  f"pass --model {trained}")
        check_weight_file(f, "--init")
        return str(f)
    if p.is_file():
        check_weight_file(p, "--init")
        return str(p)
    raise ConfigError(f"--init: no such file or run folder: {p}")
