"""Every command line of README.md's ```bash blocks and every ```python block, run as written on
small real data, in README order.

README.md is parsed when the test runs (nothing is copied here): a block is one test (its README
line in the id), its lines run in order, and every block runs after the earlier blocks of its
workspace (selecting one block with -k runs those first). Two workspaces, each a tmp folder
holding the data under the names the README uses (built below from ../shared/datasets):
`cli/` for the shell blocks, `py/` for the Python blocks, because the Python blocks repeat the
shell ones ("The same in Python": `out="runs/pets"` again) for a reader who follows one or the other.

What is not run as written is listed here, each with its reason: EXCLUDED (lines not run),
PLACEHOLDERS (README shorthand expanded), OVERRIDES (flags appended to a line that would take
minutes even on small data), SERVER_PORT (serve and curl on a free port instead of 8000).
A path a README line names that no builder makes fails with the name of the builder to add.
"""
from __future__ import annotations

import ast
import contextlib
import csv
import json
import math
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import DATASETS, cifar_subset, flickr_subset
from tuneforge.cli import main

# 5.6 min on a quiet 2-core machine (15 under load): not part of `make test` yet (`make test-readme`; pyproject addopts)
pytestmark = [pytest.mark.slow, pytest.mark.readme]

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Lines not run, matched by their start, with why.
EXCLUDED = {
    "make demo": "CI runs `make demo` itself on a fresh checkout (it creates .venv and installs)",
    "make test": "CI runs `make test` itself; running the suite from inside the suite would recurse",
    "pip install": "installs into the environment; the test environment already has the [serve] extra",
}
# README shorthand and how a line using it is run.
PLACEHOLDERS = {
    "tuneforge fit ...": "the block's previous `tuneforge fit` line, its --out dropped (a new run folder) and each "
                         "flag given after `...` replacing that flag's value there",
    "[--flag value]": "an optional part: the line runs once without it and once with it",
}
# Flags appended to a line (matched by a substring of the line as written) that would take minutes
# even on the small data below. Keep this short: each entry is a line not run exactly as written.
# The image quick start fine-tunes EfficientNet-Lite0 at its default 224 px: on the 32 px CIFAR-10
# photos below that is ~3 images/s on a loaded 2-core CPU (4 min for this one line); 64 px is 12x less.
OVERRIDES: dict[str, str] = {
    "--data photos --model efficientnet_lite0 --epochs 5": "--image-size 64",
    "--method simclr --max-minutes 10": "--epochs 2",
    # the semi recipe is 2,000 steps (20 minutes here): a few steps show the line works
    "--recipe semi --unlabeled unlabeled/ --semi fixmatch --max-minutes 20": "--epochs 1 --semi-steps 4",
    "--recipe semi --epochs 250": "--epochs 20",
    "--method mlm --model minilm --data reviews.txt --max-minutes 10": "--epochs 2",
    # the uncached frozen backbone (RandAugment changes pixels every step) at 224 px: minutes; 64 px as above
    "--augment flip,randaugment,erase=0.25,mixup=0.2 --ema 0.99": "--image-size 64",
    # a full MiniLM fine-tune runs ~10 sentences/s on a loaded 2-core CPU: 10 epochs would be 5 min a line
    "--columns text,label --model minilm": "--epochs 2",
    # a ViT at 224 px costs 14x the 64 px of the small photos here
    "--model timm:vit_tiny_patch16_224 --weights vit_tiny.safetensors --image-size 224": "--image-size 64",
    # --model auto on the 300 sentences of sst2/: a budget that fits the cheap members
    "--model auto --time-budget 15": "--time-budget 0.5",
    # the search quick start: 30 trials, then 10 more; 2 + 1 trials (of 2 epochs: build_search_yaml) show it works
    "search --config search.yaml --out runs/search --trials 30": "--trials 2",
    "search --resume runs/search --trials 40": "--trials 3",
    # "On a GPU": the same lines on this CPU-only machine (a later --device wins); fp16 convolutions on a
    # CPU run at a fraction of fp32's speed, so the fp16 line runs fp32 here (tests/test_device.py trains fp16)
    "--recipe fast --device cuda --precision bf16": "--device cpu",
    "--recipe balanced --device cuda:0 --precision fp16": "--device cpu --precision fp32",
    "img1.jpg --device cuda": "--device cpu",
}
# Lines and Python blocks (by a substring) that run but learn too little on the small data here to be
# held to above-chance accuracy: seed-cnn from scratch for 2-3 epochs of ~5 steps. Each is a finding
# (README shows an epoch count that learns nothing on a small folder); the run must still complete
# with a report.
LEARNS_LITTLE: dict[str, str] = {
    'data=pairs, model="seed-cnn", epochs=2': "seed-cnn from scratch, 2 epochs of 162 images",
    'model="seed-cnn", epochs=3, callbacks=[StopWhenGood()]': "seed-cnn from scratch, 3 epochs of 162 images",
    'model="seed-cnn", lr="auto", epochs=3': "seed-cnn, 3 epochs at lr_find's suggestion (which varies 6x "
                                              "between runs on the same data: 0.0028 / 0.018)",
    "--model seed-cnn --lr auto --epochs 3": "the same from the command line (test accuracy 0.55 or 0.30)",
    "--columns text,label --model tfidf": "TF-IDF on 270 SST-2 sentences: 0.57 test (0.72 with 3,000: "
                                          "tests/test_tfidf_bundle.py)",
    "--recipe semi --unlabeled unlabeled/ --semi fixmatch --max-minutes 20": "4 FixMatch steps (OVERRIDES)",
    "tuneforge evaluate runs/semi --data photos": "evaluates the 4-step FixMatch run above",
    "--model auto --time-budget 15": "30 s (OVERRIDES) on 270 SST-2 sentences: under load only the TF-IDF member "
                                     "fits, 0.57-0.58 test as above (quiet: minilm-frozen too)",
    "--model minilm --lora": "LoRA, 2 epochs (OVERRIDES) of 270 SST-2 sentences: test 0.55 (full fine-tune: above 0.6)",
    "--recipe fast --device cuda --precision bf16": "the fast recipe's fast-cnn from scratch: 2 epochs of one "
                                                    "256-image step on 162 images (0.33 test)",
    "--labels-per-class 10 --unlabeled reviews.txt --semi fixmatch --freeze backbone":
        "20 labels + FixMatch on frozen MiniLM features: val 0.50 on 20 val texts",
}
# The same for Python blocks: text inserted after a substring of the block (before the call's `)`).
PY_OVERRIDES: dict[str, str] = {
    'model="efficientnet_lite0", epochs=5, out="runs/pets"': ", image_size=64",
    'recipe="semi", unlabeled="unlabeled/", semi="fixmatch", max_minutes=20': ", epochs=1, semi_steps=4",
    'method="simclr", probe="photos/", max_minutes=10': ", epochs=2",
}
# `tuneforge serve` gets `--port P` (a free port) and curl's 127.0.0.1:8000 becomes 127.0.0.1:P: port
# 8000 may be taken on a test machine.
SERVER_PORT = "--port"

