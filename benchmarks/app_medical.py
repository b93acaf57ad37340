"""Applications: medical (issue 20). PneumoniaMNIST from MedMNIST's .npz as it is distributed,
EfficientNet-Lite0 (ImageNet) fine-tuned at 64 px, and a decision threshold chosen on validation for
95% sensitivity; the command of examples/medical/README.md. Target: >= 90% test accuracy (MedMNIST
v2's best benchmark: 88.4%). Run through benchmarks/applications.py --only medical."""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys

TARGET = 0.90


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("medical")
    g.add_argument("--medical-epochs", type=int, default=10)
    g.add_argument("--medical-image-size", type=int, default=64)
    g.add_argument("--medical-model", default="efficientnet_lite0")
    g.add_argument("--medical-recall", type=float, default=0.95, help="the stated sensitivity (--target-recall)")


def command(args: argparse.Namespace) -> list[str]:
    return ["fit", "--data", str(args.datasets / "medmnist" / "pneumoniamnist.npz"), "--label-names", "normal,pneumonia",
            "--model", args.medical_model, "--image-size", str(args.medical_image_size), "--epochs", str(args.medical_epochs),
            "--target-recall", f"pneumonia={args.medical_recall:g}", "--no-progress",
            "--out", str(args.out / "medical"), "--overwrite"]


def summarise(report: dict) -> dict:
    """The numbers of examples/medical/README.md from a run's report.json."""
    d, test = report["decision"], report["test"]
    return {"test_accuracy": test["accuracy"], "test_accuracy_at_threshold": d["test"]["accuracy"], "val_accuracy": report["val"]["accuracy"],
            "test_recall": {c: v["recall"] for c, v in test["per_class"].items()},
            "threshold": d["threshold"], "target_recall": d["target_recall"],
            "at_threshold": {s: {k: d[s][k] for k in ("sensitivity", "specificity", "accuracy")} for s in ("val", "test")},
            "baseline_test_accuracy": (report.get("baseline") or {}).get("test", {}).get("accuracy"),
            "best_epoch": report.get("best_epoch"), "fit_s": report.get("fit_s"),
            "target": TARGET, "met": test["accuracy"] >= TARGET,
            # what predict/serve answer: the threshold's decisions
            "met_at_threshold": d["test"]["accuracy"] >= TARGET}


def run(args: argparse.Namespace) -> dict:
    cmd = command(args)
    reused = args.reuse and (args.out / "medical" / "report.json").is_file()
    if not reused:
        print("$ tuneforge " + shlex.join(cmd), flush=True)
        subprocess.run([sys.executable, "-m", "tuneforge", *cmd], check=True)
    report = json.loads((args.out / "medical" / "report.json").read_text())
    return {"command": "tuneforge " + shlex.join(cmd[:-1]), "dataset": "PneumoniaMNIST (4708/524/624, 28x28 grey)",
            "reused_run": str((args.out / "medical").resolve()) if reused else None, **summarise(report)}
