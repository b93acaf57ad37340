"""Data-parallel training (core/engine/distributed.py) on this CPU: 2 processes on gloo, started as
torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR/PORT in each one's environment), run real
image and text fits, a Ctrl-C'd and resumed fit and a search. One group of 2 processes runs
every job (process start and imports are most of the cost); the tests read what each rank saw."""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import tuneforge
from tuneforge.core.data.loader import BatchLoader, MultimodalLoader
from tuneforge.core.data.order import shard
from tuneforge.core.data.text_loader import SequenceBatchLoader
from tuneforge.core.engine import distributed
from tuneforge.core.engine.checkpoint import load_checkpoint
from tuneforge.errors import ConfigError

# two processes per test (a gloo group starts in ~15 s): run by `make test-e2e` and CI, not `make test`
pytestmark = pytest.mark.e2e

IMAGE = dict(model="fast-cnn", image_size=16, epochs=3, batch_size=16, lr=3e-3, val_fraction=0.25, baseline=False,
             tensorboard=False, progress=False)
TEXT = dict(model="gru", embed_dim=16, hidden_size=16, num_layers=1, batch_size=8, epochs=4, baseline=False,
            tensorboard=False, progress=False)


class _CtrlC(tuneforge.Callback):
    """Ctrl-C (SIGINT) to this process only, in the middle of epoch `epoch` (0-based). User callbacks
    run on rank 0 alone, so rank 1 learns of it only through rank 0's shared stop decision."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_batch_end(self, engine, batch: int, stats: dict) -> None:
        if engine.state["epoch"] == self.epoch and batch == 0:
            os.kill(os.getpid(), signal.SIGINT)


def _ranks(rank: int, world: int, port: int, tmp: Path, cifar: Path, texts: Path) -> None:
    """One of the 2 processes: every job in turn, each rank's observations to tmp/NAME.rankR.json."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    writes: list[str] = []

    def audit(event: str, args: tuple) -> None:  # every file or folder this process creates or writes
        if event == "open" and args[0] is not None and isinstance(args[0], (str, os.PathLike)):
            mode, flags = args[1], args[2] or 0
            if (mode and any(c in str(mode) for c in "wax+")) or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                writes.append(os.path.abspath(args[0]))
        elif event in ("os.rename", "os.mkdir") and isinstance(args[-3 if event == "os.rename" else 0], (str, os.PathLike)):
            writes.append(os.path.abspath(args[1] if event == "os.rename" else args[0]))
    sys.addaudithook(audit)

    def record(name: str, **facts) -> None:
        mine = [w for w in writes if w.startswith(str(tmp / name))]
        (tmp / f"{name}.rank{rank}.json").write_text(json.dumps({"writes": mine, **facts}))
        writes.clear()

    res = tuneforge.fit(data=str(cifar), out=str(tmp / "img"), **IMAGE)
    record("img", history=res.history, run_dir=str(res.run_dir))
    res = tuneforge.fit(data=str(cifar), out=str(tmp / "cut"), callbacks=[_CtrlC(epoch=1)], **IMAGE)
    record("cut", history=res.history, stopped=res.report.get("stopped_because"))
    res = tuneforge.fit(resume=str(tmp / "cut"), progress=False)
    record("cut", history=res.history)
    res = tuneforge.fit(data=str(texts), out=str(tmp / "txt"), **TEXT)
    record("txt", history=res.history, weights=_digest(res.model))
    # --ema: a strategy that reaches into its model (student, EMA copy): gradients all-reduced after backward
    res = tuneforge.fit(data=str(texts), out=str(tmp / "ema"), ema=0.9, **{**TEXT, "epochs": 2})
    record("ema", history=res.history, weights=_digest(res.model))

    from tuneforge.tasks.search import study  # what each rank's part of every trial was given
    real, seen = study.launch, []
    study.launch = lambda config, kwargs, **kw: (seen.append({k: v for k, v in kwargs.items()}), real(config, kwargs, **kw))[1]
    tuneforge.search(fit={"data": str(texts), **{k: v for k, v in TEXT.items() if k != "epochs"}, "epochs": 2},
                     space={"lr": {"log_uniform": [1e-3, 1e-1]}, "hidden_size": {"choice": [8, 16, 32]}},
                     out=str(tmp / "study"), trials=2, pruner="none", seed=rank + 7)  # a seed per rank: only rank 0's may count
    record("study", trials=seen)


