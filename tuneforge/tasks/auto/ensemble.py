"""The "ensemble of the best two" leaderboard row of `fit --model auto` on text: the two best
trained members on validation, combined as a `tuneforge ensemble` bundle (core/ensemble.py) whose
weights are chosen on the shared validation split only; the test split is scored, never used.
Written as RUN/members/ensemble (model/ and report.json) like any member, so the choice and
`_finish` treat it as one."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from ...core.bundle import load_bundle
from ...core.ensemble import (check_members, choose_weights, class_order, is_ensemble, verified_member, weighted_mean,
                              write_ensemble)
from ...core.metrics import classification_metrics
from ...core.report import write_report
from ...errors import ConfigError, DataError
from .portfolio import scores
from ..registry import outputs_in_order, softmax, task_for

log = logging.getLogger("tuneforge")

NAME = "ensemble"


def member_outputs(bundle: Path, table: Path, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(class probabilities, targets, classes) of a member bundle on a labelled table of the
    shared split, read as `evaluate` reads it; eager PyTorch, batches in length order."""
    model, config = load_bundle(bundle)
    task = task_for(config)
    labelled = task.labelled(table)
    graph = task.graph(model)
    items = [task.prepare(text=r["text"]) for r in labelled.rows]
    with torch.inference_mode():
        out = outputs_in_order(task, items, lambda b: graph(*[torch.from_numpy(b[n]) for n in task.input_names]).double().numpy(),
                               len(task.classes), batch_size)
    return softmax(out), np.asarray(labelled.targets), list(task.classes)


def _metrics(probs: np.ndarray, targets: np.ndarray, classes: list[str]) -> dict:
    return classification_metrics(torch.from_numpy(np.log(np.clip(probs, 1e-12, None))).float(),
                                  torch.from_numpy(targets).long(), classes)


def ensemble_row(run_dir: Path, board: list[dict], split: dict, left_s: float) -> dict | None:
    """The leaderboard row of the best two trained members' ensemble (None when fewer than two
    were trained); a row saying why when it could not be made in the time left."""
    trained = sorted((r for r in board if r["status"] == "trained" and r.get("val")),
                     key=lambda r: (r["val"].get("accuracy", -1.0), r["val"].get("macro_f1", -1.0)), reverse=True)
    if len(trained) < 2:
        return None
    pair = trained[:2]
    row = {"name": NAME, "model": f"ensemble({pair[0]['model']}+{pair[1]['model']})",
           "plan": f"{pair[0]['name']} + {pair[1]['name']}, weights chosen on val"}
    if left_s <= 0:
        return {**row, "status": "skipped", "why": "no time left in the budget"}
    started = time.perf_counter()
    dirs = [run_dir / r["run"] / "model" for r in pair]
    try:
        members = [verified_member(d) for d in dirs]
        check_members([c for c, _ in members])
        val, test = split["paths"]["val"], split["paths"].get("test")
        parts, targets, classes = [], None, None
        test_parts, test_targets = [], None
        for d in dirs:
            probs, t, names = member_outputs(d, val)
            if classes is None:
                classes, targets = names, t
            parts.append(probs[:, class_order(classes, names)])
            if test is not None and split.get("test"):
                probs, t, _ = member_outputs(d, test)
                test_targets = t if test_targets is None else test_targets
                test_parts.append(probs[:, class_order(classes, names)])
    except (ConfigError, DataError) as e:
        return {**row, "status": "failed", "why": str(e).splitlines()[0]}
    weights, info = choose_weights("classification", parts, targets)
    folder = run_dir / "members" / NAME
    write_ensemble(folder / "model", members, weights, {"weights_chosen": {"on": str(Path(val).resolve()), **info}})
    metrics = {"val": _metrics(weighted_mean(parts, weights), targets, classes),
               "test": _metrics(weighted_mean(test_parts, weights), test_targets, classes) if test_parts else None}
    first = members[0][0]
    report = {"task": first.get("task"), "classes": classes, "model": row["model"], "data": first.get("data"),
              "val": metrics["val"], **({"test": metrics["test"]} if metrics["test"] else {}),
              "ensemble": {"members": [r["name"] for r in pair], "weights": weights, **info}}
    write_report(folder, report, None, None)
    log.info("auto: ensemble of %s and %s, weights %s chosen on val", pair[0]["name"], pair[1]["name"], weights)
    return {**row, "status": "trained", "wall_s": round(time.perf_counter() - started, 2),
            "val": scores(metrics["val"]), "test": scores(metrics["test"]), "weights": weights,
            "members": [r["name"] for r in pair], "run": f"members/{NAME}"}


def run_module(bundle: Path) -> torch.nn.Module:
    """The module of a run's bundle; for an ensemble, its first (best on validation) member's."""
    return load_bundle(Path(bundle) / "members" / "0" if is_ensemble(bundle) else bundle)[0]
