"""Applications: banking77 (issue 20). 77 customer-service intents: the TF-IDF + linear SVM
baseline, two full fine-tunes of all-MiniLM-L6-v2 differing only in --seed (the commands of
examples/customer_service/README.md), and their equal-weight ensemble (`tuneforge ensemble`:
nothing tuned, so the test table chooses nothing), evaluated on the test table. The ensemble's
test accuracy is the figure; each member's beside it. Target: >= 93% test accuracy (the
dual-encoder paper's 93.4%; TF-IDF + SVM 89.4%). Run through benchmarks/applications.py --only
banking77."""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

TARGET = 0.93


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("banking77")
    g.add_argument("--banking77-epochs", type=int, default=5)
    g.add_argument("--banking77-lr", default="1e-4")


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    data = args.datasets / "banking77"
    common = ["fit", "--data", str(data / "train.csv"), "--test", str(data / "test.csv"), "--text-column", "text",
              "--label-column", "category", "--no-progress", "--overwrite"]
    minilm = common + ["--model", "minilm", "--epochs", str(args.banking77_epochs), "--max-length", "48",
                       "--batch-size", "32", "--lr", str(args.banking77_lr), "--warmup-epochs", "1"]
    ensemble = args.out / "banking77-ensemble"
    return {"tfidf": common + ["--model", "tfidf", "--out", str(args.out / "banking77-tfidf")],
            "minilm": minilm + ["--out", str(args.out / "banking77")],
            "minilm_seed1": minilm + ["--seed", "1", "--out", str(args.out / "banking77-seed1")],
            "ensemble": ["ensemble", str(args.out / "banking77"), str(args.out / "banking77-seed1"), "--out", str(ensemble)],
            "ensemble_test": ["evaluate", str(ensemble), "--data", str(data / "test.csv"), "--out",
                              str(args.out / "banking77-ensemble-eval")]}


def summarise(report: dict) -> dict:
    """Test and val accuracy of a fit, and of the TF-IDF baseline trained beside it."""
    b = report.get("baseline") or {}
    return {"test_accuracy": report["test"]["accuracy"], "val_accuracy": report["val"]["accuracy"],
            "test_macro_f1": report["test"]["macro_f1"], "fit_s": report.get("fit_s"), "best_epoch": report.get("best_epoch"),
            "baseline_test_accuracy": (b.get("test") or {}).get("accuracy")}


def _tuneforge(cmd: list[str]) -> None:
    print("$ tuneforge " + shlex.join(cmd), flush=True)
    subprocess.run([sys.executable, "-m", "tuneforge", *cmd], check=True)


def run(args: argparse.Namespace) -> dict:
    out = {"dataset": "banking77 (10,003 train of which 10% val, 3,080 test, 77 intents)", "commands": {}}
    cmds = commands(args)
    fits = [name for name, cmd in cmds.items() if cmd[0] == "fit"]
    for name in fits:
        cmd = cmds[name]
        folder = Path(cmd[cmd.index("--out") + 1])
        reused = args.reuse and (folder / "report.json").is_file()
        if not reused:
            _tuneforge(cmd)
        out["commands"][name] = "tuneforge " + shlex.join(cmd)
        out[name] = {**summarise(json.loads((folder / "report.json").read_text())),
                     "reused_run": str(folder.resolve()) if reused else None}
    # the ensemble of the two fine-tunes: rebuilt and evaluated unless --reuse finds an evaluation
    # newer than both members' reports
    evaluation = Path(cmds["ensemble_test"][-1]) / "report.json"
    members = [Path(cmds[n][cmds[n].index("--out") + 1]) / "report.json" for n in ("minilm", "minilm_seed1")]
    reused = args.reuse and evaluation.is_file() and all(evaluation.stat().st_mtime > m.stat().st_mtime for m in members)
    for name in ("ensemble", "ensemble_test"):
        if not reused:
            _tuneforge(cmds[name])
        out["commands"][name] = "tuneforge " + shlex.join(cmds[name])
    test = json.loads(evaluation.read_text())["test"]
    out["ensemble"] = {"test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"], "weights": "equal",
                       "reused_evaluation": str(evaluation.resolve()) if reused else None}
    out["test_accuracy"] = out["ensemble"]["test_accuracy"]
    out["members_test_accuracy"] = [out["minilm"]["test_accuracy"], out["minilm_seed1"]["test_accuracy"]]
    out["target"], out["met"] = TARGET, out["test_accuracy"] >= TARGET
    return out
