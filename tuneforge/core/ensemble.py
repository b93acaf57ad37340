"""The ensemble bundle: several bundles answering together, each weighted. A folder holding the
member bundles whole (`members/0/`, `members/1/`, ... each still a bundle with its own manifest),
`config.json` (format `tuneforge-ensemble`: the members, their weights summing to 1, the classes,
how outputs combine), a model card and a manifest of every file. Nothing pickled.

How members combine, by `combine`:
- "classification": the weighted mean of the members' class probabilities (softmax), classes
  matched by name (members may order them differently);
- "multilabel": the weighted mean of each label's probability (sigmoid); a label's threshold is
  the weighted mean of the members' thresholds for it;
- "regression": the weighted mean of the values, in the target's units.
Members must share that kind and what they read (text, image, sequence, image+text); other
bundle tasks (aligned pairs, forecasts) are refused.

Weights are equal unless given, or chosen on a labelled validation table (`choose_weights`: the
best accuracy on a grid over the simplex, then the lower log-loss). The validation table must be
neither the test set the ensemble is reported on nor any table a member was trained on."""
from __future__ import annotations

import json
import math
import shutil
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

import numpy as np

from ..errors import BundleError, ConfigError
from .bundle import (ENSEMBLE_FORMAT, MANIFEST, _bundle_dir, _read, _verify, load_config_json, read_manifest_doc,
                     staged_bundle, write_file)

FORMAT_VERSION = 1
MEMBERS = "members"

# bundle task -> (how its outputs combine, what it reads); a task not listed cannot be a member
TASK_KINDS: dict[str, tuple[str, str]] = {
    "image-classification": ("classification", "image"),
    "text-classification": ("classification", "text"),
    "text-tfidf": ("classification", "text"),
    "image-text-classification": ("classification", "image+text"),
    "sequence-classification": ("classification", "sequence"),
    "text-multilabel": ("multilabel", "text"),
    "image-multilabel": ("multilabel", "image"),
    "text-regression": ("regression", "text"),
    "image-regression": ("regression", "image"),
    "sequence-regression": ("regression", "sequence"),
}
GRID_POINTS = 5000  # the most weight vectors `choose_weights` tries


# ---------------------------------------------------------------- reading


def is_ensemble(path: str | Path) -> bool:
    """Whether `path` (a folder, or a run folder whose model/ is one) holds an ensemble bundle."""
    try:
        folder = _bundle_dir(path)
        return json.loads((folder / "config.json").read_bytes()).get("format") == ENSEMBLE_FORMAT
    except (BundleError, OSError, ValueError, AttributeError):
        return False


def read_ensemble(path: str | Path) -> dict:
    """config.json of an ensemble bundle, verified against its manifest, with `_dir` and each
    member's folder (`members[i]["dir"]`); the members' own files are verified when they load."""
    folder = _bundle_dir(path)
    cfg_path, config = load_config_json(folder)
    if not isinstance(config, dict) or config.get("format") != ENSEMBLE_FORMAT:
        raise BundleError(f"{cfg_path}: not a tuneforge ensemble")
    if not isinstance(config.get("format_version"), int) or config["format_version"] > FORMAT_VERSION:
        raise BundleError(f"{cfg_path}: ensemble format {config.get('format_version')!r} is not one this tuneforge "
                          f"understands ({FORMAT_VERSION}); upgrade tuneforge")
    files = read_manifest_doc(folder)
    _verify(folder, "config.json", files.get("config.json", ""))
    members = config.get("members")
    weights = config.get("weights")
    if not isinstance(members, list) or not isinstance(weights, list) or len(members) != len(weights) or not members:
        raise BundleError(f"{cfg_path}: damaged ensemble config (members and weights disagree)")
    for m in members:
        rel = m.get("path") if isinstance(m, dict) else None
        if not isinstance(rel, str) or not rel.startswith(MEMBERS + "/") or ".." in rel:
            raise BundleError(f"{cfg_path}: damaged ensemble config (member path {rel!r})")
        m["dir"] = str(folder / rel)
    config["_dir"] = str(folder)
    return config


# ---------------------------------------------------------------- checking members


def member_kind(config: dict) -> tuple[str, str]:
    """(combine, reads) of a member bundle's config; a task that cannot be combined is refused by name."""
    task = config.get("task", "image-classification")
    if config.get("format") == ENSEMBLE_FORMAT:
        raise ConfigError(f"{config['_dir']}: is itself an ensemble; give its members instead")
    if task not in TASK_KINDS:
        raise ConfigError(f"{config['_dir']}: a {task} model cannot be a member of an ensemble (ensembles combine "
                          f"classifiers, multi-label classifiers and regressors: {', '.join(TASK_KINDS)})")
    return TASK_KINDS[task]


