"""NLU++ banking, multi-label intents (issue 20): micro-F1 of `tuneforge fit --multi-label` with
folds 0-9 as training data (validation carved from them) and folds 10-19 as test, against the
one-vs-rest TF-IDF baseline every multi-label text fit trains on the same split.

    python benchmarks/app_nlupp.py                       # frozen minilm + head (the default text model)
    python benchmarks/app_nlupp.py --models minilm-ft    # a fine-tuned minilm too (minutes on 2 cores)

`run(args) -> dict` is what benchmarks/applications.py calls. The folds are concatenated into two
JSON files of the dataset's own layout ({"text", "intents": [...]}: tuneforge reads the list-valued
column as it is), the fits are plain `tuneforge` commands, printed as they run; a JSON line with the
commands, date, `uptime` load and figures is appended to benchmarks/results/app_nlupp.jsonl.
Datasets: ../shared/datasets (or $TUNEFORGE_DATASETS).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: small_data's helpers
from small_data import load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "benchmarks" / "results" / "app_nlupp.jsonl"
WORK = Path("/tmp/tuneforge-bench/nlupp")
TF = [sys.executable, "-m", "tuneforge"]
# what each model name adds to the common fit command
MODELS = {"minilm": ["--model", "minilm", "--freeze", "backbone", "--epochs", "300", "--patience", "20", "--lr", "3e-3"],
          "minilm-ft": ["--model", "minilm", "--epochs", "20", "--patience", "5", "--lr", "3e-4", "--warmup-epochs", "1",
                        "--batch-size", "16"]}


def folds(src: Path, out: Path) -> tuple[Path, Path]:
    """train.json (folds 0-9) and test.json (folds 10-19), the dataset's records as they are."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, which in (("train", range(10)), ("test", range(10, 20))):
        records = [r for i in which for r in json.loads((src / f"fold{i}.json").read_text(encoding="utf-8"))]
        path = out / f"{name}.json"
        path.write_text(json.dumps(records), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def run(args: argparse.Namespace) -> dict:
    """Each model's fit on the fold split; its val/test micro-F1, macro-F1, mAP beside the baseline's."""
    train, test = folds(Path(args.data), WORK)
    out = {"benchmark": "nlupp_banking multi-label", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "split": "folds 0-9 train (10% of them validation, seeded), folds 10-19 test", "load_before": load(),
           "runs": []}
    for name in args.models:
        run_dir = WORK / f"run-{name}"
        cmd = [*TF, "fit", "--data", str(train), "--test", str(test), "--multi-label", "--label-column", "intents",
               *MODELS[name], "--out", str(run_dir), "--overwrite", "--no-progress"]
        print("$ " + shlex.join(["tuneforge", *cmd[3:]]), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        report = json.loads((run_dir / "report.json").read_text())
        keep = ("micro_f1", "macro_f1", "mAP", "subset_accuracy", "n")
        b = report.get("baseline") or {}
        out["runs"].append({"model": name, "command": shlex.join(["tuneforge", *cmd[3:]]), "wall_s": round(time.perf_counter() - t0, 1),
                            "best_epoch": report.get("best_epoch"), "epochs_run": report.get("epochs_run"),
                            "val": {k: report["val"].get(k) for k in keep}, "test": {k: report["test"].get(k) for k in keep},
                            "baseline": {"description": b.get("description"), "seconds": b.get("seconds"),
                                         "val": b.get("val"), "test": b.get("test")}})
        r = out["runs"][-1]
        print(f"{name}: test micro-F1 {r['test']['micro_f1']:.4f} (baseline {(b.get('test') or {}).get('micro_f1', float('nan')):.4f}), "
              f"macro-F1 {r['test']['macro_f1']:.4f}, mAP {r['test']['mAP']:.4f}, {r['wall_s']} s", flush=True)
    out["load_after"] = load()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(out) + "\n")
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DATASETS / "nlupp_banking"), help="the folder of fold0.json ... fold19.json")
    p.add_argument("--models", nargs="+", default=["minilm"], choices=sorted(MODELS))
    return p


if __name__ == "__main__":
    print(json.dumps(run(parser().parse_args()), indent=2))
