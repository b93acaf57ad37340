"""Classic baselines (issue 17): TF-IDF n-grams + a linear classifier on SST-2 and TNEWS.

    python benchmarks/baselines.py --dataset sst2                  # the defaults fit_tfidf uses
    python benchmarks/baselines.py --dataset tnews --refit-all     # jieba words + char 1-3, svm+nb; refit on all of train
    python benchmarks/baselines.py --dataset tnews                 # the same on train minus the validation slice
    python benchmarks/baselines.py --dataset tnews --analyzer char_wb   # the same without jieba
    python benchmarks/baselines.py --dataset tnews --analyzer char --ngrams 1,4 --C 0.3
    python benchmarks/baselines.py --dataset tnews --sweep         # every setting of BENCHMARKS.md, one by one
    python benchmarks/baselines.py --auto sst2                     # fit --model auto --time-budget 15 on SST-2
    python benchmarks/baselines.py --auto cifar10                  # fit --model auto --time-budget 10 on CIFAR-10
    python benchmarks/baselines.py --auto cifar10-fast             # the --recipe fast run it is held against
    python benchmarks/baselines.py --all-labelled --budget 4       # --model auto on every labelled dataset, one
                                                                   # markdown row each: chosen vs its baseline on val

Trains on train minus a stratified-by-seed validation slice (--val-fraction of train: the
slice tuneforge's own fits would hold out; it fits the softmax temperature and gives the
validation accuracy that choices must be made on), and reports the dev set (TNEWS has no
labelled test; SST-2's dev is the GLUE dev). Prints accuracy, macro-F1, train seconds and
featurize+predict texts/s of the scikit-learn-free inference path (TfidfFeaturizer +
TfidfClassifier), and appends one JSON line per setting to benchmarks/results/baselines.jsonl.
Wrap timed runs in `flock /tmp/tuneforge-bench.lock ...` so that they never overlap another one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tuneforge.core.models.tfidf import fit_tfidf, to_files  # noqa: E402

DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "benchmarks" / "results" / "baselines.jsonl"
FILES = {"sst2": ("sst2/sentiment-train", "sst2/sentiment-dev"), "tnews": ("tnews/train.tsv", "tnews/dev.tsv")}
# (analyzer, ngrams, classifier, C, class_weight, char_ngrams): what was tried, in BENCHMARKS.md
SWEEP = {
    "sst2": [("word", "1,2", "linearsvc", 0.5, None, None), ("word", "1,2", "linearsvc", 1.0, None, None),
             ("word", "1,3", "linearsvc", 0.5, None, None), ("word+char_wb", "1,2", "linearsvc", 0.5, None, "2,5"),
             ("word", "1,2", "logreg", 10.0, None, None)],
    "tnews": [("auto", None, "auto", None, None, None), ("auto", None, "linearsvc", None, None, None),
              ("char_wb", "1,3", "auto", None, None, None), ("char", "1,3", "linearsvc", 0.5, None, None), ("char_wb", "1,3", "linearsvc", 0.5, None, None),
              ("char", "1,3", "linearsvc", 0.2, None, None), ("char", "1,3", "linearsvc", 1.0, None, None),
              ("char", "1,4", "linearsvc", 0.5, None, None), ("char", "2,4", "linearsvc", 0.5, None, None),
              ("char", "1,3", "linearsvc", 0.5, "balanced", None)],
}


def read_tsv(path: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            text, _, label = line.rstrip("\n").rpartition("\t")
            if text:
                texts.append(text)
                labels.append(label)
    return texts, labels


def macro_f1(y: np.ndarray, p: np.ndarray, k: int) -> float:
    f1 = []
    for c in range(k):
        tp, fp, fn = np.sum((p == c) & (y == c)), np.sum((p == c) & (y != c)), np.sum((p != c) & (y == c))
        if tp + fp + fn:
            f1.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1))


def rng_pair(s: str | None) -> tuple[int, int] | None:
    return tuple(int(v) for v in s.split(",")) if s else None


def run_one(ds: str, analyzer: str, ngrams: str | None, classifier: str, C: float | None, class_weight: str | None,
            char_ngrams: str | None, max_features: int | None, min_df: int | None, val_fraction: float,
            seed: int, refit_all: bool = False) -> dict:
    tr_texts, tr_labels = read_tsv(DATASETS / FILES[ds][0])
    dv_texts, dv_labels = read_tsv(DATASETS / FILES[ds][1])
    classes = sorted(set(tr_labels))
    ids = {c: i for i, c in enumerate(classes)}
    y = np.array([ids[c] for c in tr_labels])
    ydev = np.array([ids[c] for c in dv_labels])
    perm = np.random.default_rng(seed).permutation(len(y))
    nval = int(len(y) * val_fraction)
    val, train = perm[:nval], perm[nval:]
    t0 = time.perf_counter()
    fit = fit_tfidf([tr_texts[i] for i in train], y[train], len(classes), analyzer, rng_pair(ngrams), classifier, C,
                    seed, char_ngrams=rng_pair(char_ngrams), min_df=min_df, max_features=max_features,
                    class_weight=class_weight, val_texts=[tr_texts[i] for i in val] if nval else None,
                    val_labels=y[val] if nval else None)
    if refit_all:  # the choices made on validation, then all of train: 10% more texts to learn from
        val_fit = fit
        fit = fit_tfidf(tr_texts, y, len(classes), analyzer, rng_pair(ngrams), val_fit.classifier, val_fit.C, seed,
                        char_ngrams=rng_pair(char_ngrams), min_df=min_df, max_features=max_features,
                        class_weight=class_weight, nb_weight=val_fit.info.get("nb_weight"))
        fit.temperature = val_fit.temperature
        fit.info["val_accuracy"] = val_fit.info.get("val_accuracy")
    train_s = time.perf_counter() - t0
    model = fit.module()
    t0 = time.perf_counter()
    preds = []
    with torch.inference_mode():
        for i in range(0, len(dv_texts), 256):
            preds.append(model(*fit.featurizer.batch(dv_texts[i:i + 256])).argmax(1).numpy())
    pred_s = time.perf_counter() - t0
    pred = np.concatenate(preds)
    meta, tensors = to_files(fit)
    return {"dataset": ds, "analyzer": fit.info["analyzer"], "ngrams": fit.info["ngram_range"],
            "char_ngrams": fit.info["char_ngram_range"], "segmenter": fit.info.get("segmenter"),
            "classifier": fit.classifier, "nb_weight": fit.info.get("nb_weight"), "C": fit.C,
            "class_weight": class_weight, "min_df": fit.info["min_df"], "refit_all": refit_all, "max_features": max_features,
            "train_texts": len(tr_texts) if refit_all else len(train), "val_accuracy": round(fit.info.get("val_accuracy", float("nan")), 4),
            "dev_accuracy": round(float((pred == ydev).mean()), 4), "dev_macro_f1": round(macro_f1(ydev, pred, len(classes)), 4),
            "train_s": round(train_s, 1), "predict_texts_per_s": round(len(dv_texts) / pred_s),
            "vocabulary": fit.featurizer.size,
            "vocab_json_mb": round(len(json.dumps(meta, ensure_ascii=False).encode()) / 1e6, 2),
            "weights_mb": round(sum(t.numel() * t.element_size() for t in tensors.values()) / 1e6, 2),
            "temperature": round(fit.temperature, 3), "why": fit.info["why"]}


# `--auto CASE`: one `tuneforge fit` each; the auto runs' leaderboards also hold the members they are
# compared with (tfidf, frozen minilm; fast-cnn) trained on the same split.
AUTO = {
    "sst2": ["--data", "sst2/sentiment-train", "--test", "sst2/sentiment-dev", "--columns", "text,label",
             "--model", "auto", "--time-budget", "15"],
    "cifar10": ["--data", "cifar10", "--model", "auto", "--time-budget", "10"],
    "cifar10-fast": ["--data", "cifar10", "--recipe", "fast"],
}


def run_auto(case: str) -> dict:
    """One `tuneforge fit` of AUTO[case] into /tmp/tuneforge-bench/auto-CASE; its report summarised."""
    out = Path("/tmp/tuneforge-bench") / f"auto-{case}"
    args = [str(DATASETS / a) if i and AUTO[case][i - 1] in ("--data", "--test") else a for i, a in enumerate(AUTO[case])]
    cmd = [sys.executable, "-m", "tuneforge", "fit", *args, "--out", str(out), "--overwrite", "--no-progress",
           "--no-tensorboard"]
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - t0
    report = json.loads((out / "report.json").read_text())
    board = [{k: r.get(k) for k in ("name", "status", "plan", "wall_s", "why")} |
             {"val": (r.get("val") or {}).get("accuracy"), "test": (r.get("test") or {}).get("accuracy")}
             for r in report.get("leaderboard", [])]
    return {"benchmark": "auto", "case": case, "command": "tuneforge fit " + " ".join(args), "load_before": load,
            "wall_s": round(wall, 1), "report_wall_s": report.get("wall_s"), "chosen": report.get("chosen"),
            "val_accuracy": (report.get("val") or {}).get("accuracy"),
            "test_accuracy": (report.get("test") or {}).get("accuracy"),
            "test_macro_f1": (report.get("test") or {}).get("macro_f1"), "leaderboard": board}


# `--all-labelled`: every dataset of ../shared/datasets with labels, as `tuneforge fit --model auto` reads it
# (paths relative to DATASETS; "{tmp}" is a folder the benchmark writes, never the repository), or why not.
LABELLED = {
    "cifar10": {"label": "class folder (10)", "prepare": "cifar10_subset",
                "args": ["--data", "{tmp}/cifar10", "--model", "auto"]},
    "sst2": {"label": "label (2)",  # phrases in train: a sentence-level validation set (README, --val)
             "args": ["--data", "sst2/sentiment-train", "--val", "sst2/sentiment-test", "--test", "sst2/sentiment-dev",
                      "--columns", "text,label", "--model", "auto"]},
    "tnews": {"label": "label (15)",  # no labelled test: dev is the test, validation carved from train
              "args": ["--data", "tnews/train.tsv", "--test", "tnews/dev.tsv", "--columns", "text,label",
                       "--model", "auto"]},
    "banking77": {"label": "category (77)",
                  "args": ["--data", "banking77/train.csv", "--test", "banking77/test.csv", "--text-column", "text",
                           "--label-column", "category", "--model", "auto"]},
    "fashion_products": {"label": "articleType (75; < 10 training rows -> other)", "prepare": "fashion_rows",
                         "args": ["--data", "{tmp}/fashion.csv", "--image-column", "image", "--text-column",
                                  "productDisplayName", "--label-column", "articleType", "--test-fraction", "0.15",
                                  "--min-class-count", "10", "--model", "auto"]},
    "medmnist/pneumoniamnist": {"label": "normal / pneumonia (2)", "prepare": "pneumonia_png",
                                "args": ["--data", "{tmp}/pneumoniamnist", "--model", "auto"]},
    "nlupp_banking": {"skip": "multi-label (48 intents, 2.25 per utterance): not supported until issue 20; not measured"},
    "flickr8k": {"skip": "image-caption pairs, no class labels: retrieval (`tuneforge align`), out of scope"},
    "finance_vix": {"skip": "a daily series with no labels: forecasting, no classification target; out of scope"},
}


def cifar10_subset(tmp: Path, a) -> str:
    """CIFAR-10 class folders of links: the first --cifar-train images of each class (by file name)
    from train/, the first --cifar-test of each from test/."""
    for part, n in (("train", a.cifar_train), ("test", a.cifar_test)):
        for cls in sorted(p.name for p in (DATASETS / "cifar10" / part).iterdir()):
            d = tmp / "cifar10" / part / cls
            d.mkdir(parents=True, exist_ok=True)
            for f in sorted((DATASETS / "cifar10" / part / cls).iterdir())[:n]:
                os.symlink(f, d / f.name)
    return f"subset: {a.cifar_train}/class train, {a.cifar_test}/class test (first by file name)"


def fashion_rows(tmp: Path, a) -> str:
    """The first --fashion-rows rows of metadata.csv, image paths made absolute (the table moves to tmp)."""
    import csv
    with open(DATASETS / "fashion_products" / "metadata.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:a.fashion_rows]
    with open(tmp / "fashion.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "image": str(DATASETS / "fashion_products" / r["image"])} for r in rows)
    return f"first {len(rows)} of 9,583 rows; test 15%, val 10% of the rest, stratified, seed 0"


def pneumonia_png(tmp: Path, a) -> str:
    """pneumoniamnist.npz as PNG class folders train/, val/, test/ (tuneforge reads .npz from issue 20 on)."""
    from PIL import Image
    arrays = np.load(DATASETS / "medmnist" / "pneumoniamnist.npz")
    names = {0: "normal", 1: "pneumonia"}
    for part in ("train", "val", "test"):
        for i, (img, y) in enumerate(zip(arrays[f"{part}_images"], arrays[f"{part}_labels"].reshape(-1))):
            d = tmp / "pneumoniamnist" / part / names[int(y)]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i:05d}.png")
    return "the npz arrays as 28x28 PNG class folders; its own val split"


def run_labelled(name: str, spec: dict, a) -> dict:
    """One `tuneforge fit --model auto --time-budget B` of LABELLED[name]; its report's chosen model
    against the report's baseline on validation."""
    import shutil
    import tempfile
    if "skip" in spec:
        return {"dataset": name, "label": "—", "skipped": spec["skip"]}
    tmp = Path(tempfile.mkdtemp(prefix="tuneforge-labelled-"))
    try:
        prepared = globals()[spec["prepare"]](tmp, a) if "prepare" in spec else ""
        budget = a.budget_image_text if "--image-column" in spec["args"] else a.budget
        args = [(x.format(tmp=tmp) if "{tmp}" in x else str(DATASETS / x)) if i and spec["args"][i - 1] in
                ("--data", "--val", "--test") else x for i, x in enumerate(spec["args"])]
        args += ["--time-budget", str(budget)]
        out = Path("/tmp/tuneforge-bench") / f"labelled-{name.replace('/', '-')}"
        cmd = [sys.executable, "-m", "tuneforge", "fit", *args, "--out", str(out), "--overwrite", "--no-progress",
               "--no-tensorboard"]
        load = os.getloadavg()
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = json.loads((out / "report.json").read_text())
    val, test, base = report.get("val") or {}, report.get("test") or {}, report.get("baseline") or {}
    bval = base.get("val") or {}
    margin = None if bval.get("accuracy") is None else round(100 * (val["accuracy"] - bval["accuracy"]), 2)
    return {"dataset": name, "label": spec["label"], "prepared": prepared, "budget_min": budget,
            "command": "tuneforge fit " + " ".join(args).replace(str(DATASETS), "../shared/datasets"),
            "chosen": report.get("chosen"), "val_accuracy": val.get("accuracy"), "val_macro_f1": val.get("macro_f1"),
            "baseline": base.get("name"), "baseline_val_accuracy": bval.get("accuracy"),
            "baseline_val_macro_f1": bval.get("macro_f1"), "margin_points": margin,
            "never_below": margin is not None and margin >= 0, "test_accuracy": test.get("accuracy"),
            "test_macro_f1": test.get("macro_f1"), "wall_s": round(wall, 1), "report_wall_s": report.get("wall_s"),
            "load": f"{load[0]:.1f} -> {load_after[0]:.1f}",
            "leaderboard": [{k: r.get(k) for k in ("name", "status", "plan", "wall_s", "why")} |
                            {"val": (r.get("val") or {}).get("accuracy"), "test": (r.get("test") or {}).get("accuracy")}
                            for r in report.get("leaderboard", [])]}