def check_members(configs: list[dict]) -> tuple[str, str, list[str]]:
    """(combine, reads, classes) the members share; the first member that differs from the
    first one is refused, naming its folder and what differs (classes compared as sets)."""
    combine, reads = member_kind(configs[0])
    classes = list(configs[0].get("classes") or [])
    for c in configs[1:]:
        c_combine, c_reads = member_kind(c)
        if (c_combine, c_reads) != (combine, reads):
            raise ConfigError(f"{c['_dir']}: a {c.get('task')} model ({c_combine} of {c_reads}), but "
                              f"{configs[0]['_dir']} is a {configs[0].get('task')} model ({combine} of {reads}); "
                              "the members of an ensemble must be the same kind of model")
        mine = list(c.get("classes") or [])
        if combine != "regression" and set(mine) != set(classes):
            missing, extra = sorted(set(classes) - set(mine)), sorted(set(mine) - set(classes))
            raise ConfigError(f"{c['_dir']}: its classes differ from {configs[0]['_dir']}'s"
                              + (f"; it lacks {', '.join(missing[:5])}" if missing else "")
                              + (f"; it has {', '.join(extra[:5])} besides" if extra else ""))
    return combine, reads, classes


def class_order(classes: list[str], member_classes: list[str]) -> np.ndarray:
    """Indices into a member's outputs that put them in the ensemble's class order."""
    where = {c: i for i, c in enumerate(member_classes)}
    return np.array([where[c] for c in classes], dtype=np.int64)


