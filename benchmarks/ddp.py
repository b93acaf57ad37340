"""Throughput of data-parallel training: the same fit in 1 process and through `tuneforge fit
--nproc N` (N processes, each 1/N of the cores and its shard of every epoch), alternating, on real
CIFAR-10 photos. Reports the training images/s of each epoch after the first (the engine's own
`images_per_s`, summed over the processes), the wall time of the whole command and the load
average before and after each run.

    .venv/bin/python benchmarks/ddp.py [--nproc 2] [--per-class 300] [--epochs 3] [--rounds 2]
        [--model fast-cnn] [--image-size 32] [--batch-size 64] [--out benchmarks/results/ddp.json]

The code measured is this checkout's (PYTHONPATH). Each run is a fresh `python -m tuneforge fit`
process tree, so start-up (imports, decoding from the cache the first run fills, the process
group's rendezvous) is in the wall time and not in images/s.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def subset(dst: Path, per_class: int) -> Path:
    """The first `per_class` CIFAR-10 train photos of each class (symlinks) as dst/train/<class>/."""
    for c in CLASSES:
        (dst / "train" / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((DATASETS / "cifar10" / "train" / c).iterdir())[:per_class]:
            (dst / "train" / c / f.name).symlink_to(f)
    return dst


def run(data: Path, out: Path, nproc: int, args: argparse.Namespace, env: dict) -> dict:
    cmd = [sys.executable, "-m", "tuneforge", "fit", "--data", str(data), "--model", args.model, "--image-size",
           str(args.image_size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--out", str(out),
           "--no-baseline", "--no-tensorboard", "--no-progress", "--overwrite", "--patience", "0"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)}: exit {done.returncode}\n{done.stderr[-3000:]}")
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())
    return {"nproc": nproc, "wall_s": round(wall, 1), "images_per_s": [round(h["images_per_s"], 1) for h in history[1:]],
            "val_accuracy": report["val"]["accuracy"], "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--per-class", type=int, default=300)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--model", default="fast-cnn")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ddp.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = subset(tmp / "data", args.per_class)
        env = dict(os.environ, PYTHONPATH=str(ROOT), TUNEFORGE_CACHE=str(tmp / "cache"))
        rows = []
        for r in range(args.rounds):  # alternating, so a change of load hits both
            for n in (1, args.nproc):
                rows.append(run(data, tmp / f"run{n}", n, args, env))
                print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for n in (1, args.nproc):
        mine = [x for row in rows if row["nproc"] == n for x in row["images_per_s"]]
        summary[n] = {"images_per_s_median": round(statistics.median(mine), 1),
                      "wall_s_median": statistics.median(row["wall_s"] for row in rows if row["nproc"] == n)}
    summary["speedup"] = round(summary[args.nproc]["images_per_s_median"] / summary[1]["images_per_s_median"], 2)
    result = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cores": os.cpu_count(),
              "settings": vars(args) | {"out": str(args.out)}, "runs": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
