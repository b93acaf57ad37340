"""The step's peak-memory estimate (core/memory.py), the split it chooses, and the gradient
accumulation it relies on (Engine, `--accumulate`)."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tuneforge
from tuneforge.core import memory
from tuneforge.core.engine.loop import Engine, split_batch
from tuneforge.core.models import create_model
from tuneforge.core.strategies import Supervised
from tuneforge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _images(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_estimate_grows_with_batch_and_image_size():
    torch.manual_seed(0)
    models = {s: create_model("seed-cnn", 3, s, False, None, 0.0) for s in (32, 64)}
    strategy = Supervised("flip", 0.0, False)
    act = {(n, s): memory.estimate(models[s], strategy, _images(n, s))["activations"] for n in (8, 32) for s in (32, 64)}
    assert act[(32, 32)] == pytest.approx(4 * act[(8, 32)], rel=0.1)  # measured on a probe, scaled by rows
    assert act[(8, 64)] > 3 * act[(8, 32)]  # 4x the pixels
    params = sum(p.numel() * 4 for p in models[32].parameters() if p.requires_grad)
    assert memory.estimate(models[32], strategy, _images(8, 32))["optimizer"] == 4 * params


def test_estimate_leaves_the_model_and_strategy_as_they_were():
    model = create_model("seed-cnn", 3, 32, False, None, 0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    memory.estimate(model, Supervised("flip", 0.0, False), _images(8, 32))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics too
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.get_rng_state())


# Runs in a fresh interpreter so that the peak RSS is this measurement's alone.
_REALITY = textwrap.dedent("""
    import json, torch
    from tuneforge.core import memory
    from tuneforge.core.engine import build_optimizer
    from tuneforge.core.models import create_model
    from tuneforge.core.strategies import Supervised
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 3, 64, False, None, 0.0)
    strategy = Supervised("flip", 0.0, False)
    batch = (torch.randint(0, 256, (32, 3, 64, 64), dtype=torch.uint8), torch.randint(0, 3, (32,)))
    est = memory.estimate(model, strategy, batch)
    opt = build_optimizer(model, "adamw", 1e-3, 0.05, 0.9)
    model.train()
    base = memory.rss_bytes()
    # The peak of the steps alone: ru_maxrss would also hold the (freed) peaks of building the
    # model and of estimate() itself, which a loaded machine's allocator may have returned to the OS
    # by now (seen: 1.76 GB "growth" for a 0.35 GB step). Linux resets the high-water mark on "5".
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    for _ in range(2):
        out = strategy.train_step(model, batch, None)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        del out
    peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(json.dumps({"predicted": est["activations"] + est["optimizer"], "real": peak - base}))
