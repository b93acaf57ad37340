"""The GPU path (issue 19) on a CPU-only machine: device resolution and refusals, batches moved
whole, augmentation and strategies that build nothing on the CPU next to a batch on another
device (the `meta` device stands in for a GPU: mixing it with a CPU tensor raises, as CUDA does),
a loop that no longer reads the loss every step yet computes exactly what the old one did, fp16's
gradient scaler, and the Predictor on a device."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tuneforge
from tuneforge.config import FitConfig, PredictConfig, ServeConfig
from tuneforge.core import progress
from tuneforge.core.augment import Augment
from tuneforge.core.augment.views import ssl_view, strong_view
from tuneforge.core.bundle import load_bundle
from tuneforge.core.data import BatchLoader
from tuneforge.core.device import channels_last, precision_warning, resolve_device, threads, to_device
from tuneforge.core.engine import Engine, Progress, build_optimizer, build_schedule
from tuneforge.core.engine.loop import StepStats, rows
from tuneforge.core.strategies import Supervised
from tuneforge.core.strategies.mlm import mask_tokens
from tuneforge.core.strategies.semi import TextViews
from tuneforge.core.strategies.ssl import nt_xent
from tuneforge.deploy.onnx import onnx_providers
from tuneforge.deploy.predictor import Predictor
from tuneforge.errors import ConfigError

NO_CUDA = not torch.cuda.is_available()
META = torch.device("meta")


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA GPU is present")
def test_auto_is_the_cpu_here_and_an_absent_device_is_refused_by_flag():
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    assert resolve_device("auto") == torch.device("mps" if mps else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"--device {name}: no CUDA GPU is available here"):
            resolve_device(name)
    with pytest.raises(ConfigError, match="--device 'tpu' is not allowed"):
        resolve_device("tpu")
    # the form is checked with the other settings, the presence when the run opens (before any folder)
    with pytest.raises(ConfigError, match="--device: 'gpu' is not allowed; choose auto, cpu, cuda, cuda:N or mps"):
        FitConfig(data="x", device="gpu").validate()
    for settings in (PredictConfig(run="r", paths=["p"], device="cuda:x"), ServeConfig(bundle="r", device="cuda:x")):
        with pytest.raises(ConfigError, match="--device: 'cuda:x'"):
            settings.validate()


@pytest.mark.skipif(not NO_CUDA, reason="a CUDA GPU is present")
def test_fit_on_an_absent_gpu_is_refused_before_a_run_folder_exists(cifar3, tmp_path):
    with pytest.raises(ConfigError, match="--device cuda: no CUDA GPU"):
        tuneforge.fit(data=str(cifar3), model="seed-cnn", epochs=1, out=str(tmp_path / "run"), device="cuda",
                      progress=False)
    assert not (tmp_path / "run").exists()


def test_per_device_choices():
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert threads(cpu, 0, 16) == 16 and threads(cuda, 0, 16) == 4 and threads(cuda, 0, 2) == 2 and threads(cuda, 8, 16) == 8
    assert channels_last(cpu, True) and channels_last(cuda, True) and not channels_last(mps, True)
    assert not channels_last(cuda, False)
    assert "slow" in precision_warning("fp16", cpu) and precision_warning("fp16", cuda) is None
    assert precision_warning("bf16", cpu) is None


def test_to_device_moves_nested_batches_whole_and_leaves_a_cpu_batch_untouched():
    t = torch.arange(6).view(2, 3)
    batch = ({"input_ids": t, "extra": [t.float(), (t.bool(),)], "name": "x"}, t[:, 0], 3)
    same = to_device(batch, torch.device("cpu"))
    assert same[0]["input_ids"] is t and same[1].data_ptr() == t.data_ptr() and same[0]["name"] == "x"
    moved = to_device(batch, META)
    assert type(moved) is tuple and type(moved[0]["extra"]) is list and type(moved[0]["extra"][1]) is tuple
    tensors = [moved[0]["input_ids"], moved[0]["extra"][0], moved[0]["extra"][1][0], moved[1]]
    assert all(x.device == META for x in tensors)
    assert [x.dtype for x in tensors] == [torch.long, torch.float, torch.bool, torch.long]
    assert moved[0]["name"] == "x" and moved[2] == 3


@pytest.mark.parametrize("spec", ["flip,crop=2", "rotate=10,shear=5,zoom=0.1,shift=0.1", "randaugment",
                                  "trivialaugment", "erase=0.5", "flip,crop=2,mixup=0.2,cutmix=1.0"])
def test_augmentation_and_the_supervised_step_stay_on_the_batch_device(spec):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8), torch.arange(8) % 4
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    # the same step on the CPU (what the tests compute) and on another device, where any tensor
    # made on the CPU and combined with the batch raises
    cpu = Supervised(spec).train_step(model, (x, y), torch.Generator().manual_seed(0))
    out = Supervised(spec).train_step(model.to(META), to_device((x, y), META), g)
    assert out["loss"].device == META and out["logits"].shape == cpu["logits"].shape == (8, 4)
    assert torch.isfinite(cpu["loss"])


def test_ssl_views_masks_and_contrastive_targets_stay_on_the_batch_device():
    x = torch.rand(6, 3, 16, 16, device=META)
    for view in (ssl_view, strong_view):
        assert view(x, torch.Generator().manual_seed(0)).device == META
    ids = torch.randint(5, 50, (4, 7), device=META)
    strong = TextViews([0, 1, 2], 3).strong({"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                                            torch.Generator().manual_seed(0))
    assert strong["input_ids"].device == strong["attention_mask"].device == META
    # mask_tokens branches on its draw (one host read a step, on any device): checked on the CPU
    ids = torch.randint(5, 50, (4, 7))
    masked, labels = mask_tokens(ids, torch.ones_like(ids), [0, 1, 2], 3, 50, torch.Generator().manual_seed(0))
    assert (labels != -100).any(1).all() and masked.shape == ids.shape
    loss, _, partner = nt_xent(torch.randn(8, 5, device=META), 0.2)
    assert loss.device == partner.device == META


class EagerEngine(Engine):
    """The loop as it was before issue 19 (the loss and correct count read on every step): the
    reference the lazy loop must reproduce exactly."""

    def train_epoch(self, loader, epoch):
        self.model.train()
        gen = self._generator(epoch)
        n, loss_sum, correct, seen_cls = 0, 0.0, 0, 0
        t0 = time.perf_counter()
        for batch in loader.epoch(epoch):
            self.optimizer.zero_grad(set_to_none=True)
            out = self._forward_backward(batch, gen)
            if self.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.state["step"] += 1
            b = rows(batch)
            n += b
            loss_sum += out["loss"].item() * b
            correct += (out["logits"].argmax(1) == out["targets"]).sum().item()
            seen_cls += b
        elapsed = time.perf_counter() - t0
        return {"train_loss": loss_sum / n, "images_per_s": n / elapsed, "train_s": elapsed,
                "train_accuracy": correct / seen_cls}


def _toy_fit(engine_cls, precision: str = "fp32", grad_clip: float | None = None, epochs: int = 3, callbacks=()):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (200, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = (x.float().mean((1, 2, 3)) > 127.5).long()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    opt = build_optimizer(model, "sgd", 0.05, 5e-4, 0.9)
    engine = engine_cls(model, Supervised("flip,crop=1"), opt, build_schedule(opt, "cosine", 7 * epochs, 2),
                        list(callbacks), precision, grad_clip, seed=3, epochs=epochs, device="cpu")
    state = engine.fit(BatchLoader(x, y, 32, shuffle=True, seed=3), BatchLoader(x, y, 64))
    return engine, state


def test_the_lazy_loop_computes_exactly_what_the_per_step_loop_did():
    lazy, lazy_state = _toy_fit(Engine, grad_clip=1.0)
    eager, eager_state = _toy_fit(EagerEngine, grad_clip=1.0)
    keys = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")
    assert [{k: r[k] for k in keys} for r in lazy_state["history"]] == [{k: r[k] for k in keys} for r in eager_state["history"]]
    for a, b in zip(lazy.model.state_dict().values(), eager.model.state_dict().values()):
        assert torch.equal(a, b)


def test_step_stats_are_read_only_when_a_progress_line_is_drawn():
    reads = []

    class Counting(StepStats):
        def __getitem__(self, key):
            reads.append(key)
            return super().__getitem__(key)

    stats = Counting(torch.tensor(6.0, dtype=torch.float64), 4, torch.tensor(3), 4, 100.0)
    assert dict(stats) == {"loss": 1.5, "images_per_s": 100.0, "accuracy": 0.75}
    reads.clear()
    cb = Progress(enabled=True, live=False)
    fake = type("E", (), {"epochs": 1, "state": {}})()
    cb.estimated = True  # the run's estimate is its own line, not the stats'
    cb.on_epoch_start(fake, 0, 1000)
    for i in range(50):
        cb.on_batch_end(fake, i, stats)
    assert reads == []  # no line was due (one every 30 s): the loss was never fetched
    cb.run.last -= 60  # the next step is 60 s after the last line
    cb.on_batch_end(fake, 50, stats)
    assert reads == ["loss", "accuracy", "images_per_s"]
    cb.run.close()
    calls = []
    p = progress.Phase("x", 10, live=False, every=None)
    p.advance(1, lambda: calls.append(1) or "info")
    assert calls == []


def test_fp16_trains_through_the_gradient_scaler_and_resumes_with_its_scale(caplog):
    engine, state = _toy_fit(Engine, precision="fp16", grad_clip=1.0)
    assert engine.scaler is not None and engine.scaler.is_enabled()
    assert state["history"][-1]["train_loss"] < state["history"][0]["train_loss"]
    assert all(torch.isfinite(p).all() for p in engine.model.parameters())
    ckpt = engine.checkpoint()
    assert ckpt["scaler"]["scale"] == engine.scaler.get_scale() > 0
    fresh, _ = _toy_fit(Engine, precision="fp16", epochs=0)
    fresh.load_checkpoint(ckpt)
    assert fresh.scaler.get_scale() == engine.scaler.get_scale()
    assert "scaler" not in _toy_fit(Engine, epochs=0)[0].checkpoint()  # fp32 runs need none


def test_a_fit_on_device_cpu_is_the_default_fit(cifar3, tmp_path):
    kw = dict(data=str(cifar3), model="seed-cnn", epochs=1, batch_size=32, progress=False, tensorboard=False,
              baseline=False, cache_dir="", threads=2)
    default = tuneforge.fit(out=str(tmp_path / "default"), **kw)
    cpu = tuneforge.fit(out=str(tmp_path / "cpu"), device="cpu", **kw)
    a, b = load_bundle(default.run_dir / "model")[0].state_dict(), load_bundle(cpu.run_dir / "model")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in default.history] == [r["train_loss"] for r in cpu.history]


def test_predictor_on_a_device_and_onnx_providers(seed_run):
    default, cpu = Predictor(seed_run), Predictor(seed_run, device="cpu")
    x = np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    assert cpu.device == torch.device("cpu") and np.array_equal(default.logits({"images": x}), cpu.logits({"images": x}))
    assert onnx_providers(torch.device("cpu")) == ["CPUExecutionProvider"]
    import onnxruntime as ort
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigError, match="--device cuda:0: this onnxruntime has no CUDAExecutionProvider"):
            onnx_providers(torch.device("cuda:0"))
        assert onnx_providers(torch.device("cuda"), explicit=False) == ["CPUExecutionProvider"]
    if NO_CUDA:
        with pytest.raises(ConfigError, match="--device cuda"):
            Predictor(seed_run, device="cuda")
