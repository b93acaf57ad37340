"""VIX forecasting (issue 20, examples/finance): next-day and next-week (5 trading days) close from
the last 20-60 days, a GRU on the windows against the naive (tomorrow = today), seasonal-naive
(period 5) and ridge forecasts on the same test days, with MASE; and the level against the
change from the last value (--residual), measured.

    python benchmarks/app_vix.py [--epochs 12] [--only 1d-w20]

Data: ../shared/datasets/finance_vix/vix-daily.csv (TUNEFORGE_DATASETS), 9,235 trading days
1990-2026; the split is by time (the last 15% of the days test, the 10% before them validation).
Prints a markdown row per forecast and appends a JSON line (command, date, CPU, `uptime` load,
numbers) to benchmarks/results/app_vix.jsonl. `run(args) -> dict` is what benchmarks/applications.py calls.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: small_data's helpers
from small_data import cpu_name, load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))
VIX = DATASETS / "finance_vix" / "vix-daily.csv"
RESULTS = ROOT / "benchmarks" / "results" / "app_vix.jsonl"
OUT = Path(os.environ.get("TUNEFORGE_BENCH_OUT", "/tmp/tuneforge-bench")) / "vix"

# name -> the fit's forecasting settings; the model and its size are shared (SIZE)
FORECASTS = {
    "1d-w20": {"horizon": 1, "window": 20},
    "1d-w20-level": {"horizon": 1, "window": 20, "residual": False},
    "5d-w60": {"horizon": 5, "window": 60},
    "5d-w20": {"horizon": 5, "window": 20},
}
SIZE = {"model": "gru", "embed_dim": 32, "hidden_size": 32, "num_layers": 1, "batch_size": 128, "lr": 3e-3}


def command(name: str, settings: dict, epochs: int, patience: int) -> str:
    flags = {**SIZE, **settings, "epochs": epochs, "patience": patience}
    words = [f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else f"--{'' if v else 'no-'}{k.replace('_', '-')}"
             for k, v in flags.items()]
    return f"tuneforge fit --data {VIX} --date-column DATE --target-column CLOSE {' '.join(words)} --out {OUT / name}"


def one(name: str, settings: dict, epochs: int, patience: int) -> dict:
    import tuneforge
    t0 = time.perf_counter()
    run = tuneforge.fit(data=str(VIX), date_column="DATE", target_column="CLOSE", epochs=epochs, patience=patience,
                        out=str(OUT / name), progress=False, tensorboard=False, **SIZE, **settings)
    r = run.report
    refs = r["forecast"]["baselines"]
    test = {"model": r["test"], **{k: v["test"] for k, v in refs.items()}}
    return {"name": name, "command": command(name, settings, epochs, patience), "wall_s": round(time.perf_counter() - t0, 1),
            "epochs_run": r["epochs_run"], "best_epoch": r["best_epoch"], "test_days": r["test"]["n"],
            "test_dates": r["data"]["splits_by_date"]["test"], "mase_scale": r["forecast"]["mase_scale"],
            "test": {k: {m: round(v[m], 4) for m in ("mase", "rmse", "mae", "r2")} for k, v in test.items()},
            "model_over_naive_mae": round(r["test"]["mae"] / refs["naive"]["test"]["mae"], 4)}


def run(args: argparse.Namespace | None = None) -> dict:
    """Every forecast of FORECASTS (or --only): {"forecasts": [...], "load", "date", "cpu"}."""
    args = args or parser().parse_args([])
    names = args.only.split(",") if getattr(args, "only", None) else list(FORECASTS)
    load0 = load()
    rows = [one(n, FORECASTS[n], args.epochs, args.patience) for n in names]
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(), "nproc": os.cpu_count(),
           "load_before": load0, "load_after": load(), "forecasts": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(out) + "\n")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--only", default=None, help=f"comma-separated: {', '.join(FORECASTS)}")
    return p


def main() -> None:
    out = run(parser().parse_args())
    print("| forecast | test days | model MASE | naive MASE | seasonal-naive MASE | ridge MASE | model RMSE | naive RMSE "
          "| model MAE / naive MAE |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in out["forecasts"]:
        t = r["test"]
        print(f"| {r['name']} | {r['test_days']} | {t['model']['mase']:.3f} | {t['naive']['mase']:.3f} | "
              f"{t['seasonal_naive']['mase']:.3f} | {t['ridge']['mase']:.3f} | {t['model']['rmse']:.3f} | "
              f"{t['naive']['rmse']:.3f} | {r['model_over_naive_mae']:.3f} |")
    print(f"load {out['load_before']} -> {out['load_after']}, {out['date']}, {out['cpu']} x{out['nproc']}")


if __name__ == "__main__":
    main()
