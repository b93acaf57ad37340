"""Data larger than memory (issue 19): CIFAR-10 decoded at 128 px (60,000 x 3 x 128 x 128 =
2.9 GB) trained from the memory-mapped cache (`--cache disk`) within 1.5 GB of anonymous memory,
the mapped path's images/s beside the in-memory path's at 64 px, and how time and memory grow
with the number of training images (3 sizes).

    python benchmarks/scale.py [--steps 8] [--batch-size 64] [--sizes 1250,2500,5000]

Each measurement is a fresh process (so its peak is its own) that does what `fit` does with the
data: `load_splits` (content hash of every file, the decode cache, the stratified 10% validation
split, split.json), then one shuffled pass of batch gathers over train and one in order over
val + test (the data path of an epoch and of evaluation: `BatchLoader`, uint8 -> float), then
`--steps` training steps of seed-cnn (augmentation, forward, backward, Adam) on shuffled batches:
images/s is over the steps after the first two. A thread samples RssAnon (and RssFile) from
/proc/self/status every 20 ms; the peak is reported. The decode into the cache is measured once
per size, cold, in a process of its own (`decode`); the measurements then read the cache.

Data: ../shared/datasets/cifar10 (TUNEFORGE_DATASETS); per-class limits take the first seeded N
per class of train/ (test/ whole). Cache and scratch files under $TUNEFORGE_BENCH_OUT (default
/tmp/tuneforge-bench)/scale. Results: benchmarks/results/scale.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("TUNEFORGE_DATASETS", ROOT.parent / "shared" / "datasets"))
OUT = Path(os.environ.get("TUNEFORGE_BENCH_OUT", "/tmp/tuneforge-bench")) / "scale"
RESULTS = ROOT / "benchmarks" / "results" / "scale.json"


def status() -> dict[str, int]:
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f) if k in ("RssAnon", "RssFile")}


class Peak(threading.Thread):
    """Samples RssAnon/RssFile every 20 ms; `.peak` holds the largest seen."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = status()
        self.running = True

    def run(self):
        while self.running:
            now = status()
            self.peak = {k: max(v, now[k]) for k, v in self.peak.items()}
            time.sleep(0.02)

    def stop(self) -> dict[str, int]:
        self.running = False
        self.join()
        return self.peak


def load(run: dict) -> tuple:
    """The fit's own data loading (tasks/image/fit.py load_splits) for `run`'s settings."""
    from tuneforge.config import FitConfig
    from tuneforge.tasks.image.fit import load_splits, resolve_splits
    cfg = FitConfig(data=str(DATASETS / "cifar10"), image_size=run["size"], cache=run["store"],
                    cache_dir=str(OUT / "cache"), limit_per_class=run.get("per_class"), seed=0, threads=2)
    run_dir = OUT / "runs" / f"{run['name']}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg, load_splits(cfg, run["size"], run_dir, *resolve_splits(cfg))


