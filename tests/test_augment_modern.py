"""--augment's timm-style policies (RandAugment, TrivialAugment, random erasing, mixup/CutMix
with their soft-label loss) and --ema, the averaged weights of a supervised fit."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import tuneforge
from conftest import DATASETS, ctrl_c_in_epoch
from tuneforge.core.augment import Augment, parse_spec
from tuneforge.core.augment.policies import RAND_OPS, mix_batch, mixed_targets, soft_cross_entropy
from tuneforge.core.strategies import Supervised
from tuneforge.errors import ConfigError

QUICK = dict(progress=False, tensorboard=False, threads=2, cache_dir="")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """16 real CIFAR-10 images, (16, 3, 32, 32) floats in [0, 1]."""
    files = sorted((DATASETS / "cifar10" / "train" / "cat").iterdir())[:16]
    arr = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_each_op_keeps_shape_and_range_is_deterministic_and_changes_images(images):
    m = torch.full((len(images),), 0.9)
    for name, op in RAND_OPS.items():
        out = op(images.clone(), m, gen(1))
        assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1, name
        assert torch.equal(out, op(images.clone(), m, gen(1))), name
        if name != "identity":
            assert (out - images).abs().mean() > 0.01, name


@pytest.mark.parametrize("spec", ["randaugment", "randaugment=1/5", "randaugment=7", "trivialaugment", "erase=1",
                                  "flip,crop=0.125,randaugment,erase=0.5"])
def test_policies_keep_shape_and_range_are_deterministic_and_change_images(images, spec):
    aug = Augment(spec)
    out = aug(images, gen(3))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, aug(images, gen(3)))  # same generator state, same batch (exact --resume)
    assert not torch.equal(out, aug(images, gen(4)))
    changed = ((out - images).abs().flatten(1).amax(1) > 1e-3).float().mean()
    assert changed >= 0.5, changed  # most images altered (RandAugment's identity op keeps a few)


def test_randaugment_magnitude_and_erase_probability(images):
    assert parse_spec("randaugment")["randaugment"] == (2, 9.0)
    assert parse_spec("randaugment=3/4")["randaugment"] == (3, 4.0)
    assert parse_spec("randaugment=5")["randaugment"] == (2, 5.0)
    # a larger magnitude moves the images further (averaged over many draws)
    weak = (Augment("randaugment=2/1")(images.repeat(8, 1, 1, 1), gen()) - images.repeat(8, 1, 1, 1)).abs().mean()
    strong = (Augment("randaugment=2/10")(images.repeat(8, 1, 1, 1), gen()) - images.repeat(8, 1, 1, 1)).abs().mean()
    assert strong > 1.5 * weak
    assert torch.equal(Augment("erase=0")(images, gen()), images)
    erased = (Augment("erase=1")(images, gen()) != images).any(1).float().mean((1, 2))
    assert ((erased > 0.01) & (erased < 0.5)).all(), erased  # 2-33% of each image, a few pixels may match


@pytest.mark.parametrize("spec, match", [("randaugment=x", "randaugment"), ("randaugment=0/5", "N >= 1"),
                                         ("randaugment=2/11", "M in"), ("erase=2", "probability"),
                                         ("trivialaugment=3", "no value"), ("randaugment,trivialaugment", "choose one"),
                                         ("mixup=lots", "mixup=0.2"), ("autoaugment", "unknown")])
def test_bad_specs_are_refused_by_name(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_spec(spec)


def test_mixup_and_cutmix_mix_the_batch_and_its_targets_sum_to_one():
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 16).contiguous()  # image i is all i
    modes = set()
    for seed in range(20):
        out, lam = mix_batch(x, gen(seed), mixup=0.4, cutmix=1.0)
        assert 0 <= lam <= 1
        own = (out == x).float().mean((1, 2, 3))
        if ((out == x) | (out == x.flip(0))).all() and not torch.equal(out, x):  # a pasted box: cutmix
            modes.add("cutmix")
            assert own[0].item() == pytest.approx(lam)  # lambda is the box's exact area
        else:
            modes.add("mixup")
            assert torch.allclose(out, lam * x + (1 - lam) * x.flip(0))
        t = mixed_targets(torch.tensor([0, 1, 2, 0]), lam, 3, smoothing=0.1)
        assert torch.allclose(t.sum(1), torch.ones(4))
    assert modes == {"mixup", "cutmix"}  # both alphas given: one or the other per batch


def test_mixed_loss_is_the_soft_cross_entropy_of_the_mixed_smoothed_targets(images):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    y = torch.tensor([0, 1, 2, 3] * 4)
    batch = ((images * 255).round().to(torch.uint8), y)
    out = Supervised("flip,mixup=0.5", label_smoothing=0.1).train_step(model, batch, gen(7))

    g = gen(7)  # the same draws by hand
    x = Augment("flip")(batch[0].float() / 255, g)
    x, lam = mix_batch(x, g, mixup=0.5)
    logp = model(x).log_softmax(1)
    onehot = F.one_hot(y, 4).float() * 0.9 + 0.1 / 4
    target = lam * onehot + (1 - lam) * onehot.flip(0)
    assert out["loss"].item() == pytest.approx(-(target * logp).sum(1).mean().item(), rel=1e-5)
    assert soft_cross_entropy(logp, F.one_hot(y, 4).float()).item() == pytest.approx(F.cross_entropy(logp, y).item(), rel=1e-5)
    assert torch.equal(out["targets"], y if lam >= 0.5 else y.flip(0))  # train accuracy: the dominant label


def test_fit_with_randaugment_mixup_and_ema_learns_without_the_feature_cache(cifar3, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tuneforge")
    # a frozen pretrained backbone with a trained head: learns in seconds, and the feature cache
    # would apply were it not for the new ops
    kw = dict(data=str(cifar3), model="efficientnet_lite0", image_size=64, freeze="backbone", lr=0.03, epochs=3,
              batch_size=32, val_fraction=0.2, patience=0, **QUICK)
    res = tuneforge.fit(out=str(tmp_path / "r"), augment="flip,randaugment,mixup=0.2", ema=0.99, **kw)
    assert "cached features" not in caplog.text  # the new ops change pixels: the backbone runs each step
    assert res.report["test"]["accuracy"] >= 0.6, res.report["test"]  # chance is 0.33
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert any(k.startswith("ema.") for k in ckpt) and int(ckpt["steps"]) == 3 * -(-res.report["data"]["train"] // 32)
    caplog.clear()
    tuneforge.fit(out=str(tmp_path / "flip"), augment="flip", epochs=1, **{k: v for k, v in kw.items() if k != "epochs"})
    assert "cached features" in caplog.text  # the control: flip alone keeps the cache


def test_resume_with_ema_and_the_new_ops_equals_uninterrupted(cifar3, tmp_path, monkeypatch):
    kw = dict(data=str(cifar3), model="seed-cnn", epochs=2, batch_size=32, optimizer="adam", patience=0, ema=0.9,
              augment="flip,crop=0.125,randaugment,erase=0.25,mixup=0.2,cutmix=1.0", label_smoothing=0.1, **QUICK)
    full = tuneforge.fit(out=str(tmp_path / "full"), **kw)
    restore = ctrl_c_in_epoch(monkeypatch, 1)
    cut = tuneforge.fit(out=str(tmp_path / "cut"), **kw)
    assert cut.report["epochs_run"] == 1
    restore()
    resumed = tuneforge.fit(resume=str(tmp_path / "cut"), progress=False)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert resumed.report["test"]["accuracy"] == full.report["test"]["accuracy"]
    # the bundle holds the average, not the last step's weights
    saved = full.model.state_dict()
    for k, v in saved.items():
        assert torch.equal(v, a["model"]["ema." + k]), k
    assert any(not torch.equal(a["model"]["student." + k], a["model"]["ema." + k]) for k in saved
               if saved[k].is_floating_point())


def test_ema_with_a_method_that_keeps_no_average_is_refused(cifar3, tmp_path):
    with pytest.raises(ConfigError, match="--ema"):
        tuneforge.fit(data=str(cifar3), model="seed-cnn", semi="fixmatch", unlabeled=str(cifar3 / "test"), ema=0.99,
                      out=str(tmp_path / "r"), **QUICK)


def test_text_fits_read_ema_too(tmp_path):
    rows = [f"{w} {i},{'p' if w == 'good' else 'n'}" for i in range(40) for w in ("good", "bad")]
    (tmp_path / "train.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    run = tuneforge.fit(data=str(tmp_path / "train.csv"), model="gru", epochs=2, embed_dim=16, hidden_size=16,
                        num_layers=1, batch_size=16, ema=0.9, patience=0, out=str(tmp_path / "run"), progress=False,
                        tensorboard=False, threads=2)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, ckpt["ema." + k]), k  # the bundle is the average
    assert int(ckpt["steps"]) == 2 * -(-run.report["data"]["train"] // 16)
