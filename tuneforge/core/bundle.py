"""The bundle: a folder with `model.safetensors`, `config.json` (architecture, classes,
preprocessing, format version, weights checksum) and a model card `README.md`. Nothing
pickled; it is all that `predict`, `serve` and `load` need."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import BundleError
from .models.registry import create_model

FORMAT = "tuneforge-bundle"
FORMAT_VERSION = 1


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class BundleKind:
    """A bundle task whose module is not a Classifier of `create_model`: how to build it from
    config.json and how its model card reads (core/models/aligned.py registers the aligned pair)."""
    build: Callable[[dict], nn.Module]
    card: Callable[[dict], str]


KINDS: dict[str, BundleKind] = {}


def register_kind(task: str, build: Callable[[dict], nn.Module], card: Callable[[dict], str]) -> None:
    KINDS[task] = BundleKind(build, card)


def save_bundle(out: str | Path, model: nn.Module, meta: dict, tokenizer=None) -> Path:
    """Write a bundle: the weights, config.json and the model card. meta: {"task", "model",
    "model_args", "classes", "preprocessing": {...}, "metrics": {...}, ...} (task defaults to
    image-classification). `tokenizer`: a TextEncoding (or anything with `save(folder) -> name`)
    whose files go beside the weights, listed with their checksums in `files` as every other
    file is, so `load_bundle` verifies them before use. The one writer of bundles: classifiers
    and aligned pairs alike."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "model.safetensors"
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights))
    files = dict(meta.get("files") or {})
    if tokenizer is not None:
        saved = out / tokenizer.save(out)
        files.update({f.relative_to(out).as_posix(): _sha256(f)
                      for f in sorted([saved] if saved.is_file() else saved.rglob("*")) if f.is_file()})
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "task": "image-classification",
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "weights_sha256": _sha256(weights), **meta}
    if files:
        config["files"] = files
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "README.md").write_text(model_card(config))
    return out


def model_card(config: dict) -> str:
    """The bundle's README.md, from its config."""
    if config.get("task") in KINDS:
        return KINDS[config["task"]].card(config)
    m = config.get("metrics", {})
    lines = [f"# {config.get('name', config['model'])}", "",
             f"{config.get('task', 'image-classification')} model ({config['model']}, {len(config['classes'])} classes), made by tuneforge "
             f"on {config['created']}.", "",
             "## Classes", ", ".join(config["classes"]), "",
             "## Preprocessing", "```json", json.dumps(config["preprocessing"], indent=1), "```", ""]
    if m:
        lines += ["## Metrics", "| split | accuracy | macro F1 | n |", "|---|---|---|---|"]
        for split, v in m.items():
            lines.append(f"| {split} | {v.get('accuracy', float('nan')):.4f} | {v.get('macro_f1', float('nan')):.4f} | {v.get('n', '')} |")
        lines.append("")
    if config.get("data"):
        lines += ["## Data", "```json", json.dumps(config["data"], indent=1), "```", ""]
    if config.get("onnx"):
        o = config["onnx"]
        lines += ["## ONNX", f"`{o['file']}`: opset {o['opset']}, dynamic batch, input uint8 NCHW pixels at the size "
                  f"above (scaling, normalisation and TTA are inside the graph), output `logits`. Checked at export: "
                  f"max |logit difference| to PyTorch {o['max_abs_diff']:.2g} on {o['checked_on']} real inputs.", ""]
    if config.get("onnx_int8"):
        q = config["onnx_int8"]
        a = q.get("accuracy") or {}
        lines += [f"`{q['file']}`: int8 ({q['method']} quantization, ONNX Runtime)."
                  + (f" Test accuracy {a['fp32']:.4f} -> {a['int8']:.4f} ({a['change_points']:+.2f} points, "
                     f"n={a['n']})." if a else ""), ""]
    if config.get("exported"):
        lines += [f"Exported {config['exported']}.", ""]
    lines += ["## Use", "```", f"tuneforge predict {'<this folder>'} image.jpg",
              f"tuneforge serve {'<this folder>'}        # then open http://127.0.0.1:8000/", "```",
              "Without tuneforge: read `config.json`, decode and resize as `preprocessing` says, and run "
              "`model.onnx` with onnxruntime (or `model.safetensors` with the architecture in `model`).", ""]
    return "\n".join(lines)


def read_bundle_config(path: str | Path) -> dict:
    path = Path(path)
    if (path / "model" / "config.json").exists() and not (path / "config.json").exists():
        path = path / "model"  # a run folder: its bundle is in model/
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise BundleError(f"{path}: not a tuneforge bundle or run folder (no config.json); "
                          "pass a run folder from `tuneforge fit` or a folder from `tuneforge export`")
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{cfg_path}: damaged config ({e})") from None
    if config.get("format") != FORMAT:
        raise BundleError(f"{cfg_path}: not a tuneforge bundle (format {config.get('format')!r})")
    if int(config.get("format_version", 0)) > FORMAT_VERSION:
        raise BundleError(f"{cfg_path}: bundle format {config['format_version']} is newer than this tuneforge "
                          f"understands ({FORMAT_VERSION}); upgrade tuneforge")
    config["_dir"] = str(path)
    return config


def bundle_file(config: dict, name: str) -> Path:
    """A file listed in the bundle's `files` (name -> sha256), checked: a missing, truncated or
    modified file is an error naming it, never a half-loaded model."""
    path = Path(config["_dir"]) / name
    want = config.get("files", {}).get(name)
    if want is None:
        raise BundleError(f"{config['_dir']}: the bundle has no {name}")
    if not path.is_file():
        raise BundleError(f"{path}: missing (listed in config.json); copy the whole bundle folder")
    if _sha256(path) != want:
        raise BundleError(f"{path}: checksum does not match config.json (truncated or modified); "
                          "export the bundle again")
    return path


def build_model(config: dict) -> nn.Module:
    """The untrained module a bundle's config describes (its weights are loaded next)."""
    if config.get("task") in KINDS:  # e.g. an aligned pair: two encoders and the heads, no classes
        return KINDS[config["task"]].build(config)
    return create_model(config["model"], len(config["classes"]), config["preprocessing"]["image_size"],
                        pretrained=False, **config.get("model_args", {}))


def load_bundle(path: str | Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, config). Verifies every checksum (weights, tokenizer files, ONNX
    models) before reading any weight."""
    config = read_bundle_config(path)
    weights = Path(config["_dir"]) / "model.safetensors"
    if not weights.is_file():
        raise BundleError(f"{weights}: missing weights file")
    if config.get("weights_sha256") and _sha256(weights) != config["weights_sha256"]:
        raise BundleError(f"{weights}: checksum does not match config.json (truncated or modified); "
                          "export the bundle again")
    for name in config.get("files", {}):
        bundle_file(config, name)
    model = build_model(config)
    try:
        state = load_file(str(weights))
        model.load_state_dict(state)
    except Exception as e:
        what = config["model"] if isinstance(config["model"], str) else "the model described in config.json"
        raise BundleError(f"{weights}: weights do not fit {what} ({e})") from e
    model.eval()
    return model, config
