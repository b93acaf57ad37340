"""Issue 6 fusion target: fashion_products (9,583 product photos + titles), fused test accuracy vs
image-only and text-only models trained with the same budget, at three label levels.

    flock /tmp/tuneforge-bench.lock .venv/bin/python benchmarks/multimodal_fusion.py \
        [--datasets ../shared/datasets] [--labels articleType,subCategory,masterCategory] \
        [--fusions late,gated,attention] [--other-fusions late,gated] [--image-size 224] [--epochs 20]

Every run is `tuneforge.fit` on the same table, the same stratified split (seed 0, 15% test,
10% of the rest for validation, classes with < 10 rows folded into "other"), frozen
efficientnet_lite0 + minilm encoders whose outputs are computed once and cached on disk (keyed
by encoder, size and the image files' contents), so the image pass is paid by the first run
only and every later run (any label level, any fusion) trains just its head. Same optimizer,
epochs and selection (best val accuracy) for all. One JSON line per run goes to
benchmarks/results/multimodal.jsonl with the machine load."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    ap.add_argument("--labels", default="articleType,subCategory,masterCategory")
    ap.add_argument("--fusions", default="late,gated,attention", help="fusions run on the first label level")
    ap.add_argument("--other-fusions", default="late,gated", help="fusions run on the other label levels")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--modality-dropout", type=float, default=0.2)
    ap.add_argument("--out", default="/tmp/tuneforge-bench/multimodal")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "multimodal.jsonl"))
    ap.add_argument("--cache-dir", default=None, help="feature/decode cache (default: tuneforge's)")
    args = ap.parse_args()

    import tuneforge
    data = Path(args.datasets) / "fashion_products"
    common = dict(data=str(data / "metadata.csv"), image_column="image", text_column="productDisplayName",
                  image_size=args.image_size, epochs=args.epochs, batch_size=64, lr=1e-3, weight_decay=0.05,
                  dropout=0.2, test_fraction=0.15, val_fraction=0.1, min_class_count=10, seed=0, patience=0,
                  progress=False, tensorboard=False, threads=0, cache_dir=args.cache_dir)
    for i, label in enumerate(args.labels.split(",")):
        runs = [("image", {"modalities": "image"}), ("text", {"modalities": "text"})]
        runs += [(f"fused-{f}", {"modalities": "image,text", "fusion": f, "modality_dropout": args.modality_dropout})
                 for f in (args.fusions if i == 0 else args.other_fusions).split(",") if f]
        best_single = None
        for name, kw in runs:
            load = os.getloadavg()
            t0 = time.perf_counter()
            r = tuneforge.fit(**common, **kw, label_column=label, out=f"{args.out}/{label}-{name}")
            wall = time.perf_counter() - t0
            rep = r.report
            rec = {"benchmark": "fashion-fusion", "label": label, "run": name, "fusion": rep.get("fusion"),
                   "test_accuracy": rep["test"]["accuracy"], "test_macro_f1": rep["test"]["macro_f1"],
                   "val_accuracy": rep["val"]["accuracy"], "test_n": rep["test"]["n"], "classes": len(rep["classes"]),
                   "folded_into_other": rep["data"]["folded_into_other"], "best_epoch": rep["best_epoch"],
                   "image_size": args.image_size, "epochs": args.epochs, "features_s": rep["data"]["features_s"],
                   "fit_s": rep["fit_s"], "wall_s": round(wall, 1), "load_before": [round(x, 2) for x in load],
                   "load_after": [round(x, 2) for x in os.getloadavg()],
                   "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "run_dir": str(r.run_dir),
                   "command": " ".join(sys.argv)}
            for k in ("accuracy_without_image", "accuracy_without_text"):
                if k in rep["test"]:
                    rec[f"test_{k}"] = rep["test"][k]
            if name in ("image", "text"):
                best_single = max(best_single or 0.0, rec["test_accuracy"])
            else:
                rec["gain_over_best_single_points"] = round(100 * (rec["test_accuracy"] - best_single), 2)
            print(json.dumps(rec), flush=True)
            Path(args.results).parent.mkdir(parents=True, exist_ok=True)
            with open(args.results, "a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
