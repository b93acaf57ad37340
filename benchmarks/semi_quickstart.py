"""The README's semi-supervised quick start, run literally as a new user would, beside its own
labelled-only run (issue 16: "the semi-supervised one beats its own labelled-only run").

    python benchmarks/semi_quickstart.py [--path fast-cnn|lite0] [--unlabeled 1000] [--epochs 50]
                                         [--threshold auto] [--keep DIR]

Builds, in a temporary folder, symlinks into ../shared/datasets/cifar10 (seeded picks):
    photos/train/<class>/   25 labelled train images per class (the README's "25 a class")
    photos/test/<class>/    100 test images per class (1,000: an accuracy known to about +-1.5 points)
    unlabeled/              N other train images, one flat folder (labels dropped)
then runs, from that folder, via the `tuneforge` CLI:
    fast-cnn  tuneforge pretrain --data unlabeled/ --model fast-cnn --method simclr --epochs 20 --probe photos/ --out runs/ssl
              tuneforge fit --data photos --model fast-cnn --init runs/ssl --unlabeled unlabeled/ --semi fixmatch
                  --epochs E [--semi-threshold T] --out runs/semi
    lite0     tuneforge fit --data photos --model efficientnet_lite0 --image-size 64 --freeze backbone --augment flip
                  --unlabeled unlabeled/ --semi fixmatch --epochs E [--semi-threshold T] --out runs/semi
and the same fit without `--unlabeled/--semi` (runs/labelled). Prints a table (test accuracy,
pseudo-labels, wall time) and appends a JSON line (commands, date, nproc, CPU, load) to
benchmarks/results/semi_quickstart.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10"
if not CIFAR.is_dir():
    CIFAR = Path("/work/shared/datasets/cifar10")


def build_data(where: Path, labelled: int, test: int, unlabeled: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    classes = sorted(p.name for p in (CIFAR / "train").iterdir() if p.is_dir())
    rest = []
    for c in classes:
        train = sorted((CIFAR / "train" / c).glob("*.jpg"))
        rng.shuffle(train)
        for split, files in (("train", train[:labelled]),
                             ("test", rng.sample(sorted((CIFAR / "test" / c).glob("*.jpg")), test))):
            folder = where / "photos" / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for f in files:
                (folder / f.name).symlink_to(f)
        rest += [(c, f) for f in train[labelled:]]
    (where / "unlabeled").mkdir()
    for c, f in rng.sample(rest, unlabeled):
        (where / "unlabeled" / f"{c}_{f.name}").symlink_to(f)


def tuneforge(args: list[str], cwd: Path) -> float:
    cmd = [sys.executable, "-m", "tuneforge", *args, "--no-progress"]
    print("$ tuneforge " + shlex.join(args), flush=True)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = (out.stdout + out.stderr).strip().splitlines()
    print("\n".join("    " + line for line in lines if "WARNING" in line or "batch size" in line or "kNN" in line), flush=True)
    if out.returncode:
        print("\n".join(lines[-30:]))
        raise SystemExit(f"failed ({out.returncode}): tuneforge {shlex.join(args)}")
    print(f"    ({wall:.0f} s)", flush=True)
    return wall


def summary(run: Path) -> dict:
    r = json.loads((run / "report.json").read_text())
    semi = r.get("semi") or {}
    return {"test_accuracy": r["test"]["accuracy"], "epochs_run": r["epochs_run"],
            "pseudo_labels": sum((semi.get("pseudo_labels_per_class") or {}).values()) if semi else None,
            "pseudo_label_rate_last_epoch": semi.get("pseudo_label_rate_last_epoch"),
            "threshold_final": semi.get("threshold_final"), "warnings": r.get("warnings", [])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--path", choices=("fast-cnn", "lite0"), default="fast-cnn")
    p.add_argument("--unlabeled", type=int, default=1000, help="unlabeled images")
    p.add_argument("--epochs", type=int, default=50, help="fit --epochs (both runs)")
    p.add_argument("--threshold", default=None, help="--semi-threshold (default: the fit's default)")
    p.add_argument("--semi-flags", default="", help="more flags for the semi-supervised fit only")
    p.add_argument("--ssl", default=None, help="fast-cnn: copy this pretrain run as runs/ssl instead of running step 1 "
                                                "(it must have been made on the same data: same --unlabeled, seed 0)")
    p.add_argument("--keep", default=None, help="work in this folder (kept) instead of a temporary one")
    a = p.parse_args()
    work = Path(a.keep or tempfile.mkdtemp(prefix="semi-quickstart-"))
    work.mkdir(parents=True, exist_ok=True)
    build_data(work, 25, 100, a.unlabeled)
    walls, cmds = {}, {}
    if a.path == "fast-cnn":
        cmds["pretrain"] = ["pretrain", "--data", "unlabeled/", "--model", "fast-cnn", "--method", "simclr",
                            "--epochs", "20", "--probe", "photos/", "--out", "runs/ssl"]
        model = ["--model", "fast-cnn", "--init", "runs/ssl"]
    else:
        # --augment flip: with crop (the default) the frozen features cannot be cached
        model = ["--model", "efficientnet_lite0", "--image-size", "64", "--freeze", "backbone", "--augment", "flip"]
    semi = ["--unlabeled", "unlabeled/", "--semi", "fixmatch", "--epochs", str(a.epochs)]
    semi += ["--semi-threshold", a.threshold] if a.threshold else []
    cmds["semi"] = ["fit", "--data", "photos", *model, *semi, *shlex.split(a.semi_flags), "--out", "runs/semi"]
    cmds["labelled"] = ["fit", "--data", "photos", *model, "--epochs", str(a.epochs), "--out", "runs/labelled"]
    if a.ssl:
        shutil.copytree(a.ssl, work / "runs" / "ssl")
        walls["pretrain"] = json.loads((work / "runs" / "ssl" / "report.json").read_text())["wall_s"]
    for name, args in cmds.items():
        if name in walls:
            continue
        walls[name] = tuneforge(args, work)
    res = {k: summary(work / "runs" / k) for k in ("semi", "labelled")}
    if "pretrain" in cmds:
        pre = json.loads((work / "runs" / "ssl" / "report.json").read_text())
        res["pretrain"] = {"knn_before": pre["probe"]["before"], "knn_after": pre["probe"]["after"],
                           "batch_size": pre["config"]["batch_size"], "warnings": pre.get("warnings", [])}
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "?")
    row = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "nproc": os.cpu_count(), "cpu": cpu,
           "loadavg_end": Path("/proc/loadavg").read_text().split()[:3], "path": a.path, "unlabeled": a.unlabeled,
           "commands": {k: "tuneforge " + shlex.join(v) for k, v in cmds.items()}, "wall_s": walls, "results": res}
    print(f"\n| run | test (1,000 images) | pseudo-labels | final auto threshold | wall |\n|---|---|---|---|---|")
    for k in ("semi", "labelled"):
        r = res[k]
        print(f"| {k} | {100 * r['test_accuracy']:.1f}% | {r['pseudo_labels']} | {r['threshold_final']} | {walls[k]:.0f} s |")
    print(f"difference: {100 * (res['semi']['test_accuracy'] - res['labelled']['test_accuracy']):+.1f} points; "
          f"loadavg {row['loadavg_end']}; {work}")
    out = ROOT / "benchmarks" / "results" / "semi_quickstart.jsonl"
    out.parent.mkdir(exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
