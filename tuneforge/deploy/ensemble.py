"""`tuneforge ensemble`: bundles (or run folders) -> one ensemble bundle (core/ensemble.py), with
equal weights, given weights, or weights chosen on a labelled validation table; and `export` of
an ensemble: every member exported as `export` exports it alone."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from ..config import read_yaml
from ..core.bundle import staged_bundle, write_file
from ..core.ensemble import (check_members, choose_weights, class_order, is_ensemble, model_card, normalise_weights,
                             read_ensemble, verified_member, write_ensemble)
from ..errors import ConfigError, DataError
from .export import export_bundle
from ..tasks.registry import softmax
from .predictor import Predictor

log = logging.getLogger("tuneforge")


def make_ensemble(members: list[str | Path], out: str | Path, weights: list[float] | None = None,
                  val: str | Path | None = None, batch_size: int = 256, device: str = "auto") -> dict:
    """Write the ensemble of `members` into `out`; returns its config. `weights`: one per member
    (normalised; default equal). `val`: a labelled table (or folder) read as the first member
    reads `evaluate --data`, on which the weights are chosen instead (`choose_weights`): a
    validation set, never the test set the ensemble will be reported on."""
    if len(members) < 2:
        raise ConfigError("ensemble: give at least two members (run folders or bundles)")
    if weights is not None and val is not None:
        raise ConfigError("--weights and --val both set the weights; give one of them")
    for m in members:
        if is_ensemble(m):
            raise ConfigError(f"{m}: is itself an ensemble; give its members (its members/I folders) instead")
    verified = [verified_member(m) for m in members]
    combine = check_members([c for c, _ in verified])[0]
    extra = {}
    if val is not None:
        if not Path(val).exists():
            raise DataError(f"--val: no such file or folder: {val}")
        _refuse_seen(Path(val), [c for c, _ in verified])
        w, info = _weights_on(val, [c["_dir"] for c, _ in verified], combine, batch_size, device)
        sha = hashlib.sha256(Path(val).read_bytes()).hexdigest() if Path(val).is_file() else None
        extra["weights_chosen"] = {"on": str(Path(val).resolve()), "sha256": sha, **info}
        log.info("weights chosen on %s (%d rows): %s -> %s", val, info["rows"], w, info["chosen"])
    else:
        w = normalise_weights(weights, len(members))
    return write_ensemble(out, verified, w, extra)


def _refuse_seen(val: Path, configs: list[dict]) -> None:
    """--val must be data no member was trained or tested on: weights chosen on a member's training
    table favour the member that memorised it, and on the test table the test would choose them."""
    for c in configs:
        run_yaml = Path(c["_dir"]).parent / "config.yaml"
        recorded = read_yaml(run_yaml) if run_yaml.is_file() else {}
        seen = {"trained on": (c.get("data") or {}).get("train_file") or recorded.get("data"),
                "tested on": recorded.get("test")}
        for what, path in seen.items():
            if path and Path(str(path)).exists() and Path(str(path)).resolve() == val.resolve():
                raise ConfigError(f"--val: {val} is the table {c['_dir']} was {what}; choose the weights on "
                                  "validation data that no member was trained or tested on")


def _weights_on(val: str | Path, dirs: list[str], combine: str, batch_size: int, device: str) -> tuple[list[float], dict]:
    """The members' outputs on the validation table's rows (read once, by the first member's
    Task) and the weights `choose_weights` picks on them."""
    predictors = [Predictor(d, device=device) for d in dirs]
    first = predictors[0]
    labelled = first.task.labelled(val)
    classes = first.classes
    parts, thresholds = [], []
    for p in predictors:
        raw = p.outputs(labelled.rows, batch_size)
        if combine == "regression":
            parts.append(p.task.values(raw))
            continue
        order = class_order(classes, p.classes)
        if combine == "multilabel":
            parts.append(raw.astype(np.float64)[:, order])
            thresholds.append(np.asarray(p.task.thresholds, np.float64)[order])
        else:
            parts.append(softmax(raw.astype(np.float64))[:, order])
    return choose_weights(combine, parts, labelled.targets, thresholds or None)


def export_ensemble(source: str | Path, out: str | Path, format: str, quantize: str | None,
                    data: str | Path | None) -> dict:
    """An ensemble exported member by member (each refused or written as `export` would its
    bundle alone: ONNX checked against PyTorch on real inputs) into a new ensemble bundle."""
    config = read_ensemble(source)
    src, out = Path(config.pop("_dir")), Path(out)
    if out.resolve() == src.resolve():
        raise ConfigError(f"--out: {out} is the source ensemble itself; choose another folder")
    members = config["members"]
    with staged_bundle(out) as tmp:
        for m in members:
            log.info("exporting ensemble member %s (%s)", m["path"], m["model"])
            exported = export_bundle(m.pop("dir"), tmp / m["path"], format, quantize, data)
            if exported.get("onnx"):
                m["onnx"] = exported["onnx"]["file"]
        config["exported"] = exported.get("exported")
        write_file(tmp / "config.json", json.dumps(config, indent=2).encode())
        write_file(tmp / "README.md", model_card(config).encode())
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    return {**config, "_dir": str(out), "files": files, "onnx": {"members": [m.get("onnx") for m in members]}
            if format == "onnx" else None}