def normalise_weights(weights: list[float] | None, n: int, flag_name: str = "--weights") -> list[float]:
    """Weights summing to 1 (equal when None); a wrong count, a negative or an all-zero list is
    refused naming the flag."""
    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ConfigError(f"{flag_name}: {len(w)} weights for {n} members; give one per member, in order")
    if any(not math.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise ConfigError(f"{flag_name}: weights must be non-negative numbers, not all 0 (got {weights})")
    return [x / sum(w) for x in w]


# ---------------------------------------------------------------- combining


def weighted_mean(parts: list[np.ndarray], weights: list[float] | np.ndarray) -> np.ndarray:
    """The combination of every kind: probabilities (class-aligned) or values, weighted."""
    return np.tensordot(np.asarray(weights, np.float64), np.stack([np.asarray(p, np.float64) for p in parts]), axes=1)


def simplex_grid(n: int) -> np.ndarray:
    """Weight vectors on a grid over the simplex: steps of 0.1 while that makes at most
    GRID_POINTS vectors (coarser for many members), with equal weights first."""
    steps = 10
    while steps > 1 and math.comb(steps + n - 1, n - 1) > GRID_POINTS:
        steps -= 1
    points = [np.full(n, 1.0 / n)]
    # stars and bars: every way to split `steps` units over n members
    for bars in combinations(range(steps + n - 1), n - 1):
        counts = np.diff([-1, *bars, steps + n - 1]) - 1
        points.append(counts / steps)
    return np.array(points)


def score(combine: str, combined: np.ndarray, targets: np.ndarray,
          thresholds: np.ndarray | None = None) -> tuple[float, float]:
    """(higher is better, lower is better) of combined outputs against targets: accuracy and
    log-loss for a classifier, micro-F1 at the thresholds and mean binary log-loss for
    multi-label, and (-RMSE, RMSE) for a regressor."""
    if combine == "regression":
        rmse = float(np.sqrt(np.mean((combined - targets.astype(np.float64)) ** 2)))
        return -rmse, rmse
    p = np.clip(combined, 1e-12, 1 - 1e-12)
    if combine == "multilabel":
        t = targets.astype(bool)
        pred = combined >= (thresholds if thresholds is not None else 0.5)
        tp = float((pred & t).sum())
        f1 = 2 * tp / max(float(pred.sum() + t.sum()), 1e-12)
        return f1, float(-(t * np.log(p) + (~t) * np.log1p(-p)).mean())
    t = targets.astype(np.int64)
    return float((combined.argmax(1) == t).mean()), float(-np.log(p[np.arange(len(t)), t]).mean())


def choose_weights(combine: str, parts: list[np.ndarray], targets: np.ndarray,
                   thresholds: list[np.ndarray] | None = None) -> tuple[list[float], dict]:
    """The grid point (see `simplex_grid`) with the best score on labelled validation outputs
    (`parts`: each member's class-aligned probabilities or values), ties to the lower loss and
    then to the earlier point (equal weights come first). Returns the weights and what was
    measured: the chosen weights' scores, equal weights', each member's alone."""
    names = {"classification": ("accuracy", "log_loss"), "multilabel": ("micro_f1", "log_loss"),
             "regression": ("neg_rmse", "rmse")}[combine]
    best, best_key = None, None
    for w in simplex_grid(len(parts)):
        th = weighted_mean(thresholds, w) if thresholds is not None else None
        s = score(combine, weighted_mean(parts, w), targets, th)
        key = (s[0], -s[1])
        if best_key is None or key > best_key:
            best, best_key = w, key

    def measured(w) -> dict:
        th = weighted_mean(thresholds, w) if thresholds is not None else None
        s = score(combine, weighted_mean(parts, w), targets, th)
        return {names[0]: s[0], names[1]: s[1]} if combine != "regression" else {"rmse": s[1]}

    n = len(parts)
    info = {"rows": int(len(targets)), "grid_points": int(len(simplex_grid(n))), "chosen": measured(best),
            "equal_weights": measured(np.full(n, 1.0 / n)),
            "members_alone": [measured(np.eye(n)[i]) for i in range(n)]}
    return [round(float(x), 6) for x in best], info


# ---------------------------------------------------------------- writing


def verified_member(path: str | Path) -> tuple[dict, dict[str, str]]:
    """(config, manifest files) of a member bundle with every listed file verified, so a damaged
    bundle is refused before it is copied."""
    config, manifest = _read(path)
    folder = Path(config["_dir"])
    for name, want in manifest.items():
        _verify(folder, name, want)
    return config, manifest


def write_ensemble(out: str | Path, members: list[tuple[dict, dict[str, str]]], weights: list[float],
                   extra: dict | None = None) -> dict:
    """Write the ensemble bundle into `out` as a whole (core/bundle.py `staged_bundle`): each
    member's listed files and manifest copied into members/I, config.json, the model card, a
    manifest of everything. Returns the config written (with `_dir`)."""
    out = Path(out)
    configs = [c for c, _ in members]
    for c in configs:
        if Path(c["_dir"]).resolve() == out.resolve() or out.resolve() in Path(c["_dir"]).resolve().parents:
            raise ConfigError(f"--out: {out} holds the member {c['_dir']}; choose another folder")
    combine, reads, classes = check_members(configs)
    names = [c.get("model", "?") for c in configs]
    config = {"format": ENSEMBLE_FORMAT, "format_version": FORMAT_VERSION, "task": configs[0].get("task"),
              "combine": combine, "reads": reads, "classes": classes, "model": "ensemble(" + "+".join(names) + ")",
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "weights": [round(float(w), 6) for w in weights],
              "members": [{"path": f"{MEMBERS}/{i}", "model": c.get("model"), "task": c.get("task"),
                           "source": str(Path(c["_dir"]).resolve()), "weights_sha256": c.get("weights_sha256"),
                           "metrics": c.get("metrics") or {}} for i, c in enumerate(configs)],
              **(extra or {})}
    with staged_bundle(out) as tmp:
        for i, (c, manifest) in enumerate(members):
            src, dst = Path(c["_dir"]), tmp / MEMBERS / str(i)
            for name in [*manifest, MANIFEST]:
                (dst / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / name, dst / name)
        write_file(tmp / "config.json", json.dumps(config, indent=2).encode())
        write_file(tmp / "README.md", model_card(config).encode())
    return {**config, "_dir": str(out)}


def model_card(config: dict) -> str:
    """The ensemble's README.md."""
    lines = [f"# {config['model']}", "",
             f"An ensemble of {len(config['members'])} {config['task']} bundles made by tuneforge on {config['created']}: "
             f"the weighted mean of their {'values' if config['combine'] == 'regression' else 'probabilities'}.", "",
             "| member | model | weight | source |", "|---|---|---|---|"]
    lines += [f"| {m['path']} | {m['model']} | {w:.3f} | {m['source']} |" for m, w in zip(config["members"], config["weights"])]
    if config.get("weights_chosen"):
        lines += ["", "Weights chosen on a validation table: ```" + json.dumps(config["weights_chosen"]) + "```"]
    lines += ["", "## Use", "```", "tuneforge predict <this folder> INPUTS", "tuneforge evaluate <this folder> --data TABLE",
              "tuneforge serve <this folder>", "```", "Each members/I folder is a bundle of its own.", ""]
    return "\n".join(lines)
