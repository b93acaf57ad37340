"""Defaults on small data (issue 16, problem 2): few CIFAR-10 images per class, one model, three
fits side by side on the same split:

    python benchmarks/small_data.py [--per-class 40] [--classes 10] [--test-per-class 100]
                                    [--epochs 3] [--model efficientnet_lite0] [--skip-old]

  (i)   the old defaults: the model's native size (224 px), full fine-tune, AdamW 1e-3, batch 64,
        flip + crop (pinned by flags, since the defaults changed);
  (ii)  the defaults now (no flags): the size from the images (32 px), and under 100 images per
        class the head on the frozen backbone's cached features (tuneforge/tasks/image/fit.py);
  (iii) `--freeze backbone` (a head trained from noise by the engine, other settings at their defaults);
  (iv)  the converged linear probe: logistic regression on the same model's frozen features at
        the same size, on the very train images of (ii)'s split.json (tuneforge/core/probe.py),
        the bar the defaults must reach.

The data is the first N train images per class (and the first M test images) of
../shared/datasets/cifar10, symlinked as tests/conftest.py's `cifar_subset` does. Prints each
command and a table, and appends a JSON line (commands, date, nproc, CPU, `uptime` load,
accuracies, wall times) to benchmarks/results/small_data.jsonl. --skip-old leaves out (i),
which is by far the slowest (224 px on a CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "benchmarks" / "results" / "small_data.jsonl"
OUT = Path(os.environ.get("TUNEFORGE_BENCH_OUT", "/tmp/tuneforge-bench")) / "small_data"
TF = [sys.executable, "-m", "tuneforge"]


def subset(dst: Path, classes: int | None, per_class: int, test_per_class: int | None) -> Path:
    """The first `per_class` train and `test_per_class` test images (None: all) of the first
    `classes` CIFAR-10 classes (sorted; None: all), symlinked. benchmarks/search.py uses it too."""
    src = DATASETS / "cifar10"
    if not src.is_dir():
        sys.exit(f"missing {src} (set TUNEFORGE_DATASETS)")
    names = sorted(p.name for p in (src / "train").iterdir())[:classes]
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c in names:
            (dst / split / c).mkdir(parents=True, exist_ok=True)
            for f in sorted((src / split / c).iterdir())[:n]:
                link = dst / split / c / f.name
                if not link.exists():
                    os.symlink(f, link)
    return dst


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fit(name: str, data: Path, args: argparse.Namespace, flags: list[str]) -> dict:
    out = OUT / name
    argv = ["fit", "--data", str(data), "--model", args.model, "--epochs", str(args.epochs), "--out", str(out),
            "--overwrite", "--no-progress", "--no-tensorboard", "--cache-dir", str(OUT / "cache"), *flags]
    print("$ tuneforge " + " ".join(shlex.quote(a) for a in argv), flush=True)
    t0 = time.perf_counter()
    subprocess.run(TF + argv, cwd=ROOT, check=True)
    wall = round(time.perf_counter() - t0, 1)
    report = json.loads((out / "report.json").read_text())
    cfg = report["config"]
    return {"name": name, "command": "tuneforge " + " ".join(map(shlex.quote, argv)), "wall_s": wall,
            "test_accuracy": round(report["test"]["accuracy"], 4), "val_accuracy": round(report["val"]["accuracy"], 4),
            "image_size": report["data"]["image_size"],
            "settings": {k: cfg[k] for k in ("freeze", "lr", "augment", "batch_size")}}


def probe(data: Path, run: Path, args: argparse.Namespace) -> dict:
    """(iv): the converged linear probe on the split and image size the new-defaults run used."""
    from tuneforge.core.data.images import load_image_folder
    from tuneforge.core.probe import linear_probe, probe_features

    t0 = time.perf_counter()
    split, report = json.loads((run / "split.json").read_text()), json.loads((run / "report.json").read_text())
    classes, size = split["classes"], report["data"]["image_size"]
    sets = {}
    for name in ("train", "val", "test"):
        root = data / ("test" if name == "test" else "train")
        items = None if name == "test" else [(root / r, classes.index(Path(r).parts[0])) for r in split[name]]
        sets[name] = load_image_folder(root, size, classes=classes, items=items, cache_dir=OUT / "cache")
    feats = probe_features(args.model, size, {k: s.images for k, s in sets.items()})
    acc = linear_probe((feats["train"], sets["train"].labels.numpy()),
                       {k: (feats[k], sets[k].labels.numpy()) for k in ("val", "test")})
    return {"name": "linear-probe", "command": "tuneforge.core.probe.linear_probe (logistic regression, C=1)",
            "wall_s": round(time.perf_counter() - t0, 1), "test_accuracy": round(acc["test"], 4),
            "val_accuracy": round(acc["val"], 4), "image_size": size,
            "settings": {"freeze": "backbone", "lr": "lbfgs", "augment": "none", "batch_size": len(sets["train"])}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--skip-old", action="store_true", help="leave out (i), the old defaults at the native size")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from tuneforge.core.models import model_spec

    data = subset(OUT / f"cifar{args.classes}-{args.per_class}", args.classes, args.per_class, args.test_per_class)
    native = model_spec(args.model).default_image_size
    started, load_before = datetime.now(timezone.utc).isoformat(timespec="seconds"), load()
    runs = []
    if not args.skip_old:
        runs.append(fit("old-defaults", data, args, ["--image-size", str(native), "--freeze", "none"]))
    runs.append(fit("new-defaults", data, args, []))
    runs.append(fit("freeze-backbone", data, args, ["--freeze", "backbone"]))
    runs.append(probe(data, OUT / "new-defaults", args))
    print(f"\n{args.classes} classes x {args.per_class} train images (test {args.test_per_class}/class), "
          f"{args.model}, {args.epochs} epochs")
    print(f"{'run':14s} {'size':>5s} {'freeze':>9s} {'lr':>7s} {'batch':>5s} {'test':>7s} {'val':>7s} {'wall':>7s}")
    for r in runs:
        s = r["settings"]
        print(f"{r['name']:14s} {r['image_size']:5d} {s['freeze']:>9s} {str(s['lr'] or 1e-3):>7s} {s['batch_size']:5d} "
              f"{r['test_accuracy']:7.2%} {r['val_accuracy']:7.2%} {r['wall_s']:6.1f}s")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps({"date": started, "nproc": os.cpu_count(), "cpu": cpu_name(), "load_before": load_before,
                            "load_after": load(), "classes": args.classes, "per_class": args.per_class,
                            "test_per_class": args.test_per_class, "epochs": args.epochs, "model": args.model,
                            "runs": runs}) + "\n")


if __name__ == "__main__":
    main()
