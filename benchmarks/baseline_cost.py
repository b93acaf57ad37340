"""What the baseline in every report adds to a fit (core/baseline.py): the baseline of

  sst2:    `tuneforge fit --data sst2/ --columns text,label --model minilm --freeze backbone`
           (the text quick start's default: frozen minilm), baseline TF-IDF + linear SVM;
  cifar10: `tuneforge fit --data cifar10/ --recipe fast` (fast-cnn from scratch, 32 px),
           baseline the linear probe of the packaged efficientnet_lite0 (one forward pass over at
           most 200 train images per class and 2,000 val / test images);

trained by exactly the code the fit runs (tasks/*/fit.py `train_baseline`) on the fit's own split,
without the model's training (which does not change the baseline's cost). Prints and appends a
JSON line (date, nproc, `uptime` load, seconds, scores) to benchmarks/results/baseline_cost.jsonl.

    python benchmarks/baseline_cost.py [--only sst2|cifar10] [--limit-per-class N]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from tuneforge.config import FitConfig, build, with_recipe
from tuneforge.core.models import create_model
from tuneforge.core.run import setup

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "benchmarks" / "results" / "baseline_cost.jsonl"


def sst2(run_dir: Path, limit: int | None) -> dict:
    from tuneforge.tasks.text.fit import load_splits, train_baseline

    cfg = build(FitConfig, {"data": str(DATASETS / "sst2"), "columns": "text,label", "model": "minilm",
                            "freeze": "backbone", "limit_per_class": limit}).validate()
    t0 = time.perf_counter()
    splits, _ = load_splits(cfg, run_dir)
    load_s = time.perf_counter() - t0
    b = train_baseline(cfg, splits, False, None)
    return {"split": {n: len(s) for n, s in splits.items()}, "load_s": round(load_s, 1), "baseline": b.__dict__}


def cifar10(run_dir: Path, limit: int | None) -> dict:
    from tuneforge.tasks.image.fit import load_splits, resolve, resolve_splits, train_baseline

    cfg = build(FitConfig, with_recipe({"data": str(DATASETS / "cifar10"), "recipe": "fast", "limit_per_class": limit}))
    cfg.validate()
    resolve(cfg)
    t0 = time.perf_counter()
    train, val, test = load_splits(cfg, cfg.image_size, run_dir, *resolve_splits(cfg))
    load_s = time.perf_counter() - t0
    splits = {n: s for n, s in (("train", train), ("val", val), ("test", test)) if s is not None}
    model = create_model(cfg.model, len(train.classes), cfg.image_size, cfg.pretrained)
    b = train_baseline(cfg, model, splits, {}, cached=False)
    return {"split": {n: len(s) for n, s in splits.items()}, "image_size": cfg.image_size, "decode_s": round(load_s, 1),
            "baseline": b.__dict__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("sst2", "cifar10"))
    ap.add_argument("--limit-per-class", type=int, default=None, help="a slice of the training data (seeded)")
    args = ap.parse_args()
    setup(0)
    for name, run in (("sst2", sst2), ("cifar10", cifar10)):
        if args.only and args.only != name:
            continue
        load_before = os.getloadavg()
        with tempfile.TemporaryDirectory() as d:
            out = run(Path(d), args.limit_per_class)
        row = {"bench": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "nproc": os.cpu_count(),
               "threads": torch.get_num_threads(), "load_before": [round(x, 2) for x in load_before],
               "load_after": [round(x, 2) for x in os.getloadavg()], "limit_per_class": args.limit_per_class, **out}
        b = row["baseline"]
        print(f"{name}: baseline {b['description']}: {b['seconds']} s, val {b['val']}, test {b['test']} "
              f"(load {row['load_before'][0]} -> {row['load_after'][0]})")
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with open(RESULTS, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
