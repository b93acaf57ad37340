"""Unlabeled-data benchmarks (issue 5), CIFAR-10: one command per target, each a plain
`tuneforge pretrain` / `tuneforge fit`, stopped on time by `--max-minutes`.

    python benchmarks/unlabeled.py semi-250 [--minutes 60] [--method fixmatch]
        25 labels per class + all of train/ as unlabeled, side by side with the same recipe on
        the 250 labels alone (target: >= 80% test, >= 8 points above labels-only, <= 60 min)
        --features: the same on cached frozen ImageNet EfficientNet-Lite0 features (64 px)
    python benchmarks/unlabeled.py semi-4000 [--minutes 90]     # 400 per class (target >= 92%)
    python benchmarks/unlabeled.py ssl-probe [--minutes 60]
        SimCLR from random init on train/ without labels, then a linear probe (frozen backbone,
        cached features, all train labels) beside the same probe of the random-init backbone
        (target: >= 70% test)
    python benchmarks/unlabeled.py continued [--minutes 60]
        continued SimCLR of ImageNet EfficientNet-Lite0 (64 px) on train/, then the 250-label fit,
        beside the 250-label fit without continued pretraining

Text (SST-2 from `../shared/datasets/sst2`, dev accuracy; minilm):
    python benchmarks/unlabeled.py semi-text [--labels 10] [--minutes 10] [--method fixmatch]
        N labelled per class from the first 15,000 distinct train texts of >= 5 words, those 15,000
        as the unlabeled pool, frozen minilm
        (features cached), side by side with the same head on the N labels alone, same steps
    python benchmarks/unlabeled.py mlm [--minutes 10] [--labels 10]
        continued MLM of minilm on SST-2 train sentences, then the same few-label fit (frozen
        head, and full fine-tuning) with and without it

Each prints the commands it runs and appends a JSON line (commands, date, `uptime` load,
numbers, wall times) to benchmarks/results/unlabeled.jsonl. Wrap timed runs in
`flock /tmp/tuneforge-bench.lock ...` so that they never overlap another timed run.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "benchmarks" / "results" / "unlabeled.jsonl"
TF = [sys.executable, "-m", "tuneforge"]
OUT = Path(os.environ.get("TUNEFORGE_BENCH_OUT", "/tmp/tuneforge-bench"))


def cmd(args: list[str]) -> str:
    return "tuneforge " + " ".join(shlex.quote(a) for a in args)


def run(args: list[str]) -> float:
    print("$ " + cmd(args), flush=True)
    t0 = time.perf_counter()
    subprocess.run(TF + args, cwd=ROOT, check=True)
    return round(time.perf_counter() - t0, 1)


def record(name: str, **numbers) -> None:
    rec = {"benchmark": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(), **numbers}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec, indent=1), flush=True)


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def fit_numbers(run_dir: Path, wall: float) -> dict:
    r = report(run_dir)
    out = {"test_accuracy": r["test"]["accuracy"], "epochs_run": r["epochs_run"], "stopped_because": r["stopped_because"],
           "fit_s": r["fit_s"], "wall_s": wall}
    if "semi" in r:
        out["semi"] = {k: r["semi"][k] for k in ("pseudo_labels_per_class", "pseudo_label_rate_last_epoch",
                                                  "unlabeled_images", "labelled_images", "steps_per_epoch")}
    return out


# The fast recipe's model and optimizer, with FixMatch's usual settings where they differ: no label
# smoothing (it caps confidence below the threshold), lr 0.03 (a step sees 8x more images). The
# threshold is 0.8, not FixMatch's 0.95: fast-cnn's scaled-down logits reach 0.95 on only ~0.5% of
# unlabeled images in a short run (measured: 5-minute tuning run, BENCHMARKS.md).
SEMI_COMMON = ["--model", "fast-cnn", "--val-fraction", "0", "--optimizer", "sgd", "--lr", "0.03", "--momentum", "0.9",
               "--weight-decay", "5e-4", "--batch-size", "32", "--label-smoothing", "0", "--tta", "--patience", "0",
               "--no-progress", "--no-tensorboard"]


# The cached-features variant: ImageNet EfficientNet-Lite0 at 64 px, frozen; the features of all
# 60,000 images are computed once (~5 min), then the head trains in seconds per epoch.
FEATURES = ["--model", "efficientnet_lite0", "--image-size", "64", "--freeze", "backbone", "--augment", "flip",
            "--val-fraction", "0", "--optimizer", "adamw", "--lr", "3e-3", "--batch-size", "32", "--label-smoothing", "0",
            "--patience", "0", "--no-progress", "--no-tensorboard"]


def semi(labels: int, minutes: float, method: str, step_s: float = 0.6, steps: int = 100, threshold: float = 0.8,
         features: bool = False, align: bool = False) -> None:
    """Semi-supervised fit and the labels-only fit of the same recipe for the same number of
    labelled steps (far less time: a labels-only step holds 32 images, a FixMatch step 32 + 224 + 224)."""
    global SEMI_COMMON
    data = str(DATASETS / "cifar10")
    if features:  # head steps on cached features cost milliseconds: the epochs are set, not timed
        SEMI_COMMON, step_s = FEATURES, 0.02
    epochs = max(1, math.floor(minutes * 60 / (steps * step_s)))
    if features:
        epochs = min(epochs, 40)
    tag = f"{method}-{labels}" + ("-features" if features else "") + ("-align" if align else "")
    semi_args = ["fit", "--data", data, "--labels-per-class", str(labels), "--unlabeled", str(DATASETS / "cifar10" / "train"),
                 "--semi", method, "--semi-threshold", str(threshold), "--semi-steps", str(steps), "--epochs", str(epochs), "--max-minutes", str(minutes),
                 "--out", str(OUT / tag), *SEMI_COMMON, *(["--semi-align"] if align else [])]
    load_before = uptime()
    wall = run(semi_args)
    semi_res = fit_numbers(OUT / tag, wall)
    r = report(OUT / tag)
    labelled_steps = r["epochs_run"] * steps
    per_epoch = math.ceil(labels * 10 / 32)
    base_args = ["fit", "--data", data, "--labels-per-class", str(labels), "--epochs", str(max(1, labelled_steps // per_epoch)),
                 "--max-minutes", str(minutes), "--out", str(OUT / f"labels-only-{tag}"), *SEMI_COMMON]
    wall_b = run(base_args)
    base_res = fit_numbers(OUT / f"labels-only-{tag}", wall_b)
    record(f"semi-{labels * 10}" + ("-features" if features else ""), method=method, distribution_alignment=align,
           minutes=minutes, uptime_before=load_before,
           commands=[cmd(semi_args), cmd(base_args)], semi=semi_res, labels_only=base_res,
           gain_points=round(100 * (semi_res["test_accuracy"] - base_res["test_accuracy"]), 2))


def ssl_probe(minutes: float, method: str) -> None:
    data = str(DATASETS / "cifar10")
    epochs = max(1, math.floor(minutes / 3.6))  # ~3.5 min an epoch of 50,000 images x 2 views (fast-cnn, measured)
    pre = ["pretrain", "--data", str(DATASETS / "cifar10" / "train"), "--method", method, "--model", "fast-cnn",
           "--epochs", str(epochs), "--max-minutes", str(minutes), "--batch-size", "256", "--probe", data,
           "--probe-per-class", "100", "--out", str(OUT / f"ssl-{method}"), "--no-progress", "--no-tensorboard"]
    load_before = uptime()
    wall_pre = run(pre)
    pre_rep = report(OUT / f"ssl-{method}")
    probe = ["--data", data, "--model", "fast-cnn", "--freeze", "backbone", "--augment", "flip", "--epochs", "30",
             "--lr", "3e-3", "--batch-size", "256", "--val-fraction", "0.1", "--patience", "5", "--no-progress",
             "--no-tensorboard"]
    ssl_fit = ["fit", *probe, "--init", str(OUT / f"ssl-{method}"), "--out", str(OUT / f"probe-{method}")]
    rnd_fit = ["fit", *probe, "--out", str(OUT / "probe-random-init")]
    wall_ssl = run(ssl_fit)
    wall_rnd = run(rnd_fit)
    record("ssl-probe", method=method, minutes=minutes, uptime_before=load_before,
           commands=[cmd(pre), cmd(ssl_fit), cmd(rnd_fit)],
           pretrain={"epochs_run": pre_rep["epochs_run"], "stopped_because": pre_rep["stopped_because"],
                     "knn_probe": pre_rep["probe"], "fit_s": pre_rep["fit_s"], "wall_s": wall_pre},
           linear_probe_ssl=fit_numbers(OUT / f"probe-{method}", wall_ssl),
           linear_probe_random_init=fit_numbers(OUT / "probe-random-init", wall_rnd))


def continued(minutes: float, method: str) -> None:
    data = str(DATASETS / "cifar10")
    pre = ["pretrain", "--data", str(DATASETS / "cifar10" / "train"), "--method", method, "--model", "efficientnet_lite0",
           "--image-size", "64", "--optimizer", "adamw", "--lr", "1e-4", "--weight-decay", "1e-4", "--warmup-epochs", "0",
           "--epochs", "1", "--max-minutes", str(minutes), "--batch-size", "128", "--probe", data, "--probe-per-class", "50",
           "--out", str(OUT / "ssl-lite0"), "--no-progress", "--no-tensorboard"]
    fit = ["--data", data, "--model", "efficientnet_lite0", "--image-size", "64", "--labels-per-class", "25",
           "--val-fraction", "0", "--epochs", "30", "--batch-size", "32", "--lr", "1e-3", "--patience", "0",
           "--no-progress", "--no-tensorboard"]
    wall_pre = run(pre)
    with_cp = ["fit", *fit, "--init", str(OUT / "ssl-lite0"), "--out", str(OUT / "lite0-250-continued")]
    without = ["fit", *fit, "--out", str(OUT / "lite0-250")]
    wall_a, wall_b = run(with_cp), run(without)
    record("continued", method=method, minutes=minutes, commands=[cmd(pre), cmd(with_cp), cmd(without)],
           pretrain_wall_s=wall_pre, pretrain_probe=report(OUT / "ssl-lite0")["probe"],
           continued=fit_numbers(OUT / "lite0-250-continued", wall_a), imagenet_only=fit_numbers(OUT / "lite0-250", wall_b))


# ---------------------------------------------------------------- text (SST-2)

SST2 = ["--columns", "text,label", "--test", str(DATASETS / "sst2" / "sentiment-dev"), "--model", "minilm",
        "--max-length", "64", "--val-fraction", "0", "--patience", "0", "--no-progress", "--no-tensorboard"]
# A frozen encoder: the features of every text are computed once, the head trains in milliseconds a step.
TEXT_HEAD = ["--freeze", "backbone", "--lr", "1e-2", "--batch-size", "32", "--label-smoothing", "0"]


def text_numbers(run_dir: Path, wall: float) -> dict:
    r = report(run_dir)
    out = {"dev_accuracy": r["test"]["accuracy"], "dev_macro_f1": r["test"]["macro_f1"], "epochs_run": r["epochs_run"],
           "train_rows": r["data"]["train"], "fit_s": r["fit_s"], "wall_s": wall}
    if "semi" in r:
        out["semi"] = {k: r["semi"][k] for k in ("pseudo_labels_per_class", "pseudo_label_rate_last_epoch",
                                                  "unlabeled_texts", "labelled_texts", "steps_per_epoch")}
    return out


def sst2_texts(n: int, min_words: int = 5) -> tuple[Path, Path]:
    """The first `n` distinct SST-2 train texts of >= `min_words` words (sentences and long
    phrases; the 1-4 word phrases are substrings of them), outside the repo: a labelled TSV (the
    labelled rows are drawn from it) and the same texts one a line (.txt, the unlabeled pool).
    A subset because the frozen encoder runs at ~125-250 texts/s here: all 67,349 would be ~5-9 min."""
    seen, rows = set(), []
    for line in (DATASETS / "sst2" / "sentiment-train").read_text(encoding="utf-8").splitlines():
        t, label = line.rsplit("\t", 1)
        t = t.strip()
        if len(t.split()) >= min_words and t not in seen:
            seen.add(t)
            rows.append((t, label.strip()))
    OUT.mkdir(parents=True, exist_ok=True)
    tsv, txt = OUT / f"sst2-train-{n}.tsv", OUT / f"sst2-train-{n}.txt"
    tsv.write_text("".join(f"{t}\t{l}\n" for t, l in rows[:n]), encoding="utf-8")
    txt.write_text("".join(f"{t}\n" for t, _ in rows[:n]), encoding="utf-8")
    return tsv, txt


def semi_text(labels: int, minutes: float, method: str, steps: int = 100, threshold: float = 0.8,
              unlabeled: int = 15000, align: bool = False) -> None:
    """Cached frozen minilm features: a step costs ~ms, so the epochs are set, not timed
    (`--max-minutes` still caps the run); the labels-only head gets the same number of steps."""
    tsv, txt = sst2_texts(unlabeled)
    train = str(tsv)
    epochs = 30
    tag = f"sst2-{method}-{labels}" + ("-align" if align else "")
    semi_args = ["fit", "--data", train, "--labels-per-class", str(labels), "--unlabeled", str(txt),
                 "--semi", method, *(["--semi-align"] if align else []),
                 "--semi-threshold", str(threshold), "--semi-steps", str(steps), "--epochs", str(epochs),
                 "--max-minutes", str(minutes), "--out", str(OUT / tag), *SST2, *TEXT_HEAD]
    load_before = uptime()
    wall = run(semi_args)
    semi_res = text_numbers(OUT / tag, wall)
    labelled_steps = report(OUT / tag)["epochs_run"] * steps
    per_epoch = math.ceil(labels * 2 / 32)
    base_args = ["fit", "--data", train, "--labels-per-class", str(labels), "--epochs", str(max(1, labelled_steps // per_epoch)),
                 "--max-minutes", str(minutes), "--out", str(OUT / f"labels-only-{tag}"), *SST2, *TEXT_HEAD]
    wall_b = run(base_args)
    base_res = text_numbers(OUT / f"labels-only-{tag}", wall_b)
    record(f"semi-text-{labels * 2}", method=method, distribution_alignment=align, minutes=minutes, uptime_before=load_before,
           commands=[cmd(semi_args), cmd(base_args)], semi=semi_res, labels_only=base_res,
           gain_points=round(100 * (semi_res["dev_accuracy"] - base_res["dev_accuracy"]), 2))


def mlm(minutes: float, labels: int, texts: int = 8000, epochs: int = 3) -> None:
    """Continued MLM on SST-2 train texts (~60 texts/s forward + backward here: an epoch of 7,600
    is ~2-3 min), then the few-label fits with and without it. The probe table is sentiment-test,
    so sentiment-dev stays unseen until the fits' final number."""
    tsv, txt = sst2_texts(texts)
    pre = ["pretrain", "--method", "mlm", "--model", "minilm", "--data", str(txt), "--max-length", "64",
           "--epochs", str(epochs), "--max-minutes", str(minutes), "--batch-size", "32",
           "--probe", str(DATASETS / "sst2" / "sentiment-test"),
           "--columns", "text,label", "--probe-per-class", "200", "--out", str(OUT / "mlm-sst2"), "--no-progress", "--no-tensorboard"]
    load_before = uptime()
    wall_pre = run(pre)
    pre_rep = report(OUT / "mlm-sst2")
    few = ["--data", str(tsv), "--labels-per-class", str(labels), *SST2]
    variants = {"head": [*TEXT_HEAD, "--epochs", "100"],
                "full": ["--lr", "1e-4", "--batch-size", "8", "--epochs", "15"]}
    res, commands = {}, [cmd(pre)]
    for name, recipe in variants.items():
        for init in (True, False):
            out = OUT / f"sst2-{labels}-{name}-{'mlm' if init else 'minilm'}"
            args = ["fit", *few, *recipe, *(["--init", str(OUT / "mlm-sst2")] if init else []), "--out", str(out)]
            res[f"{name}_{'mlm' if init else 'minilm'}"] = text_numbers(out, run(args))
            commands.append(cmd(args))
    record("mlm-text", minutes=minutes, labels_per_class=labels, uptime_before=load_before, commands=commands,
           pretrain={"texts": pre_rep["data"]["texts"], "epochs_run": pre_rep["epochs_run"], "steps": pre_rep["steps"],
                     "stopped_because": pre_rep["stopped_because"], "heldout": pre_rep["heldout"], "probe": pre_rep["probe"],
                     "fit_s": pre_rep["fit_s"], "wall_s": wall_pre},
           fits=res, gain_points={k: round(100 * (res[f"{k}_mlm"]["dev_accuracy"] - res[f"{k}_minilm"]["dev_accuracy"]), 2)
                                  for k in variants})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=["semi-250", "semi-4000", "ssl-probe", "continued", "semi-text", "mlm"])
    p.add_argument("--labels", type=int, default=10, help="semi-text, mlm: labelled SST-2 texts per class")
    p.add_argument("--align", action="store_true", help="semi-*: --semi-align (distribution alignment)")
    p.add_argument("--threshold", type=float, default=0.8, help="semi-text: --semi-threshold")
    p.add_argument("--minutes", type=float, default=None, help="training time budget (default: the target's)")
    p.add_argument("--method", default=None, help="fixmatch|pseudo-label|mean-teacher, or simclr|byol|simsiam")
    p.add_argument("--features", action="store_true", help="semi-*: frozen ImageNet Lite0 features (cached) instead of pixels")
    a = p.parse_args()
    if a.target == "semi-250":
        semi(25, a.minutes or 60, a.method or "fixmatch", features=a.features, align=a.align)
    elif a.target == "semi-4000":
        semi(400, a.minutes or 90, a.method or "fixmatch", features=a.features, align=a.align)
    elif a.target == "semi-text":
        semi_text(a.labels, a.minutes or 10, a.method or "fixmatch", threshold=a.threshold, align=a.align)
    elif a.target == "mlm":
        mlm(a.minutes or 10, a.labels)
    elif a.target == "ssl-probe":
        ssl_probe(a.minutes or 60, a.method or "simclr")
    else:
        continued(a.minutes or 60, a.method or "simclr")


if __name__ == "__main__":
    main()