def _digest(model: torch.nn.Module) -> list[float]:
    """The model's weights in a few numbers: equal on every rank when the ranks trained as one."""
    return [float(v.double().sum()) + float((v.double() ** 2).sum()) for v in model.state_dict().values()
            if torch.is_tensor(v) and v.is_floating_point()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two(cifar3, tmp_path_factory) -> Path:
    """Every job run by 2 processes; the folder of their run folders and observations."""
    tmp = tmp_path_factory.mktemp("ddp")
    texts = tmp / "texts"
    texts.mkdir()
    rows = [f"{w} thing {i},{'p' if w == 'good' else 'n'}" for i in range(24) for w in ("good", "bad")]
    (texts / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    (texts / "val.csv").write_text("text,label\n" + "\n".join(rows[:32]) + "\n")
    before = os.environ.get("TUNEFORGE_CACHE")
    os.environ["TUNEFORGE_CACHE"] = str(tmp / "cache")  # the processes' own (spawned with this environment)
    try:
        mp.spawn(_ranks, args=(2, _free_port(), tmp, cifar3, texts), nprocs=2, join=True)
    finally:
        if before is None:
            os.environ.pop("TUNEFORGE_CACHE")
        else:
            os.environ["TUNEFORGE_CACHE"] = before
    return tmp


def _seen(two: Path, name: str, rank: int) -> dict:
    return json.loads((two / f"{name}.rank{rank}.json").read_text())


@pytest.mark.slow  # 2 processes: 3 image fits, a text fit and a 2-trial search, ~40 s quiet
def test_two_process_image_fit_rank_0_alone_writes_and_matches_one_process(two, cifar3, tmp_path):
    run = two / "img"
    assert {"config.yaml", "split.json", "checkpoints", "metrics.jsonl", "report.json", "model"} <= {p.name for p in run.iterdir()}
    assert _seen(two, "img", 0)["writes"] and _seen(two, "img", 1)["writes"] == []  # rank 1 wrote nothing in it
    assert _seen(two, "img", 1)["run_dir"] == str(run)
    assert not any(Path(p).name.startswith("tuneforge-rank") for p in Path(os.environ.get("TMPDIR", "/tmp")).iterdir()
                   if str(two) in str(p))
    h0, h1 = _seen(two, "img", 0)["history"], _seen(two, "img", 1)["history"]
    assert [r["train_loss"] for r in h0] == [r["train_loss"] for r in h1]  # reduced: the same on both ranks
    assert [r["val_accuracy"] for r in h0] == [r["val_accuracy"] for r in h1]
    assert h0[-1]["train_loss"] < h0[0]["train_loss"]
    report2 = json.loads((run / "report.json").read_text())
    one = tuneforge.fit(data=str(cifar3), out=str(tmp_path / "one"), threads=2, **IMAGE)
    # 90 test images: one standard error of an accuracy difference is ~7 points
    assert abs(report2["test"]["accuracy"] - one.report["test"]["accuracy"]) <= 0.2
    assert report2["test"]["accuracy"] > 0.45 and one.report["test"]["accuracy"] > 0.45  # chance is 1/3


@pytest.mark.slow
def test_ctrl_c_on_rank_0_stops_both_and_resume_equals_the_uninterrupted_run(two):
    cut0, cut1 = _seen(two, "cut", 0), _seen(two, "cut", 1)
    assert cut1["writes"] == []
    assert len(cut0["history"]) == 3  # resumed after epoch 2 (the Ctrl-C'd one finished) to 3
    full = load_checkpoint(two / "img" / "checkpoints" / "last.pt")["model"]
    resumed = load_checkpoint(two / "cut" / "checkpoints" / "last.pt")["model"]
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)
    assert [r["train_loss"] for r in cut0["history"]] == [r["train_loss"] for r in _seen(two, "img", 0)["history"]]
    # with another number of processes the shards differ: refused, naming --nproc
    with pytest.raises(ConfigError, match="--nproc 2"):
        tuneforge.fit(resume=str(two / "cut"), progress=False)


@pytest.mark.slow
def test_two_process_text_fit_learns_like_one_process(two, text_table, tmp_path):
    h = _seen(two, "txt", 0)["history"]
    assert _seen(two, "txt", 1)["writes"] == []
    for name in ("txt", "ema"):  # DistributedDataParallel, and the all-reduce after backward (--ema): in step
        assert _seen(two, name, 0)["weights"] == _seen(two, name, 1)["weights"], name
    assert (two / "ema" / "model").is_dir() and _seen(two, "ema", 1)["writes"] == []
    metrics = lambda hist: [{k: v for k, v in r.items() if k.endswith(("loss", "accuracy"))} for r in hist]
    assert metrics(h) == metrics(_seen(two, "txt", 1)["history"])  # reduced and shared: the same on both ranks
    report2 = json.loads((two / "txt" / "report.json").read_text())
    one = tuneforge.fit(data=str(text_table(32)), out=str(tmp_path / "one"), threads=2, **TEXT)
    assert abs(report2["val"]["accuracy"] - one.report["val"]["accuracy"]) <= 0.2


@pytest.mark.slow
def test_two_process_search_trials_get_rank_0s_parameters(two):
    t0, t1 = _seen(two, "study", 0)["trials"], _seen(two, "study", 1)["trials"]
    assert len(t0) == 2 and t0 == t1  # rank 1's own seed would have sampled others
    assert t0[0]["lr"] != t0[1]["lr"]
    assert _seen(two, "study", 1)["writes"] == []
    assert (two / "study" / "trials" / "0001" / "report.json").is_file()


@pytest.mark.parametrize("n", [10, 11, 1])
def test_every_sample_once_per_epoch_across_ranks(n):
    images, labels = torch.arange(n).float()[:, None], torch.arange(n)
    for make in (lambda: BatchLoader(images, labels, 3, shuffle=True, seed=5),
                 lambda: MultimodalLoader({"x": images}, labels, 3, shuffle=True, seed=5),
                 lambda: SequenceBatchLoader([[i + 1] * (1 + i % 4) for i in range(n)], labels, 3, shuffle=True, seed=5)):
        for epoch in (0, 1):
            seen, steps = [], set()
            for rank in (0, 1):
                loader = make()
                loader.rank, loader.world = rank, 2
                batches = [b[-1] for b in loader.epoch(epoch)]
                steps.add(len(batches))
                assert len(batches) == len(loader)
                seen += torch.cat(batches).tolist()
            assert len(steps) == 1  # every rank takes as many steps
            counts = torch.bincount(torch.tensor(seen), minlength=n)
            assert (counts >= 1).all() and counts.sum() == 2 * -(-n // 2)  # odd n: one padding sample, seen twice
    order = torch.randperm(11, generator=torch.Generator().manual_seed(3))
    assert torch.equal(shard(order, 0, 1), order)  # one process: the order itself, as before
    assert torch.equal(shard(order, 1, 2), shard(order.clone(), 1, 2))  # a function of the order only


def test_nproc_without_torchrun_and_sync_bn_on_cpu_are_refused_naming_the_flag(cifar3, tmp_path):
    with pytest.raises(ConfigError, match=r"--nproc 2: .*tuneforge fit --nproc 2"):
        tuneforge.fit(data=str(cifar3), out=str(tmp_path / "run"), nproc=2, **IMAGE)
    assert not (tmp_path / "run").exists()  # refused before its folder was made
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--sync-bn"):
            distributed.wrap(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)), True, True)
