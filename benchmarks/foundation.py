"""Foundation benchmark (issue 2): the design's recipe with seed-cnn, and a fine-tuned
efficientnet_lite0, on CIFAR-10 JPEG folders; test/ is only used for the final report.

    .venv/bin/python benchmarks/foundation.py [--data ../shared/datasets/cifar10] [--only seed-cnn]

Writes benchmarks/results/foundation.json and prints a Markdown table for BENCHMARKS.md.
Each run's wall time includes decoding (the image cache is cleared first: a cold start).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import tuneforge
from tuneforge.recipes import RECIPES

# Each run is a named recipe (tuneforge/recipes.py): the benchmark measures exactly what
# `tuneforge fit --recipe NAME` does. "design" is the design's Keras recipe on seed-cnn.
RUNS = {"seed-cnn": "design", "fast-cnn": "fast", "efficientnet_lite0": "balanced"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/datasets/cifar10")
    ap.add_argument("--only", nargs="*", default=list(RUNS))
    ap.add_argument("--out", default="benchmarks/results/foundation.json")
    args = ap.parse_args()
    results = []
    for name in args.only:
        cache = tempfile.mkdtemp(prefix="tf-cache-")  # cold start: nothing decoded yet
        run_dir = Path(tempfile.mkdtemp(prefix=f"tf-{name}-"))
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = tuneforge.fit(data=args.data, out=str(run_dir), cache_dir=cache, progress=False, recipe=RUNS[name])
        wall = time.perf_counter() - t0
        r = res.report
        # Same trained model, evaluated again with flip test-time augmentation (--tta).
        tta = tuneforge.evaluate(run_dir, Path(args.data) / "test", out=run_dir / "eval-tta", cache_dir=cache,
                                 progress=False, tta=True)["test"]["accuracy"]
        results.append({"run": name, "recipe": RUNS[name], "settings": RECIPES[RUNS[name]].settings, "test_accuracy": r["test"]["accuracy"], "test_accuracy_tta": tta,
                        "val_accuracy": r["val"]["accuracy"], "best_epoch": r["best_epoch"],
                        "epochs_run": r["epochs_run"], "wall_s": round(wall, 1), "decode_s": r["data"]["decode_s"],
                        "fit_s": r["fit_s"],
                        "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0],
                        "run_dir": str(run_dir)})
        print(json.dumps(results[-1]), flush=True)
        shutil.rmtree(cache, ignore_errors=True)
    doc = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(),
           "cpus": os.cpu_count(), "data": args.data, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print("| run | test acc | test acc, flip TTA | val acc | best epoch | epochs | wall | load (1-min avg) |")
    print("|---|---|---|---|---|---|---|---|")
    for x in results:
        print(f"| {x['run']} | {x['test_accuracy']:.2%} | {x['test_accuracy_tta']:.2%} | {x['val_accuracy']:.2%} | {x['best_epoch']} | {x['epochs_run']} "
              f"| {x['wall_s'] / 60:.1f} min | {x['loadavg_before']:.1f} -> {x['loadavg_after']:.1f} |")


if __name__ == "__main__":
    main()
