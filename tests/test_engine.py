
import pytest
import torch
from torch import nn

from tuneforge.core.augment import Augment, parse_spec
from tuneforge.config import FitConfig
from tuneforge.core.engine import EarlyStopping, Engine, build_optimizer, build_schedule
from tuneforge.core.engine.optim import lr_factor
from tuneforge.errors import ConfigError


class FakeEngine:
    def __init__(self, model):
        self.model, self.stopped, self.state = model, None, {"epoch": 0}

    def request_stop(self, reason):
        self.stopped = reason


def test_early_stopping_stops_on_patience_and_restores_best():
    model = nn.Linear(2, 1)
    eng = FakeEngine(model)
    es = EarlyStopping("val_accuracy", patience=2)
    snapshots = {}
    for epoch, acc in enumerate([0.5, 0.7, 0.6, 0.65], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        snapshots[epoch] = model.weight.clone()
        es.on_epoch_end(eng, {"epoch": epoch, "val_accuracy": acc})
        if eng.stopped:
            break
    assert eng.stopped == "patience" and epoch == 4
    es.on_fit_end(eng)
    assert torch.equal(model.weight, snapshots[2]) and eng.state["best_epoch"] == 2


def test_early_stopping_on_loss_minimises():
    eng = FakeEngine(nn.Linear(1, 1))
    es = EarlyStopping("val_loss", patience=1)
    es.on_epoch_end(eng, {"epoch": 1, "val_loss": 1.0})
    es.on_epoch_end(eng, {"epoch": 2, "val_loss": 0.5})
    assert eng.stopped is None and es.best == 0.5
    es.on_epoch_end(eng, {"epoch": 3, "val_loss": 0.6})
    assert eng.stopped == "patience"


@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle"])
def test_schedules_warm_up_then_follow_their_shape(schedule):
    total, warm = 100, 10
    f = [lr_factor(s, total, warm, schedule) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    if schedule == "constant":
        assert f[-1] == 1.0
    else:
        assert f[-1] < 0.05 and all(a >= b - 1e-12 for a, b in zip(f[10:], f[11:]))


def test_optimizer_skips_weight_decay_on_biases():
    opt = build_optimizer(nn.Linear(3, 2), "adamw", 1e-3, 0.05)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [p.ndim for p in decay["params"]] == [2] and [p.ndim for p in no_decay["params"]] == [1]
    with pytest.raises(ConfigError, match="--optimizer"):
        build_optimizer(nn.Linear(1, 1), "adamx", 1e-3)


class ToyStrategy:
    def train_step(self, model, batch, generator):
        x, y = batch
        logits = model(x)
        return {"loss": nn.functional.cross_entropy(logits, y), "logits": logits, "targets": y}

    eval_step = lambda self, model, batch: self.train_step(model, batch, None)


def test_engine_learns_a_separable_rule():
    from tuneforge.core.data import BatchLoader
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 2, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, "adam", 0.05)
    eng = Engine(model, ToyStrategy(), opt, build_schedule(opt, "cosine", 80, 0), epochs=10)
    state = eng.fit(BatchLoader(x, y, 64, shuffle=True), BatchLoader(x, y, 256))
    assert state["history"][-1]["val_accuracy"] > 0.95
    assert state["history"][-1]["train_loss"] < state["history"][0]["train_loss"]
    assert state["stopped_because"] == "max_epochs"


def test_augment_spec_errors_name_the_flag_and_runs_are_repeatable():
    with pytest.raises(ConfigError, match="--augment.*blur"):
        parse_spec("flip,blur=2")
    with pytest.raises(ConfigError, match="--augment: zoom needs a number"):
        parse_spec("zoom=lots")
    x = torch.rand(16, 3, 32, 32)
    aug = Augment("flip,shear=10,zoom=0.2,rotate=5,shift=0.1,crop=4")
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    flips = Augment("flip")(x, torch.Generator().manual_seed(0))
    per_image = [torch.equal(f, o) or torch.equal(f, o.flip(2)) for f, o in zip(flips, x)]
    assert all(per_image)
    assert torch.equal(Augment("none")(x), x)


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    from tuneforge.core.augment import random_crop
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    y = random_crop(x, 2, torch.Generator().manual_seed(3))
    padded = nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(2):
        hits = [(r, c) for r in range(5) for c in range(5) if torch.equal(padded[i, :, r:r + 6, c:c + 6], y[i])]
        assert hits


def test_config_validation_names_the_flag():
    with pytest.raises(ConfigError, match="--optimizer.*adam, adamw, sgd"):
        FitConfig(data="x", optimizer="adamx").validate()
    with pytest.raises(ConfigError, match="--freeze"):
        FitConfig(data="x", freeze="half").validate()
    with pytest.raises(ConfigError, match="--batch-size must be >= 1"):
        FitConfig(data="x", batch_size=0).validate()
    with pytest.raises(ConfigError, match="--data is required"):
        FitConfig().validate()
    from tuneforge.config import build
    with pytest.raises(ConfigError, match="unknown setting --learning-rate"):
        build(FitConfig, {"learning_rate": 0.1})


def test_flip_tta_averages_the_image_and_its_mirror():
    from tuneforge.core.augment import flip_tta
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    x = torch.rand(6, 3, 4, 4)
    logits = model(x)
    out = flip_tta(model, x, logits)
    expected = (logits.softmax(1) + model(x.flip(3)).softmax(1)) / 2
    assert torch.allclose(out.exp(), expected, atol=1e-6)
    symmetric = torch.cat([x, x.flip(3)])  # a mirror pair gets the same TTA prediction
    both = flip_tta(model, symmetric, model(symmetric))
    assert torch.allclose(both[:6], both[6:], atol=1e-6)


def test_recipe_fills_only_what_the_user_did_not_give():
    from tuneforge.config import build, with_recipe
    from tuneforge.recipes import RECIPES
    cfg = build(FitConfig, with_recipe({"data": "x", "recipe": "design", "epochs": 2}))
    assert cfg.model == "seed-cnn" and cfg.optimizer == "adam" and cfg.epochs == 2
    assert cfg.augment == RECIPES["design"].settings["augment"]
    with pytest.raises(ConfigError, match="--recipe.*design"):
        with_recipe({"recipe": "turbo"})
    given = FitConfig(data="x", recipe="balanced", lr=5e-4)
    assert given.explicit() == {"data": "x", "recipe": "balanced", "lr": 5e-4}
    merged = build(FitConfig, with_recipe(given.explicit()))
    assert merged.model == "efficientnet_lite0" and merged.image_size == 64 and merged.lr == 5e-4