""")


def test_estimate_is_on_the_safe_side_of_a_measured_step():
    """The predicted growth of a real step's peak RSS (efficientnet_lite0, 64 px, batch 32, AdamW)
    against the peak RSS of two real steps, measured in a subprocess: above it, and not absurdly so."""
    out = subprocess.run([sys.executable, "-c", _REALITY], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["real"] > 50 * 2 ** 20  # a real measurement, not allocator noise
    assert r["real"] <= r["predicted"] <= 2.5 * r["real"], r


class _TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


class _CE:
    def train_step(self, model, batch, generator=None):
        x, y = batch
        logits = model(x)
        return {"loss": F.cross_entropy(logits, y), "logits": logits.detach(), "targets": y}


@pytest.mark.parametrize("k", [2, 3, 4])
def test_accumulated_gradient_equals_the_whole_batch(k):
    torch.manual_seed(0)
    x, y = torch.randn(12, 6), torch.randint(0, 3, (12,))
    grads = []
    for parts in (1, k):
        torch.manual_seed(1)
        model = _TinyMLP()
        engine = Engine(model, _CE(), accumulate=parts)
        out = engine._forward_backward((x, y), torch.Generator())
        grads.append([p.grad.clone() for p in model.parameters()])
        assert len(out["logits"]) == 12 and torch.equal(out["targets"], y)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_uneven_split_still_weights_rows_equally():
    torch.manual_seed(0)
    x, y = torch.randn(7, 6), torch.randint(0, 3, (7,))
    grads = []
    for parts in (1, 5):  # parts of 2, 2, 1, 1, 1 rows
        torch.manual_seed(1)
        model = _TinyMLP()
        Engine(model, _CE(), accumulate=parts)._forward_backward((x, y), torch.Generator())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_split_batch_cuts_nested_batches_alike():
    batch = ((torch.arange(4), torch.arange(28)), {"input_ids": torch.zeros(4, 5), "n": 3}), torch.arange(4)
    parts = split_batch(batch, 2)
    (xl, xu), d = parts[1][0]
    assert xl.tolist() == [2, 3] and xu.tolist() == list(range(14, 28)) and d["input_ids"].shape == (2, 5)
    assert d["n"] == 3 and parts[1][1].tolist() == [2, 3]


def _est(activations: float, optimizer: float = 0.0, rows: int = 64) -> dict:
    return {"activations": activations, "optimizer": optimizer, "process": 0, "rows": rows, "batch": "batch 64"}


def test_split_is_the_smallest_that_fits():
    gb = memory.GB
    assert memory.choose_split(_est(4 * gb), available=16 * gb) == 1
    # 10 GB of activations into 0.85 x 4 GB: halves (5 GB) do not fit, quarters (2.5 GB) do
    assert memory.choose_split(_est(10 * gb), available=4 * gb) == 4
    assert memory.choose_split(_est(10 * gb), available=4 * gb, requested=8) == 8


def test_refusal_when_one_row_does_not_fit_names_the_flags():
    with pytest.raises(ConfigError) as e:
        memory.choose_split(_est(64 * memory.GB, optimizer=2 * memory.GB), available=memory.GB)
    msg = str(e.value)
    for word in ("--accumulate 64", "--batch-size", "--image-size", "--semi-mu", "--freeze", "GB"):
        assert word in msg


def test_accumulate_setting_is_checked():
    with pytest.raises(ConfigError, match="--accumulate"):
        tuneforge.fit(data="x", accumulate="lots")
    with pytest.raises(ConfigError, match="--accumulate"):
        tuneforge.fit(data="x", accumulate=0)


def test_a_fit_with_little_memory_trains_in_micro_batches(cifar3, tmp_path, monkeypatch, caplog):
    """The plan reads the available memory when the fit starts: made small, the same fit says so,
    trains in micro-batches and records the split in report.json."""
    real = memory.estimate

    def small(*args, **kw):  # just under what a whole step needs: halves fit
        est = real(*args, **kw)
        monkeypatch.setattr(memory, "available_bytes", lambda: int((est["optimizer"] + est["activations"] / 2) / memory.HEADROOM) + 1)
        return est

    monkeypatch.setattr(memory, "estimate", small)
    caplog.set_level(logging.INFO, logger="tuneforge")
    res = tuneforge.fit(data=str(cifar3), model="seed-cnn", epochs=1, batch_size=32, out=str(tmp_path / "run"),
                        progress=False, tensorboard=False, threads=2, cache_dir="")
    assert res.report["memory"]["accumulate"] == 2
    assert json.loads((tmp_path / "run" / "report.json").read_text())["memory"]["accumulate"] == 2
    assert "2 micro-batches of 16" in caplog.text and "memory: ~" in caplog.text
    assert res.history[0]["train_loss"] > 0


def test_contrastive_runs_refuse_accumulation():
    from types import SimpleNamespace
    run = lambda **cfg: SimpleNamespace(memory=None, cfg=SimpleNamespace(**cfg))
    with pytest.raises(ConfigError, match="contrastive"):
        memory.accumulation(run(verb="pretrain", method="simclr", accumulate=2))
    assert memory.accumulation(run(verb="pretrain", method="mlm", accumulate=2)) == 2
    assert memory.accumulation(run(verb="fit", accumulate="auto")) == 1