def child(run: dict) -> dict:
    import torch
    from tuneforge.core.data import BatchLoader
    from tuneforge.core.models import create_model
    from tuneforge.core.strategies import Supervised
    torch.set_num_threads(2)
    start = status()
    sampler = Peak()
    sampler.start()
    out = {**run, "rss_anon_start_mb": round(start["RssAnon"] / 2**20)}
    t0 = time.perf_counter()
    cfg, (train, val, test) = load(run)
    out["load_s"] = round(time.perf_counter() - t0, 2)
    out["train"], out["val"], out["test"] = len(train), len(val), len(test)
    out["decoded_gb"] = round(sum(s.images.numel() for s in (train, val, test)) / 1e9, 3)
    if run["mode"] == "measure":
        t0 = time.perf_counter()
        for x, _ in BatchLoader(train.images, train.labels, 256, shuffle=True, seed=1).epoch(0):
            x.float().div_(255.0)
        out["train_pass_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        for s in (val, test):
            for x, _ in BatchLoader(s.images, s.labels, 256).epoch(0):
                x.float().div_(255.0)
        out["eval_pass_s"] = round(time.perf_counter() - t0, 2)
        torch.manual_seed(0)
        model = create_model("seed-cnn", 10, run["size"], pretrained=False).to(memory_format=torch.channels_last)
        model.channels_last = True
        strategy = Supervised(cfg.augment, 0.0, False)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        gen = torch.Generator().manual_seed(0)
        times = []
        batches = BatchLoader(train.images, train.labels, run["batch_size"], shuffle=True, seed=0).epoch(0)
        model.train()
        for _ in range(run["steps"]):
            t0 = time.perf_counter()
            loss = strategy.train_step(model, next(batches), gen)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        out["images_per_s"] = round(run["batch_size"] * (len(times) - 2) / sum(times[2:]), 1)
    if run["mode"] == "alternate":
        out.update(alternate(run, cfg, train))
    peak = sampler.stop()
    out["rss_anon_peak_mb"] = round(peak["RssAnon"] / 2**20)
    out["rss_file_peak_mb"] = round(peak["RssFile"] / 2**20)
    return out


def alternate(run: dict, cfg, mapped) -> dict:
    """The in-memory and the mapped training set in one process, a step from each in turn (the
    order flipped every step) on the same batches with the same model and seed: load drifts on a
    shared machine, and both sides see the same drift."""
    import torch
    from tuneforge.core.data import BatchLoader
    from tuneforge.core.models import create_model
    from tuneforge.core.strategies import Supervised
    _, (held, _, _) = load({**run, "store": "memory"})
    sets = {"memory": held, "disk": mapped}
    assert torch.equal(held.images[:100], mapped.images[:100])
    out: dict = {}
    for rep in range(2):  # gathers only: the first pass over the mapped set faults its pages in
        for store, s in sets.items():
            t0 = time.perf_counter()
            for x, _ in BatchLoader(s.images, s.labels, 256, shuffle=True, seed=rep).epoch(0):
                x.float().div_(255.0)
            out[f"train_pass_s_{store}_{rep + 1}"] = round(time.perf_counter() - t0, 2)
    models, opts, batches, times = {}, {}, {}, {}
    for store, s in sets.items():
        torch.manual_seed(0)
        models[store] = create_model("seed-cnn", 10, run["size"], pretrained=False).to(memory_format=torch.channels_last)
        models[store].channels_last = True
        models[store].train()
        opts[store] = torch.optim.Adam(models[store].parameters(), 1e-3)
        batches[store] = BatchLoader(s.images, s.labels, run["batch_size"], shuffle=True, seed=0).epoch(0)
        times[store] = []
    strategy = Supervised(cfg.augment, 0.0, False)
    gens = {store: torch.Generator().manual_seed(0) for store in sets}
    rng = {store: torch.get_rng_state() for store in sets}  # dropout's: each side its own, as alone
    for step in range(run["steps"]):
        for store in (("memory", "disk") if step % 2 == 0 else ("disk", "memory")):
            torch.set_rng_state(rng[store])
            t0 = time.perf_counter()
            loss = strategy.train_step(models[store], next(batches[store]), gens[store])["loss"]
            opts[store].zero_grad()
            loss.backward()
            opts[store].step()
            times[store].append(time.perf_counter() - t0)
            rng[store] = torch.get_rng_state()
    same = all(torch.equal(a, b) for a, b in zip(models["memory"].parameters(), models["disk"].parameters()))
    return {**out, "same_weights": same, **{f"images_per_s_{store}": round(run["batch_size"] * (len(t) - 2) / sum(t[2:]), 1)
                                            for store, t in times.items()}}


def spawn(run: dict) -> dict:
    load_before = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(run)], capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"{run['name']} failed:\n{p.stderr[-3000:]}")
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["load_avg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(res), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sizes", default="1250,2500,5000", help="training images per class of the growth runs (128 px)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating memory/disk runs at 64 px")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    common = {"steps": args.steps, "batch_size": args.batch_size}
    sizes = [int(s) for s in args.sizes.split(",")]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    decode, side, growth = [], [], []
    # the decode into the cache, once per size, cold (what a later run reads)
    # largest first: its decode is of all 60,000 images (train + test); the smaller ones reuse test's entry
    for size, per_class in [(128, n if n != 5000 else None) for n in sorted(sizes, reverse=True)] + [(64, None)]:
        decode.append(spawn({"name": f"decode-{size}-{per_class}", "mode": "decode", "size": size, "store": "disk",
                             "per_class": per_class, **common}))
    for _ in range(args.repeats):  # side by side, alternating: load moves between runs
        for store in ("memory", "disk"):
            side.append(spawn({"name": f"64-{store}", "mode": "measure", "size": 64, "store": store, **common}))
    # one process, a step of each in turn: the images/s comparison that load drift cannot skew
    side.append(spawn({"name": "64-alternate", "mode": "alternate", "size": 64, "store": "disk",
                       **{**common, "steps": 2 * args.steps}}))
    for n in sizes:
        growth.append(spawn({"name": f"128-disk-{n}", "mode": "measure", "size": 128, "store": "disk",
                             "per_class": n if n != 5000 else None, **common}))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]), "started": started,
                                   "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   "cpus": os.cpu_count(), "decode": decode, "side_by_side_64px": side,
                                   "growth_128px": growth}, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
