"""Would averaging fitted bundles beat each of them? Scores each bundle and the plain average
of their class probabilities (equal weights: nothing is tuned, so the test table chooses
nothing) on one labelled text table. A measurement for the next step of issue 20 (banking77),
not a tuneforge feature yet.

    python benchmarks/ensemble_check.py --data ../shared/datasets/banking77/test.csv \
        --label-column category runs/banking77 runs/banking77-8ep
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from tuneforge.deploy.predictor import Predictor


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (or bundles) of text classifiers with the same classes")
    ap.add_argument("--data", required=True, help="a labelled CSV table")
    ap.add_argument("--text-column", default="text")
    ap.add_argument("--label-column", default="label")
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.data, encoding="utf-8")))
    texts, truth = [r[args.text_column] for r in rows], np.array([r[args.label_column] for r in rows])
    classes, probs, result = None, [], {"data": args.data, "rows": len(rows), "members": {}}
    for run in args.runs:
        bundle = Path(run) / "model" if (Path(run) / "model").is_dir() else Path(run)
        p, t0 = Predictor(bundle), time.perf_counter()
        prob = softmax(p.outputs([{"text": s} for s in texts]).astype(np.float64))
        names = np.array(p.classes)
        if classes is not None and not (names == classes).all():
            raise SystemExit(f"{run}: its classes differ from {args.runs[0]}'s")
        classes = names
        probs.append(prob)
        result["members"][str(run)] = {"accuracy": float((names[prob.argmax(1)] == truth).mean()),
                                       "seconds": round(time.perf_counter() - t0, 1)}
    avg = np.mean(probs, axis=0)
    result["average_accuracy"] = float((classes[avg.argmax(1)] == truth).mean())
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