# Flags whose value is something a line writes, not data it reads.
OUTPUT_FLAGS = {"--out", "--output"}


# ------------------------------------------------------------------------------------------- data

def _sst2_lines(name: str, start: int, n: int) -> list[tuple[str, str]]:
    lines = (DATASETS / "sst2" / name).read_text(encoding="utf-8").splitlines()[start:start + n]
    return [tuple(l.rsplit("\t", 1)) for l in lines]


def _write_csv(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _cifar(split: str, cls: str, start: int, n: int) -> list[Path]:
    return sorted((DATASETS / "cifar10" / split / cls).iterdir())[start:start + n]


def _link_all(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        os.symlink(f, folder / f"{f.parent.name}-{f.name}")  # CIFAR's names repeat across classes


PHOTO_CLASSES = ["airplane", "frog", "truck"]


def build_photos(ws: Path) -> None:
    """photos/: class folders train/ and test/ (3 CIFAR-10 classes, 60 + 30 images each)."""
    cifar_subset(ws / "photos", PHOTO_CLASSES, {"train": 60, "test": 30})


def build_other_photos(ws: Path) -> None:
    """other_photos/: labelled class folders for `evaluate`, other CIFAR-10 test images."""
    for c in PHOTO_CLASSES:
        _link_all(_cifar("test", c, 100, 15), ws / "other_photos" / c)


def build_img1_jpg(ws: Path) -> None:
    os.symlink(_cifar("test", "frog", 200, 1)[0], ws / "img1.jpg")


def build_more_images(ws: Path) -> None:
    """more_images/: a plain folder of images."""
    _link_all([f for c in PHOTO_CLASSES for f in _cifar("test", c, 210, 3)], ws / "more_images")


def build_cat_jpg(ws: Path) -> None:
    os.symlink(_cifar("test", "cat", 0, 1)[0], ws / "cat.jpg")


def build_unlabeled(ws: Path) -> None:
    """unlabeled/: nested folders of CIFAR-10 train images none of photos/ uses, 5 classes."""
    for i, c in enumerate(PHOTO_CLASSES + ["cat", "ship"]):
        _link_all(_cifar("train", c, 1000, 60), ws / "unlabeled" / f"batch{i % 2}" / f"part{i}")


def build_pets(ws: Path) -> None:
    """pets/: class folders (cat, dog) for zero-shot classification."""
    for c in ("cat", "dog"):
        _link_all(_cifar("test", c, 300, 10), ws / "pets" / c)


def build_reviews(ws: Path) -> None:
    """reviews/train.csv and reviews/other.csv (header text,label): SST-2 sentences, labels negative/positive."""
    names = {"0": "negative", "1": "positive"}
    _write_csv(ws / "reviews" / "train.csv", ["text", "label"],
               [(t, names[y]) for t, y in _sst2_lines("sentiment-train", 0, 500)])
    _write_csv(ws / "reviews" / "other.csv", ["text", "label"],
               [(t, names[y]) for t, y in _sst2_lines("sentiment-dev", 0, 150)])


def build_reviews_val_csv(ws: Path) -> None:
    """reviews-val.csv (header text,label): SST-2 training sentences after reviews/train.csv's, for `ensemble --val`."""
    names = {"0": "negative", "1": "positive"}
    _write_csv(ws / "reviews-val.csv", ["text", "label"], [(t, names[y]) for t, y in _sst2_lines("sentiment-train", 500, 150)])


def build_reviews_txt(ws: Path) -> None:
    """reviews.txt: unlabeled SST-2 sentences, one a line."""
    (ws / "reviews.txt").write_text("".join(t + "\n" for t, _ in _sst2_lines("sentiment-train", 5000, 300)),
                                    encoding="utf-8")


def build_reviews_csv(ws: Path) -> None:
    """reviews.csv (columns review, sentiment): a rule a small GRU learns in 3 epochs ('zebra' means yes), so
    the notebook snippet's 3-epoch GRU has something to learn."""
    import random
    rng = random.Random(0)
    rows = []
    for i in range(300):
        words = [f"w{rng.randrange(30)}" for _ in range(rng.randrange(3, 8))]
        if i % 2:
            words.insert(rng.randrange(len(words)), "zebra")
        rows.append((" ".join(words), "yes" if i % 2 else "no"))
    _write_csv(ws / "reviews.csv", ["review", "sentiment"], rows)


def build_labelled_csv(ws: Path) -> None:
    """labelled.csv (text,label): SST-2 sentences, for the few-label text fit and the MLM probe."""
    _write_csv(ws / "labelled.csv", ["text", "label"], _sst2_lines("sentiment-train", 8000, 200))


def build_nlupp(ws: Path) -> None:
    """nlupp/train.json and nlupp/test.json: NLU++ banking folds 0-1 and 10 in their own layout
    ({"text", "intents": [...]}, a record without intents carries none)."""
    src = DATASETS / "nlupp_banking"
    (ws / "nlupp").mkdir(exist_ok=True)
    for name, folds in (("train", (0, 1)), ("test", (10,))):
        records = [r for i in folds for r in json.loads((src / f"fold{i}.json").read_text(encoding="utf-8"))]
        (ws / "nlupp" / f"{name}.json").write_text(json.dumps(records), encoding="utf-8")


def build_sst2(ws: Path) -> None:
    """sst2/: SST-2's own headerless files, small."""
    for name, n in (("sentiment-train", 300), ("sentiment-dev", 100), ("sentiment-test", 100)):
        lines = (DATASETS / "sst2" / name).read_text(encoding="utf-8").splitlines(keepends=True)[:n]
        (ws / "sst2").mkdir(exist_ok=True)
        (ws / "sst2" / name).write_text("".join(lines), encoding="utf-8")


def _sst2_dataset(name: str, start: int, n: int):
    import datasets  # the dev extra's; tuneforge itself reads these with pyarrow
    rows = _sst2_lines(name, start, n)
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    return datasets.Dataset.from_dict({"sentence": [t.strip() for t, _ in rows], "label": [int(y) for _, y in rows]},
                                      features=features)


def build_sst2_hf(ws: Path) -> None:
    """sst2_hf/: a DatasetDict saved by `datasets` (train 2,000, validation 200, test 200 SST-2 sentences)."""
    import datasets
    datasets.DatasetDict(train=_sst2_dataset("sentiment-train", 0, 2000),
                         validation=_sst2_dataset("sentiment-dev", 0, 200),
                         test=_sst2_dataset("sentiment-test", 0, 200)).save_to_disk(str(ws / "sst2_hf"))


def build_sst2_test_parquet(ws: Path) -> None:
    """sst2_test.parquet: other SST-2 test sentences, written by `datasets` (ClassLabel in its metadata)."""
    _sst2_dataset("sentiment-test", 200, 300).to_parquet(str(ws / "sst2_test.parquet"))


def build_tnews(ws: Path) -> None:
    """tnews/train.tsv and tnews/dev.tsv: CLUE TNEWS, small."""
    (ws / "tnews").mkdir()
    for name, n in (("train.tsv", 3000), ("dev.tsv", 500)):
        lines = (DATASETS / "tnews" / name).read_text(encoding="utf-8").splitlines(keepends=True)[:n]
        (ws / "tnews" / name).write_text("".join(lines), encoding="utf-8")


FASHION_ROWS = 240


def _fashion_rows() -> tuple[list[str], list[list[str]]]:
    with open(DATASETS / "fashion_products" / "metadata.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def build_metadata_csv(ws: Path) -> None:
    """metadata.csv with its images/ (paths relative to the table): the first fashion products."""
    header, rows = _fashion_rows()
    (ws / "images").mkdir(exist_ok=True)
    for r in rows[:FASHION_ROWS]:
        os.symlink(DATASETS / "fashion_products" / r[0], ws / r[0])
    _write_csv(ws / "metadata.csv", header, rows[:FASHION_ROWS])


def build_new_csv(ws: Path) -> None:
    """new.csv: fashion rows not in metadata.csv, one without its image, one without its text."""
    header, rows = _fashion_rows()
    new = [list(r) for r in rows[FASHION_ROWS:FASHION_ROWS + 6]]
    (ws / "images").mkdir(exist_ok=True)
    for r in new:
        os.symlink(DATASETS / "fashion_products" / r[0], ws / r[0])
    new[0][0] = ""
    new[1][header.index("productDisplayName")] = ""
    _write_csv(ws / "new.csv", header, new)


def build_shoe_jpg(ws: Path) -> None:
    header, rows = _fashion_rows()
    shoe = next(r for r in rows[FASHION_ROWS:] if r[header.index("masterCategory")] == "Footwear")
    os.symlink(DATASETS / "fashion_products" / shoe[0], ws / "shoe.jpg")


FLICKR_IMAGES = 160


def build_captions(ws: Path) -> None:
    """captions.csv + images/ (Flickr8k, the first images by name), the official split lists of those images
    as train.txt / dev.txt / test.txt, test_captions.csv (the test images' captions), captions.txt (a
    text a line) and photo.jpg."""
    tmp = ws / ".flickr"
    tmp.mkdir()
    names, rows = flickr_subset(tmp, FLICKR_IMAGES)
    (ws / "images").mkdir(exist_ok=True)
    for n in names:
        os.symlink(DATASETS / "flickr8k" / "images" / n, ws / "images" / n)
    (tmp / "captions.csv").rename(ws / "captions.csv")
    for official, ours in (("train", "train.txt"), ("dev", "dev.txt"), ("test", "test.txt")):
        listed = set((DATASETS / "flickr8k" / f"Flickr_8k.{official}Images.txt").read_text().split())
        (ws / ours).write_text("".join(n + "\n" for n in names if n in listed))
    test = set((ws / "test.txt").read_text().split())
    _write_csv(ws / "test_captions.csv", ["image", "caption"], [(r["image"], r["caption"]) for r in rows if r["image"] in test])
    (ws / "captions.txt").write_text("".join(r["caption"] + "\n" for r in rows[:40]), encoding="utf-8")
    os.symlink(DATASETS / "flickr8k" / "images" / sorted(test)[0], ws / "photo.jpg")
    for f in tmp.rglob("*"):
        if f.is_symlink():
            f.unlink()


def build_vit_tiny_safetensors(ws: Path) -> None:
    """vit_tiny.safetensors: a timm vit_tiny_patch16_224 state dict, classifier included (random init:
    no pretrained copy is available offline here), as `save_file(model.state_dict(), ...)` writes it."""
    import timm
    import torch
    from safetensors.torch import save_file
    torch.manual_seed(0)
    save_file(timm.create_model("vit_tiny_patch16_224").state_dict(), str(ws / "vit_tiny.safetensors"))


def build_ratings_csv(ws: Path) -> None:
    """ratings.csv (review,score): generated reviews whose score is the sum of their words' weights (the
    regression quick start: a known linear target)."""
    import random
    rng = random.Random(0)
    weights = {"superb": 4, "great": 3, "good": 2, "nice": 1.5, "fine": 1, "ok": 0.5, "meh": -0.5, "poor": -1,
               "bad": -2, "awful": -3, "acting": 0, "score": 0, "and": 0, "a": 0}
    rows = []
    for _ in range(400):
        words = [rng.choice(list(weights)) for _ in range(rng.randrange(3, 8))]
        rows.append((" ".join(words), f"{sum(weights[w] for w in words):.2f}"))
    _write_csv(ws / "ratings.csv", ["review", "score"], rows)


def build_brightness_csv(ws: Path) -> None:
    """brightness.csv (file,value) and brightness/: 32 px images whose value is 10 x their brightness + 3."""
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(0)
    (ws / "brightness").mkdir(exist_ok=True)
    rows = []
    for i in range(240):
        b = rng.uniform(0.1, 0.9)
        a = np.clip(rng.normal(0, 0.08, (32, 32, 3)) + b, 0, 1)
        Image.fromarray((a * 255).astype(np.uint8)).save(ws / "brightness" / f"{i}.png")
        rows.append((f"brightness/{i}.png", f"{10 * b + 3:.4f}"))
    _write_csv(ws / "brightness.csv", ["file", "value"], rows)


def build_findings_csv(ws: Path) -> None:
    """findings.csv and findings_test.csv (path,labels) with 48 px images in xrays/: the colours of
    the squares an image holds are its labels (tests/test_multilabel_images.py draws them)."""
    from test_multilabel_images import write_table
    write_table(ws, "findings", 240, 0, folder="xrays", side=48)
    write_table(ws, "findings_test", 80, 1, folder="xrays", side=48)


def build_vix_csv(ws: Path) -> None:
    """vix.csv: the last 600 trading days of the VIX series (DATE,OPEN,HIGH,LOW,CLOSE)."""
    lines = (DATASETS / "finance_vix" / "vix-daily.csv").read_text().splitlines()
    (ws / "vix.csv").write_text("\n".join([lines[0], *lines[-600:]]) + "\n")


def build_search_yaml(ws: Path) -> None:
    """search.yaml: the README's search file (its ```yaml block starting `fit:`) as written, but for
    `epochs: 10`, which becomes 2 (each trial a few seconds on photos/)."""
    text = re.search(r"^```yaml\n(fit:.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M).group(1)
    assert "  epochs: 10\n" in text, "README's search file changed: update build_search_yaml"
    if not (ws / "photos").exists():
        build_photos(ws)
    (ws / "search.yaml").write_text(text.replace("  epochs: 10\n", "  epochs: 2\n"), encoding="utf-8")


# The data a README line may name, by its top-level name in the workspace, and what makes it.
def build_pneumoniamnist_npz(ws: Path) -> None:
    """pneumoniamnist.npz: a balanced slice of the real MedMNIST file in its own layout (100/40/50 per class)."""
    import numpy as np
    src = np.load(DATASETS / "medmnist" / "pneumoniamnist.npz")
    out = {}
    for split, n in (("train", 100), ("val", 40), ("test", 50)):
        labels = src[f"{split}_labels"][:, 0]
        idx = np.sort(np.concatenate([np.flatnonzero(labels == c)[:n] for c in (0, 1)]))
        out[f"{split}_images"], out[f"{split}_labels"] = src[f"{split}_images"][idx], src[f"{split}_labels"][idx]
    np.savez(ws / "pneumoniamnist.npz", **out)


DATA: dict[str, Callable[[Path], None]] = {
    "photos": build_photos, "other_photos": build_other_photos, "img1.jpg": build_img1_jpg,
    "more_images": build_more_images, "cat.jpg": build_cat_jpg, "unlabeled": build_unlabeled, "pets": build_pets,
    "reviews": build_reviews, "reviews.txt": build_reviews_txt, "reviews.csv": build_reviews_csv,
    "reviews-val.csv": build_reviews_val_csv,
    "labelled.csv": build_labelled_csv, "sst2": build_sst2, "tnews": build_tnews, "nlupp": build_nlupp,
    "metadata.csv": build_metadata_csv, "new.csv": build_new_csv, "shoe.jpg": build_shoe_jpg,
    "captions.csv": build_captions, "sst2_hf": build_sst2_hf, "sst2_test.parquet": build_sst2_test_parquet,
    "vit_tiny.safetensors": build_vit_tiny_safetensors, "search.yaml": build_search_yaml,
    "ratings.csv": build_ratings_csv, "brightness.csv": build_brightness_csv, "vix.csv": build_vix_csv,
    "pneumoniamnist.npz": build_pneumoniamnist_npz, "findings.csv": build_findings_csv,
}
# Names a builder makes besides its own.
ALSO_MADE = {"images": "captions.csv", "train.txt": "captions.csv", "dev.txt": "captions.csv",
             "test.txt": "captions.csv", "test_captions.csv": "captions.csv", "captions.txt": "captions.csv",
             "photo.jpg": "captions.csv", "brightness": "brightness.csv", "findings_test.csv": "findings.csv",
             "xrays": "findings.csv"}


# ------------------------------------------------------------------------------------------- README parsing

@dataclass
class Block:
    kind: str  # "bash" or "python"
    line: int  # README line of the opening fence
    heading: str
    code: str

    @property
    def id(self) -> str:
        words = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"L{self.line}-{self.kind}-{words[:40]}"

    @property
    def workspace(self) -> str:
        return "py" if self.kind == "python" else "cli"


def readme_blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    prose = re.sub(r"^ *```.*?^ *```", "", text, flags=re.S | re.M)  # a `# comment` in a block is no heading
    blocks = []
    for m in re.finditer(r"^(?P<indent> *)```(?P<kind>bash|python)\n(?P<body>.*?)^(?P=indent)```", text, re.S | re.M):
        before = text[:m.start()]
        headings = [h for h in re.findall(r"^#+ (.+)$", before, re.M) if h in re.findall(r"^#+ (.+)$", prose, re.M)]
        indent = len(m.group("indent"))
        body = "".join(l[indent:] if l[:indent].isspace() else l for l in m.group("body").splitlines(keepends=True))
        blocks.append(Block(m.group("kind"), before.count("\n") + 1, headings[-1] if headings else "top", body))
    return blocks


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a # that starts a word outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def command_lines(block: Block) -> list[tuple[int, str]]:
    """(README line, command) for each command of a bash block: continuations joined, comments stripped."""
    out, pending, start = [], "", 0
    for i, raw in enumerate(block.code.splitlines()):
        if not pending:
            start = block.line + 1 + i
        joined = pending + raw
        if joined.rstrip().endswith("\\"):
            pending = joined.rstrip()[:-1] + " "
            continue
        pending = ""
        line = " ".join(_strip_comment(joined).split()) if "'" not in joined and '"' not in joined else _strip_comment(joined).strip()
        if line:
            out.append((start, line))
    return out


def _flag_groups(words: list[str]) -> list[list[str]]:
    groups: list[list[str]] = []
    for w in words:
        if w.startswith("--") or not groups:
            groups.append([w])
        else:
            groups[-1].append(w)
    return groups


def expand(lines: list[tuple[int, str]]) -> list[tuple[int, str, str]]:
    """(README line, as written, as run) for each command, PLACEHOLDERS expanded."""
    out, last_fit = [], None
    for n, line in lines:
        run = line
        if line.startswith("tuneforge fit ..."):
            assert last_fit, f"README.md:{n}: `tuneforge fit ...` with no `tuneforge fit` line before it in its block"
            given = _flag_groups(shlex.split(line[len("tuneforge fit ..."):]))
            replaced = {g[0] for g in given} | {"--out"}
            kept = [g for g in _flag_groups(shlex.split(last_fit)[2:]) if g[0] not in replaced]
            run = shlex.join(["tuneforge", "fit", *(w for g in kept + given for w in g)])
        elif line.startswith("tuneforge fit "):
            last_fit = line
        optional = re.search(r" \[(--[^\]]+)\]", run)
        if optional:
            out.append((n, line, run[:optional.start()] + run[optional.end():]))
            run = run[:optional.start()] + " " + optional.group(1) + run[optional.end():]
        out.append((n, line, run))
    return out


# ------------------------------------------------------------------------------------------- checks

def _chance_margin(k: int) -> float:
    """Accuracy a fit on the small data must beat: 1.5 x chance, at most chance + 0.1 (binary: 0.6; about two
    standard deviations of a chance accuracy on the ~100 test items used here)."""
    return min(1.5 / k, 1 / k + 0.1)


def check_regression_report(report: dict, where: str) -> None:
    """A regression learns its known linear target (R² > 0.5); a forecast reports MASE beside the naive
    forecast's (a real series' slice need not beat it: examples/finance)."""
    split = "test" if isinstance(report.get("test"), dict) else "val"
    m = report[split]
    if report.get("task") == "forecast":
        naive = report["forecast"]["baselines"]["naive"][split]
        assert math.isfinite(m["mase"]) and math.isfinite(naive["mase"]), f"{where}: {m} vs naive {naive}"
    else:
        assert m["r2"] > 0.5, f"{where}: {split} R² {m['r2']:.3f} on a known linear target"
def check_multilabel(metrics: dict, classes: list, where: str) -> None:
    """A multi-label model's micro-F1 above the chance anchor (every label predicted for every
    row: F1 = 2p / (1 + p), p the share of (row, label) pairs that are positive) by a margin."""
    p = metrics["labels_per_row"] / len(classes)
    assert metrics["micro_f1"] > 2 * p / (1 + p) + 0.1, f"{where}: micro-F1 {metrics['micro_f1']:.3f}, p {p:.3f}"


def check_fit_report(report: dict, where: str) -> None:
    if report.get("task") in ("regression", "forecast"):
        return check_regression_report(report, where)
    classes = report.get("classes") or []
    if report.get("task") == "multi-label":
        return check_multilabel(report.get("test") or report["val"], classes, where)
    split = "test" if (report.get("test") or {}).get("accuracy") is not None else "val"
    acc = (report.get(split) or {}).get("accuracy")
    assert acc is not None and len(classes) >= 2, f"{where}: report.json has no {split} accuracy / classes"
    assert acc > _chance_margin(len(classes)), (
        f"{where}: {split} accuracy {acc:.3f} with {len(classes)} classes is not above chance by a margin "
        f"(needs > {_chance_margin(len(classes)):.3f})")


def check_retrieval(report: dict, where: str) -> None:
    """An aligned pair's test Recall@1 both ways beats a random ranking's by half again."""
    test = report["retrieval"]["test"]
    for way in ("text_to_image", "image_to_text"):
        assert test[way]["R@1"] > 1.5 * test["chance"][way]["R@1"], f"{where}: {way} {test[way]} vs {test['chance'][way]}"


def classes_of(path: Path) -> list[str]:
    for f in (path / "report.json", path / "config.json", path / "model" / "config.json"):
        if f.is_file():
            found = json.loads(f.read_text()).get("classes")
            if found:
                return [str(c) for c in found]
    raise AssertionError(f"no classes found in {path}")


def _json_lines(out: str) -> list[dict]:
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def check_output(words: list[str], out: str, ws: Path, where: str) -> None:
    """What a command printed (and wrote) is what the README promises."""
    if words[0] == "torchrun":  # torchrun [its flags] -m tuneforge VERB ...: what that tuneforge line promises
        words = words[words.index("-m") + 1:]
    verb = words[1] if words[0] == "tuneforge" else words[0]
    positional = [w for w in words[2:] if not w.startswith("-")]
    if verb == "fit":
        printed = _json_lines(out)[-1]
        assert Path(printed["report"]).is_file(), f"{where}: printed report path {printed['report']} is missing"
        check_fit_report(json.loads((Path(printed["run"]) / "report.json").read_text()), where)
    elif verb == "evaluate" and _json_lines(out)[-1].get("rmse") is not None:  # a regressor or forecaster
        printed = _json_lines(out)[-1]
        assert Path(printed["report"]).is_file() and math.isfinite(printed["rmse"]), where
    elif verb == "evaluate":
        printed = _json_lines(out)[-1]
        assert Path(printed["report"]).is_file(), where
        k = len(classes_of(ws / positional[0]))
        if printed.get("micro_f1") is not None:
            return check_multilabel(json.loads(Path(printed["report"]).with_suffix(".json").read_text())["test"],
                                    classes_of(ws / positional[0]), where)
        assert printed["accuracy"] > _chance_margin(k), f"{where}: accuracy {printed['accuracy']} ({k} classes)"
    elif verb == "predict":
        classes = classes_of(ws / positional[0])
        if "--output" in words:
            rows = list(csv.DictReader(open(ws / words[words.index("--output") + 1])))
        else:
            rows = _json_lines(out)
        assert rows, f"{where}: no predictions"
        for r in rows:
            if classes == ["value"]:  # a regressor or forecaster answers a number
                assert math.isfinite(float(r["value"])), f"{where}: {r}"
                continue
            if "predicted" in r:  # multi-label: every label above its threshold, joined by '|'
                assert set(r["predicted"]) <= set(classes) and r["label"] == "|".join(r["predicted"]), f"{where}: {r}"
                continue
            assert r["label"] in classes, f"{where}: {r} is not one of {classes}"
    elif verb == "batch":
        rows = list(csv.DictReader(open(ws / words[words.index("--output") + 1])))
        classes = classes_of(ws / positional[0])
        assert rows and all(r["label"] in classes for r in rows), f"{where}: {rows[:3]}"
    elif verb == "curl":
        answer = json.loads(out)
        assert answer["label"] in classes_of(ws / "pets-bundle") and len(answer["top"]) == 3, f"{where}: {answer}"
    elif verb == "export":
        printed = _json_lines(out)[-1]
        bundle = Path(printed["bundle"])
        members = sorted(bundle.glob("members/*/config.json"))  # an ensemble: every member exported
        onnx = all((m.parent / "model.onnx").is_file() for m in members) if members else (bundle / "model.onnx").is_file()
        assert onnx and (printed["int8"] or "--quantize" not in words), f"{where}: {printed}"
    elif verb == "lr-find":
        assert math.isfinite(_json_lines(out)[-1]["suggested"]), where
    elif verb == "align":
        printed = _json_lines(out)[-1]
        report = json.loads((Path(printed["run"]) / "report.json").read_text())
        check_retrieval(report, where)
    elif verb == "pretrain":
        printed = _json_lines(out)[-1]
        assert Path(printed["backbone"]).is_file() and printed["probe_after"] is not None, f"{where}: {printed}"
    elif verb == "retrieve":
        assert _json_lines(out), f"{where}: printed nothing"
    elif verb == "embed":
        assert (ws / words[words.index("--out") + 1]).is_file(), where
    elif verb == "runs":  # a row per run folder named or below the folders named
        lines = out.strip().splitlines()
        rows = list(csv.DictReader(lines)) if "--format" in words and "csv" in words else lines[1:]
        assert len(rows) >= len([w for w in positional if (ws / w).is_dir()]) > 0, f"{where}: {out[:500]}"
    elif verb == "zeroshot":
        printed = _json_lines(out)[-1]
        assert 0 <= printed["accuracy"] <= 1 and printed["n"] > 0 and Path(printed["report"]).is_file(), f"{where}: {printed}"
    elif verb == "search":
        printed = _json_lines(out)[-1]
        report = json.loads((Path(printed["study"]) / "report.json").read_text())
        assert printed["best_trial"] is not None and (Path(printed["best_bundle"]) / "config.json").is_file(), \
            f"{where}: {printed}"
        assert report["best"]["value"] == max(t["value"] for t in report["trials"] if t["state"] == "complete"), where
    elif verb in ("models", "recipes"):
        assert len(out.splitlines()) >= 3, f"{where}: {out!r}"


# ------------------------------------------------------------------------------------------- running

@dataclass
class Session:
    root: Path
    done: dict[str, bool] = field(default_factory=dict)
    scope: dict = field(default_factory=dict)  # the Python blocks' shared namespace
    made: dict[str, set[str]] = field(default_factory=dict)  # per workspace: what lines wrote (--out, out=)

    def workspace(self, name: str) -> Path:
        ws = self.root / name
        if not ws.exists():
            ws.mkdir()
            for build in DATA.values():
                build(ws)
        return ws


@pytest.fixture(scope="session")
def session(tmp_path_factory) -> Session:
    return Session(tmp_path_factory.mktemp("readme"))


def _env(ws: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    env["TUNEFORGE_CACHE"] = str(ws / ".cache")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data_names(words: list[str]) -> list[str]:
    """The paths a command reads (not what it writes), relative to its folder."""
    names, skip = [], False
    for i, w in enumerate(words):
        if skip:
            skip = False
            continue
        if w in OUTPUT_FLAGS:
            skip = True
            continue
        if "=@" in w:  # curl -F file=@PATH
            w = w.split("=@", 1)[1]
        if w.startswith("-") or w.startswith("http") or " " in w or "=" in w:
            continue
        if "/" in w or re.search(r"\.[A-Za-z][A-Za-z0-9]{1,11}$", w) or (i > 0 and words[i - 1] in (
                "--data", "--test", "--val", "--probe", "--unlabeled", "--images", "--table", "--image-root", "--init")):
            names.append(w)
    return names


def _check_data(names: list[str], ws: Path, made: set[str], where: str) -> None:
    for name in names:
        top = Path(name).parts[0]
        if top == "runs" or name in made or top in made or (ws / name).exists():
            continue
        pytest.fail(f"{where} names `{name}`, which the README test's workspace lacks: add a builder for "
                    f"{top!r} to DATA in tests/test_readme.py (small real data from ../shared/datasets)")


def _python_names(code: str) -> tuple[list[str], set[str]]:
    """Path-like string constants of a Python block, and the values of its out= keywords."""
    tree = ast.parse(code)
    outs = {k.value.value for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords
            if k.arg == "out" and isinstance(k.value, ast.Constant)}
    divided = {id(n.right) for n in ast.walk(tree) if isinstance(n, ast.BinOp)}
    names = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and id(n) not in divided and " " not in n.value and "*" not in n.value
             and ("/" in n.value or re.search(r"\.[A-Za-z][A-Za-z0-9]{1,11}$", n.value))]
    data_kw = [k.value.value for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords
               if k.arg in ("data", "probe", "unlabeled", "images", "image_root") and isinstance(k.value, ast.Constant)]
    return names + data_kw, outs


class Servers:
    """The `tuneforge serve` processes a block started: up until the block ends."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.port: int | None = None

    def start(self, line: str, ws: Path, where: str) -> None:
        self.stop()
        self.port = _free_port()
        proc = subprocess.Popen(["bash", "-c", f"exec {line} {SERVER_PORT} {self.port}"], cwd=ws, env=_env(ws),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.procs.append(proc)
        import httpx
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"{where}: the server exited: {proc.stdout.read()}"
            assert time.monotonic() < deadline, f"{where}: /readyz never answered 200"
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        bundle = ws / shlex.split(line)[2]
        self._check_answers(bundle, where)

    def _check_answers(self, bundle: Path, where: str) -> None:
        """The started server answers a text and/or an image with one of the bundle's classes."""
        import httpx
        classes = classes_of(bundle)
        info = httpx.get(f"http://127.0.0.1:{self.port}/v1/info", timeout=30)
        assert info.status_code == 200, f"{where}: /v1/info {info.status_code}"
        page = httpx.get(f"http://127.0.0.1:{self.port}/", timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower(), f"{where}: the page"
        # a text: answered by a model that reads text, refused with a 4xx (never a 500) by an image model
        r = httpx.post(f"http://127.0.0.1:{self.port}/v1/predict", json={"text": "Nike Men Black Running Shoes"},
                       timeout=60)
        assert r.status_code == 200 and r.json()["label"] in classes or 400 <= r.status_code < 500, \
            f"{where}: POST a text: {r.status_code} {r.text[:300]}"

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs = []


# What a line that reads standard input (`-`) gets there, as if typed.
STDIN = "a gripping, beautifully acted story\nthe dullest film of the year\n"
SHELL = re.compile(r"[|<>;&]|^(?!tuneforge )")


def run_bash_block(block: Block, ws: Path, made: set[str], capsys) -> None:
    lines = command_lines(block)
    if all(any(line.startswith(k) for k in EXCLUDED) for _, line in lines):
        pytest.skip("; ".join(f"`{line}` not run: {EXCLUDED[k]}" for _, line in lines for k in EXCLUDED
                              if line.startswith(k)))
    servers = Servers()
    try:
        for n, written, line in expand(command_lines(block)):
            where = f"README.md:{n} `{written}`"
            if any(written.startswith(k) for k in EXCLUDED):
                continue
            for key, extra in OVERRIDES.items():
                if key in written:
                    line = f"{line} {extra}"
            words = shlex.split(line)
            _check_data(_data_names(words), ws, made, where)
            made.update(w for f in OUTPUT_FLAGS for i, w in enumerate(words[1:], 1) if words[i - 1] == f)
            if line.startswith("tuneforge serve "):
                servers.start(line, ws, where)
                continue
            stdin = STDIN if "-" in words else None
            # --nproc starts processes of their own, which print to the real stdout, not to capsys
            if stdin or SHELL.search(re.sub(r"'[^']*'|\"[^\"]*\"", "", line)) or "--nproc" in words:
                if servers.port:
                    line = line.replace("127.0.0.1:8000", f"127.0.0.1:{servers.port}")
                done = subprocess.run(["bash", "-c", line], cwd=ws, env=_env(ws), capture_output=True, text=True,
                                      input=stdin, timeout=600)
                assert done.returncode == 0, f"{where}: exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
                out = done.stdout
            else:
                capsys.readouterr()
                code = main(words[1:])
                captured = capsys.readouterr()
                assert code == 0, f"{where}: exit {code}\n{captured.err[-3000:]}"
                out = captured.out
            if any(key in written for key in LEARNS_LITTLE):
                assert _json_lines(out), f"{where}: printed nothing"
            else:
                check_output(words, out, ws, where)
    finally:
        servers.stop()


def run_python_block(block: Block, ws: Path, session: Session, made: set[str]) -> None:
    where = f"README.md:{block.line} (python block)"
    names, outs = _python_names(block.code)
    _check_data(names, ws, made | outs, where)
    made.update(outs)
    code = block.code
    for key, extra in PY_OVERRIDES.items():
        code = code.replace(key, key + extra)
    before = {k: id(v) for k, v in session.scope.items()}
    exec(compile(code, f"README.md:{block.line}", "exec"), session.scope)
    for name, value in session.scope.items():
        if before.get(name) == id(value):
            continue
        report = getattr(value, "report", None)
        if isinstance(report, dict) and report.get("classes") and getattr(value, "run_dir", None) is not None:
            if "retrieval" in report:
                check_retrieval(report, f"{where}: `{name}`")
                continue
            if any(key in block.code for key in LEARNS_LITTLE):
                assert (report.get("test") or report.get("val") or {}).get("accuracy") is not None, where
            else:
                check_fit_report(report, f"{where}: `{name}`")


BLOCKS = readme_blocks()


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[b.id for b in BLOCKS])
def test_readme_block(index: int, session: Session, capsys, monkeypatch) -> None:
    block = BLOCKS[index]
    for earlier in BLOCKS[:index]:  # what this block builds on, when it was not run yet (-k)
        if earlier.workspace == block.workspace and earlier.id not in session.done:
            with contextlib.suppress(pytest.skip.Exception):  # a block of excluded lines only
                _run(earlier, session, capsys, monkeypatch)
    _run(block, session, capsys, monkeypatch)


def _run(block: Block, session: Session, capsys, monkeypatch) -> None:
    ws = session.workspace(block.workspace)
    session.done[block.id] = False
    made = session.made.setdefault(block.workspace, set())
    monkeypatch.chdir(ws)
    monkeypatch.setenv("TUNEFORGE_CACHE", str(ws / ".cache"))
    if block.kind == "python":
        run_python_block(block, ws, session, made)
    else:
        run_bash_block(block, ws, made, capsys)
    session.done[block.id] = True


def test_readme_has_the_blocks_this_test_knows_how_to_run():
    """Every fenced code block is bash or python (anything else would go unrun), and every line is run,
    excluded or expanded by a rule above."""
    text = README.read_text(encoding="utf-8")
    fences = re.findall(r"^ *```(\w*)\n", text, re.M)
    opening = fences[::2]  # openings and closings alternate
    # a yaml block is a file the README shows (the search file): a builder writes it from the README (DATA)
    assert set(opening) <= {"bash", "python", "yaml", ""}, opening
    assert len(BLOCKS) == opening.count("bash") + opening.count("python")
    for block in BLOCKS:
        if block.kind == "bash":
            for n, line in command_lines(block):
                assert line.startswith(("tuneforge ", "curl ", "echo ", "torchrun ")) or any(line.startswith(k) for k in EXCLUDED), \
                    f"README.md:{n}: `{line}`: a command this test does not know how to run"
    for key in OVERRIDES:
        assert any(key in line for b in BLOCKS if b.kind == "bash" for _, line in command_lines(b)), \
            f"OVERRIDES key {key!r} matches no README line any more: remove it"
    for key in LEARNS_LITTLE:
        assert any(key in b.code for b in BLOCKS) or any(
            key in line for b in BLOCKS if b.kind == "bash" for _, line in command_lines(b)), \
            f"LEARNS_LITTLE key {key!r} matches no README line any more: remove it"
    for key in PY_OVERRIDES:
        assert any(key in b.code for b in BLOCKS if b.kind == "python"), \
            f"PY_OVERRIDES key {key!r} matches no README Python block any more: remove it"