def labelled_row(r: dict) -> str:
    """One markdown row of the --all-labelled table."""
    pct = lambda v: "—" if v is None else f"{100 * v:.2f}%"
    f1 = lambda v: "—" if v is None else f"{v:.3f}"
    if "skipped" in r:
        return f"| {r['dataset']} | — | not measured: {r['skipped']} | | | | | | |"
    return (f"| {r['dataset']} | {r['label']} | {r['chosen']} | {pct(r['val_accuracy'])} / {f1(r['val_macro_f1'])} | "
            f"{r['baseline']}: {pct(r['baseline_val_accuracy'])} / {f1(r['baseline_val_macro_f1'])} | "
            f"{'+' if (r['margin_points'] or 0) >= 0 else ''}{r['margin_points']} | {pct(r['test_accuracy'])} | "
            f"{r['wall_s']:.0f} s ({r['budget_min']} min) | {r['load']} |")


LABELLED_HEAD = ("| dataset | label | chosen | val acc / macro-F1 | baseline val acc / macro-F1 | margin (points) | "
                 "test acc | wall (budget) | load 1-min (before -> after) |\n|---|---|---|---|---|---|---|---|---|")


def record(rec: dict) -> None:
    rec = {"benchmark": "baselines", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), **rec}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"{rec['dataset']:5s}{' refit-all' if rec['refit_all'] else ''} {rec['analyzer']:12s} {str(rec['ngrams']):7s} {str(rec['char_ngrams']):7s} "
          f"{rec['classifier']:9s} nb={rec['nb_weight']} mdf={rec['min_df']} C={rec['C']:<5g} cw={rec['class_weight']} val={rec['val_accuracy']:.4f} "
          f"dev={rec['dev_accuracy']:.4f} F1={rec['dev_macro_f1']:.4f} train={rec['train_s']}s "
          f"{rec['predict_texts_per_s']} texts/s V={rec['vocabulary']} json={rec['vocab_json_mb']}MB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=sorted(FILES))
    ap.add_argument("--auto", choices=sorted(AUTO), help="instead: one `tuneforge fit` of the --model auto cases")
    ap.add_argument("--analyzer", default="auto", help="auto | word | char | char_wb | word+char_wb | word+char")
    ap.add_argument("--ngrams", default=None, help="n-gram range as MIN,MAX (default: word 1,2; char 1,3)")
    ap.add_argument("--char-ngrams", default=None, help="char range of word+char_wb (default 2,4) / word+char (1,3)")
    ap.add_argument("--classifier", default="auto", choices=["auto", "linearsvc", "logreg", "svm+nb"])
    ap.add_argument("--C", type=float, default=None, help="default 0.5 (linearsvc), 10 (logreg)")
    ap.add_argument("--class-weight", default=None, choices=[None, "balanced"])
    ap.add_argument("--max-features", type=int, default=2_000_000)
    ap.add_argument("--min-df", type=int, default=None, help="default: 1 for CJK text, else 2")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", action="store_true", help="run every setting listed in SWEEP for the dataset")
    ap.add_argument("--refit-all", action="store_true",
                    help="after choosing on the validation slice, refit on all of train with the same choices")
    ap.add_argument("--all-labelled", action="store_true",
                    help="instead: `fit --model auto --time-budget --budget` on every labelled dataset, one markdown row each")
    ap.add_argument("--only", default=None, help="--all-labelled: these datasets only (comma-separated LABELLED names)")
    ap.add_argument("--budget", type=float, default=4.0, help="--all-labelled: minutes per dataset")
    ap.add_argument("--budget-image-text", type=float, default=6.0, help="--all-labelled: minutes for image+text")
    ap.add_argument("--cifar-train", type=int, default=1000, help="--all-labelled: CIFAR-10 training images per class")
    ap.add_argument("--cifar-test", type=int, default=200, help="--all-labelled: CIFAR-10 test images per class")
    ap.add_argument("--fashion-rows", type=int, default=3000, help="--all-labelled: fashion_products rows")
    a = ap.parse_args()
    if a.all_labelled:
        print(LABELLED_HEAD, flush=True)
        for name, spec in LABELLED.items():
            if a.only and name not in a.only.split(","):
                continue
            rec = {"benchmark": "auto-labelled", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
            try:
                rec.update(run_labelled(name, spec, a))
            except subprocess.CalledProcessError as e:  # one dataset's failure is a row, the others still run
                rec.update({"dataset": name, "label": spec.get("label"), "skipped": f"FAILED: exit code {e.returncode}"})
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            with open(RESULTS, "a") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            print(labelled_row(rec), flush=True)
        return
    if a.auto:
        rec = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), **run_auto(a.auto)}
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with open(RESULTS, "a") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        print(json.dumps(rec, indent=1), flush=True)
        return
    if not a.dataset:
        ap.error("give --dataset (or --auto CASE)")
    settings = SWEEP[a.dataset] if a.sweep else [(a.analyzer, a.ngrams, a.classifier, a.C, a.class_weight, a.char_ngrams)]
    for analyzer, ngrams, classifier, C, cw, char in settings:
        record(run_one(a.dataset, analyzer, ngrams, classifier, C, cw, char, a.max_features, a.min_df,
                       a.val_fraction, a.seed, a.refit_all))


if __name__ == "__main__":
    main()
