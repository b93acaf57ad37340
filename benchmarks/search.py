"""`tuneforge search` benchmarks (issue 18), one command each; each prints a markdown row and appends a
JSON line (commands, date, CPU, `uptime` load, numbers) to benchmarks/results/search.jsonl.

    python benchmarks/search.py --cifar [--minutes 60] [--per-class 1000]
        A search of at most --minutes over fast-cnn settings (lr, weight decay, batch size, crop,
        label smoothing) around `--recipe fast` on a 10,000-image CIFAR-10 train subset (validation
        carved from it by the fit; test/ untouched, the full 10,000 test images), then the best
        configuration trained on the whole subset and tested beside `--recipe fast` with the same epochs.
    python benchmarks/search.py --pruning [--trials 12] [--per-class 100] [--epochs 4] [--sampler tpe|random]
        The same kind of study with the median pruner and without it, on the same seeds: epochs trained
        over all trials, and the best validation accuracy each reached.
    python benchmarks/search.py --sst2 [--minutes 30] [--limit-per-class 5000]
        Frozen minilm on SST-2: a search over the head's settings (lr, weight decay, dropout, pooling,
        batch size) against the default head, both tested on sentiment-dev.

Data: ../shared/datasets (TUNEFORGE_DATASETS), the first N images per class symlinked. Working folders
under $TUNEFORGE_BENCH_OUT (default /tmp/tuneforge-bench)/search.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

from small_data import cpu_name, load, subset  # the CIFAR-10 subset as symlinks (this folder is on sys.path when run)

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "benchmarks" / "results" / "search.jsonl"
OUT = Path(os.environ.get("TUNEFORGE_BENCH_OUT", "/tmp/tuneforge-bench")) / "search"
TF = [sys.executable, "-m", "tuneforge"]

# The fast recipe's settings a search may move, around the recipe's own values (tuneforge/recipes.py).
CIFAR_SPACE = {
    "lr": {"log_uniform": [0.05, 0.5]},
    "weight_decay": {"log_uniform": [1.0e-4, 2.0e-3]},
    "batch_size": {"choice": [128, 256, 512]},
    "augment": {"choice": ["flip", "flip,crop=2", "flip,crop=4"]},
    "label_smoothing": {"float": [0.0, 0.3], "step": 0.05},
}
SST2_SPACE = {
    "lr": {"log_uniform": [3.0e-4, 3.0e-2]},
    "weight_decay": {"log_uniform": [1.0e-4, 0.1]},
    "dropout": {"choice": [0.0, 0.1, 0.3]},
    "pooling": {"choice": ["mean", "cls", "max"]},
    "batch_size": {"choice": [64, 256]},
}


def tf(argv: list[str]) -> tuple[float, str]:
    """Run `tuneforge ARGV`; (seconds, its last stdout line)."""
    print("$ tuneforge " + shlex.join(argv), flush=True)
    t0 = time.perf_counter()
    r = subprocess.run([*TF, *argv], cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0, r.stdout.strip().splitlines()[-1]


def search(name: str, fit: dict, space: dict, flags: list[str]) -> tuple[dict, list[str]]:
    """A study in OUT/NAME from scratch; its report.json and the commands run."""
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    config = OUT / f"{name}.yaml"
    config.write_text(yaml.safe_dump({"fit": fit, "space": space}, sort_keys=False))
    argv = ["search", "--config", str(config), "--out", str(out), *flags]
    tf(argv)
    return json.loads((out / "report.json").read_text()), ["tuneforge " + shlex.join(argv)]


def fit(name: str, settings: dict) -> tuple[dict, str]:
    out = OUT / name
    argv = ["fit", *[w for k, v in settings.items() for w in _flag(k, v)], "--out", str(out), "--overwrite"]
    wall, _ = tf(argv)
    report = json.loads((out / "report.json").read_text())
    report["bench_wall_s"] = round(wall, 1)
    return report, "tuneforge " + shlex.join(argv)


def _flag(key: str, value) -> list[str]:
    name = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return [name if value else "--no-" + name[2:]]
    return [name, str(value)]


def record(name: str, commands: list[str], row: str, **numbers) -> None:
    entry = {"name": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "nproc": os.cpu_count(),
             "cpu": cpu_name(), "load": load(), "commands": commands, **numbers}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    print(row + f" | load {entry['load']} |")


def cifar(args: argparse.Namespace) -> None:
    data = subset(OUT / f"cifar-{args.per_class}", None, args.per_class, None)
    base = {"data": str(data), "recipe": "fast", "progress": False, "tensorboard": False, "baseline": False}
    load0 = load()
    study, commands = search("cifar", {**base, "val_fraction": 0.1}, CIFAR_SPACE,
                             ["--max-minutes", str(args.minutes), "--seed", str(args.seed)])
    best = study["best"]
    tuned, c1 = fit("cifar-best", {**base, **best["params"]})
    fast, c2 = fit("cifar-fast", base)
    t, f = tuned["test"]["accuracy"], fast["test"]["accuracy"]
    record("cifar", [*commands, c1, c2],
           f"| CIFAR-10 {10 * args.per_class} train, search {args.minutes} min ({study['counts']['complete']} complete, "
           f"{study['counts']['pruned']} pruned) | best {best['params']} | test {100 * t:.2f}% vs --recipe fast "
           f"{100 * f:.2f}% ({100 * (t - f):+.2f}) | start load {load0}",
           minutes=args.minutes, best=best, tuned_test=t, fast_test=f, counts=study["counts"],
           epochs_trained=study["epochs_trained"], search_wall_s=study["wall_s"])


def pruning(args: argparse.Namespace) -> None:
    data = subset(OUT / f"cifar-{args.per_class}-test100", None, args.per_class, 100)
    fit_ = {"data": str(data), "recipe": "fast", "epochs": args.epochs, "val_fraction": 0.2, "progress": False,
            "tensorboard": False, "baseline": False, "patience": 0}
    results, commands = {}, []
    for pruner in ("median", "none"):
        study, c = search(f"pruning-{pruner}", fit_, CIFAR_SPACE,
                          ["--trials", str(args.trials), "--pruner", pruner, "--seed", str(args.seed),
                           "--sampler", args.sampler])
        commands += c
        results[pruner] = {"epochs_trained": study["epochs_trained"], "best_val": study["best"]["value"],
                           "counts": study["counts"], "wall_s": study["wall_s"]}
    m, n = results["median"], results["none"]
    record("pruning", commands,
           f"| pruning, {args.trials} trials x {args.epochs} epochs, CIFAR-10 {10 * args.per_class} train | median: "
           f"{m['epochs_trained']} epochs, best val {100 * m['best_val']:.2f}%, {m['wall_s']:.0f} s | none: "
           f"{n['epochs_trained']} epochs, best val {100 * n['best_val']:.2f}%, {n['wall_s']:.0f} s | "
           f"epochs ratio {m['epochs_trained'] / n['epochs_trained']:.2f}",
           trials=args.trials, epochs=args.epochs, per_class=args.per_class, **results)


def sst2(args: argparse.Namespace) -> None:
    sst = DATASETS / "sst2"
    base = {"data": str(sst / "sentiment-train"), "test": str(sst / "sentiment-dev"), "columns": "text,label",
            "model": "minilm", "freeze": "backbone", "limit_per_class": args.limit_per_class, "max_length": 64,
            "val_fraction": 0.05, "epochs": 20, "progress": False, "tensorboard": False, "baseline": False}
    default, c1 = fit("sst2-default", base)
    study, commands = search("sst2", base, SST2_SPACE, ["--max-minutes", str(args.minutes), "--seed", str(args.seed)])
    best_trial = json.loads((Path(study["best"]["run_dir"]) / "report.json").read_text())
    d, b = default["test"]["accuracy"], best_trial["test"]["accuracy"]
    dv, bv = default["val"]["accuracy"], best_trial["val"]["accuracy"]
    record("sst2", [c1, *commands],
           f"| SST-2 frozen minilm head, {2 * args.limit_per_class} train, search {args.minutes} min | best "
           f"{study['best']['params']} | dev {100 * b:.2f}% (val {100 * bv:.2f}%) vs default {100 * d:.2f}% "
           f"(val {100 * dv:.2f}%), {100 * (b - d):+.2f}",
           default_dev=d, best_dev=b, default_val=dv, best_val=bv, best=study["best"], counts=study["counts"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--cifar", action="store_true")
    which.add_argument("--pruning", action="store_true")
    which.add_argument("--sst2", action="store_true")
    p.add_argument("--minutes", type=float, default=None, help="search budget (--cifar: 60, --sst2: 30)")
    p.add_argument("--per-class", type=int, default=None, help="CIFAR-10 train images per class (--cifar 1000, --pruning 100)")
    p.add_argument("--trials", type=int, default=12, help="--pruning: trials per study")
    p.add_argument("--epochs", type=int, default=4, help="--pruning: epochs per trial")
    p.add_argument("--limit-per-class", type=int, default=5000, help="--sst2: training sentences per class")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed")
    p.add_argument("--sampler", default="tpe", help="--pruning: the sampler of both studies (random: both try the "
                   "same settings, so the comparison is the pruner's alone)")
    args = p.parse_args()
    if args.cifar:
        args.minutes, args.per_class = args.minutes or 60, args.per_class or 1000
        cifar(args)
    elif args.pruning:
        args.per_class = args.per_class or 100
        pruning(args)
    else:
        args.minutes = args.minutes or 30
        sst2(args)


if __name__ == "__main__":
    main()
