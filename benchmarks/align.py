"""Alignment benchmarks (issue 6, items 3-4): one command per target, each plain `tuneforge`
commands (align, zeroshot), printed as they run.

    python benchmarks/align.py flickr8k [--sweep]   # text->image / image->text R@1/5/10 on the 125 official test
                                               # images (625 captions); target text->image R@5 >= 40%;
                                               # --sweep picks the head settings on the dev images first
    python benchmarks/align.py cifar10 [--per-class 100]   # zero-shot CIFAR-10 test with the flickr8k pair (reference)
    python benchmarks/align.py fashion [--flickr-too]      # zero-shot masterCategory of fashion_products (224 px), target >= 70%

`fashion` aligns on (image, productDisplayName) pairs of a seeded 60/10/30 split *by image*
and classifies the 30% held-out images (never seen by alignment) by prompts: masterCategory
labels are never used for training. `--flickr-too` also scores the flickr8k pair (no fashion
data at all) on the same held-out images. Each appends a JSON line with the commands, date,
`uptime` load, wall time and numbers (beside random chance) to benchmarks/results/align.jsonl.
Datasets: ../shared/datasets (or $TUNEFORGE_DATASETS). Run timed: `flock
/tmp/tuneforge-bench.lock .venv/bin/python benchmarks/align.py ...`. Encoder features are cached
in ~/.cache/tuneforge/features (per image: encoder weights, size, file contents), so a rerun
costs seconds; the first run is dominated by efficientnet_lite0's forward passes.
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
RESULTS = ROOT / "benchmarks" / "results" / "align.jsonl"
WORK = Path("/tmp/tuneforge-bench")
TF = [sys.executable, "-m", "tuneforge"]
FLICKR_RUN = WORK / "align-flickr8k"
PROMPTS = ["a photo of a {}.", "a picture of a {}.", "a close-up photo of a {}.", "a blurry photo of a {}.",
           "a photo of the {}.", "a good photo of a {}."]
FASHION_PROMPTS = ["a photo of {}.", "a product photo of {}.", "{}", "a picture of {} for sale."]
# The words put into the prompts for each masterCategory (the label itself is used too, as its own
# line in the results): what a person would write for the category; no image was looked at.
FASHION_NAMES = {"Apparel": "clothing", "Accessories": "an accessory such as a bag, watch, belt, wallet or jewellery",
                 "Footwear": "shoes", "Personal Care": "cosmetics, perfume or nail polish", "Free Items": "a free gift",
                 "Sporting Goods": "sports equipment"}
# A third wording: the kinds of thing a shop files under each category, written from general
# knowledge (not read off the dataset's subCategory/articleType columns); `zeroshot` scores a
# class by its best-matching kind (CHiLS). Socks are left out: shops file them either way.
FASHION_KINDS = {"Apparel": "shirt|t-shirt|top|dress|jeans|trousers|shorts|skirt|jacket|sweater|sweatshirt|kurta|saree|"
                            "leggings|track pants|bra|briefs|nightwear",
                 "Accessories": "watch|handbag|backpack|wallet|belt|sunglasses|jewellery|earrings|necklace|bracelet|ring|"
                                "tie|cap|scarf",
                 "Footwear": "shoes|sneakers|sports shoes|formal shoes|sandals|flip flops|heels|flats|boots|slippers",
                 "Personal Care": "perfume|deodorant|lipstick|nail polish|makeup|skin cream|face wash",
                 "Free Items": "free gift|free pouch", "Sporting Goods": "ball|racket|bat|sports equipment"}


def cmd(args: list[str]) -> str:
    return "tuneforge " + " ".join(shlex.quote(a) for a in args)


def run(args: list[str]) -> tuple[float, str]:
    print("$ " + cmd(args), flush=True)
    t0 = time.perf_counter()
    out = subprocess.run(TF + args, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
    print(out, end="", flush=True)
    return time.perf_counter() - t0, out


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def record(name: str, commands: list[str], **numbers) -> None:
    rec = {"benchmark": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
           "commands": commands, **numbers}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec, indent=1))


def align_flickr(extra: list[str]) -> tuple[list[str], float]:
    fl = DATASETS / "flickr8k"
    args = ["align", "--data", str(fl / "captions.csv"), "--image-column", "image", "--text-column", "caption",
            "--image-root", str(fl / "images"), "--train-list", str(fl / "Flickr_8k.trainImages.txt"),
            "--val-list", str(fl / "Flickr_8k.devImages.txt"), "--test-list", str(fl / "Flickr_8k.testImages.txt"),
            "--out", str(FLICKR_RUN), "--no-progress", *extra]
    wall, _ = run(args)
    return args, wall


SWEEP = {"linear": [], "linear-drop0.3": ["--dropout", "0.3"], "mlp": ["--head", "mlp"],
         "mlp-drop0.3": ["--head", "mlp", "--dropout", "0.3"], "linear-512-lr3e-3": ["--embed-dim", "512", "--lr", "3e-3"],
         "linear-batch128": ["--batch-size", "128"]}


def sweep() -> list[str]:
    """Head settings compared on the dev images only (val Recall@5, text -> image); returns the
    flags of the best. The features are cached, so each setting costs seconds."""
    scores, commands = {}, []
    fl = DATASETS / "flickr8k"
    for name, flags in SWEEP.items():
        out = WORK / "align-flickr8k-sweep" / name
        args = ["align", "--data", str(fl / "captions.csv"), "--image-root", str(fl / "images"),
                "--train-list", str(fl / "Flickr_8k.trainImages.txt"), "--val-list", str(fl / "Flickr_8k.devImages.txt"),
                "--out", str(out), "--no-progress", *flags]
        run(args)
        v = json.loads((out / "report.json").read_text())["retrieval"]["val"]
        scores[name] = (v["text_to_image"]["R@5"], v["image_to_text"]["R@5"])
        commands.append(cmd(args))
    best = max(scores, key=scores.get)
    print(json.dumps({"sweep_val_R@5 (t2i, i2t)": scores, "best": best}), flush=True)
    record("flickr8k-sweep", commands, val_recall_at_5=scores, best=best, note="dev images only; test not computed")
    return SWEEP[best]


def flickr8k(a: argparse.Namespace) -> None:
    extra = (sweep() if a.sweep else []) + a.extra
    args, wall = align_flickr(extra)
    r = json.loads((FLICKR_RUN / "report.json").read_text())
    t = r["retrieval"]["test"]
    record("flickr8k", [cmd(args)], wall_s=round(wall, 1), feature_s=r["data"]["feature_s"], fit_s=r["fit_s"],
           epochs_run=r["epochs_run"], best_epoch=r["best_epoch"], temperature=r["temperature"],
           test_images=t["n_images"], test_captions=t["n_texts"], text_to_image=t["text_to_image"],
           image_to_text=t["image_to_text"], chance=t["chance"], val=r["retrieval"].get("val"),
           image_size=r["data"]["image_size"], target="text->image R@5 >= 0.40",
           met=t["text_to_image"]["R@5"] >= 0.40)


def cifar10(a: argparse.Namespace) -> None:
    if not (FLICKR_RUN / "model" / "config.json").is_file():
        align_flickr([])
    args = ["zeroshot", str(FLICKR_RUN), "--data", str(DATASETS / "cifar10" / "test"), "--prompts", *PROMPTS,
            "--out", str(WORK / "zeroshot-cifar10"), "--json"]
    if a.per_class:
        args += ["--limit-per-class", str(a.per_class)]
    wall, out = run(args)
    s = last_json(out)
    record("cifar10-zeroshot", [cmd(args)], wall_s=round(wall, 1), accuracy=s["accuracy"], n=s["n"],
           chance=s["chance"], majority=s["majority"], aligned_on="flickr8k train (753 images, 3765 captions)")


def fashion(a: argparse.Namespace) -> None:
    fp = DATASETS / "fashion_products"
    run_dir = WORK / "align-fashion"
    data = fp / "metadata.csv"
    if a.rows:  # the first N rows of metadata.csv (file order), image paths made absolute
        rows = list(csv.DictReader(open(data, newline="", encoding="utf-8")))[:a.rows]
        data = WORK / f"fashion-first{a.rows}.csv"
        with open(data, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows([{**r, "image": str(fp / r["image"])} for r in rows])
    args = ["align", "--data", str(data), "--image-column", "image", "--text-column", "productDisplayName",
            "--image-size", str(a.image_size), "--no-flip", "--val-fraction", "0.1", "--test-fraction", "0.3",
            "--out", str(run_dir), "--no-progress", *a.extra]
    wall, _ = run(args)
    commands = [cmd(args)]
    r = json.loads((run_dir / "report.json").read_text())
    # the held-out images (alignment never saw them or their titles) as a table for zeroshot
    split = json.loads((run_dir / "split.json").read_text())
    held = {str((Path(split["image_root"]) / p).resolve()) for p in split["test"]}
    rows = [row for row in csv.DictReader(open(fp / "metadata.csv", newline="", encoding="utf-8"))
            if str((fp / row["image"]).resolve()) in held]
    table = WORK / "fashion-heldout.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    results = {}
    runs = [("fashion-titles", run_dir)] + ([("flickr8k", FLICKR_RUN)] if a.flickr_too else [])
    for name, pair in runs:
        if name == "flickr8k" and not (pair / "model" / "config.json").is_file():
            align_flickr([])
        for words in ("labels", "described", "kinds"):
            zs = ["zeroshot", str(pair), "--table", str(table), "--image-column", "image", "--label-column", "masterCategory",
                  "--image-root", str(fp), "--prompts", *FASHION_PROMPTS, "--out", str(WORK / f"zeroshot-fashion-{name}-{words}"),
                  "--json"]
            if words != "labels":
                names = FASHION_NAMES if words == "described" else FASHION_KINDS
                zs += [x for k, v in names.items() for x in ("--class-name", f"{k}={v}")]
            w2, out = run(zs)
            commands.append(cmd(zs))
            s = last_json(out)
            results[f"{name}/{words}"] = {"accuracy": s["accuracy"], "n": s["n"], "wall_s": round(w2, 1),
                                          "macro_f1": json.loads((WORK / f"zeroshot-fashion-{name}-{words}" / "report.json")
                                                                 .read_text())["test"]["macro_f1"]}
    best = max(v["accuracy"] for v in results.values())
    record("fashion-zeroshot-mastercategory", commands, align_wall_s=round(wall, 1), feature_s=r["data"]["feature_s"],
           align_images=r["data"]["images"], image_size=a.image_size, heldout_images=len(rows), table_rows=a.rows or "all",
           chance=1 / 6, majority=s["majority"], zeroshot=results,
           fashion_title_retrieval_test=r["retrieval"]["test"]["text_to_image"],
           target="masterCategory zero-shot accuracy >= 0.70", met=best >= 0.70)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="which", required=True)
    f = sub.add_parser("flickr8k")
    f.add_argument("--sweep", action="store_true", help="first pick the head settings on the dev images (val R@5)")
    f.add_argument("extra", nargs=argparse.REMAINDER, help="more `tuneforge align` flags")
    c = sub.add_parser("cifar10")
    c.add_argument("--per-class", type=int, default=100, help="test images per class (0: all 1,000)")
    fa = sub.add_parser("fashion")
    fa.add_argument("--image-size", type=int, default=224)
    fa.add_argument("--rows", type=int, default=None, help="use only the first N rows of metadata.csv")
    fa.add_argument("--flickr-too", action="store_true")
    fa.add_argument("extra", nargs=argparse.REMAINDER, help="more `tuneforge align` flags")
    a = p.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    {"flickr8k": flickr8k, "cifar10": cifar10, "fashion": fashion}[a.which](a)


if __name__ == "__main__":
    main()
