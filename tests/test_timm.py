"""`--model timm:NAME`: a tiny timm ViT trained from scratch on real CIFAR-10 JPEGs, then
predicted, evaluated, served and exported to ONNX (which must equal PyTorch); weights from a
file the test writes (equal to the file, classifier dropped, ViT position embeddings resampled);
pretrained weights from a Hugging Face cache read offline; --freeze K by stages, with the
frozen-stage cache of a convolutional timm model; `models --timm PATTERN`."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

import tuneforge
from tuneforge.cli import main
from tuneforge.core.data.images import decode_files, list_images
from tuneforge.core.models import create_model, model_spec
from tuneforge.deploy.predictor import Predictor
from tuneforge.deploy.serve import ServeSettings, create_app
from tuneforge.errors import ConfigError

FIT = dict(epochs=3, batch_size=32, progress=False, tensorboard=False, threads=1, cache_dir="")


def _timm_state(arch: str, **kw) -> dict[str, torch.Tensor]:
    """A timm model's own state dict, classifier included, as `torch.save(model.state_dict())` writes it."""
    torch.manual_seed(7)
    return {k: v.clone() for k, v in timm.create_model(arch, num_classes=10, **kw).state_dict().items()}


@pytest.fixture(scope="module")
def vit_run(cifar3, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("timm") / "run"
    tuneforge.fit(data=str(cifar3), model="timm:test_vit", pretrained=False, image_size=32, lr=1e-3, out=str(out), **FIT)
    return out


def test_a_tiny_vit_trains_from_scratch_and_predicts_evaluates_serves_and_exports(vit_run, cifar3, tmp_path,
                                                                                  live_server):
    report = json.loads((vit_run / "report.json").read_text())
    assert report["model"] == "timm:test_vit" and report["data"]["image_size"] == 32
    assert report["test"]["n"] == 90 and report["test"]["accuracy"] > 0.5  # 3 classes: chance is 1/3
    bundle = tmp_path / "bundle"
    cfg = tuneforge.export(vit_run, bundle, format="onnx")
    assert cfg["model"] == "timm:test_vit" and cfg["preprocessing"]["mean"] == [0.5, 0.5, 0.5]  # timm's own
    assert cfg["onnx"]["max_abs_diff"] <= 1e-4 and cfg["onnx"]["opset"] == 17
    files = list_images([cifar3 / "test"])
    images = decode_files(files, 32, "crop")[0]
    want = Predictor(bundle, backend="torch").logits({"images": images})
    got = Predictor(bundle, backend="onnx").logits({"images": images})
    assert np.abs(got - want).max() <= 1e-4  # ONNX Runtime = PyTorch on the 90 real test images
    acc = float((want.argmax(1) == np.repeat([0, 1, 2], 30)).mean())
    assert acc == pytest.approx(report["test"]["accuracy"])  # the bundle is the model the report measured
    evaluated = tuneforge.evaluate(bundle, cifar3, out=tmp_path / "eval", progress=False, cache_dir="")
    assert evaluated["test"]["accuracy"] == pytest.approx(acc)
    predicted = tuneforge.predict(bundle, [str(files[0])])
    assert predicted[0]["label"] == ["airplane", "frog", "truck"][int(want[0].argmax())]
    base = live_server(create_app(bundle, ServeSettings(backend="onnx")))
    r = httpx.post(f"{base}/v1/predict", files={"file": (files[0].name, files[0].read_bytes(), "image/jpeg")}, timeout=30)
    assert r.status_code == 200 and r.json()["label"] == predicted[0]["label"], r.text


def test_weights_from_a_timm_state_dict_file_are_loaded_as_they_are(tmp_path):
    state = _timm_state("test_vit", img_size=32)
    f = tmp_path / "vit.safetensors"
    save_file(state, str(f))
    model = create_model("timm:test_vit", 3, 32, pretrained=False, weights=str(f))
    loaded = model.backbone.net.state_dict()
    assert set(state) - set(loaded) == {"head.weight", "head.bias"}  # the 10-class classifier is dropped
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    assert model.head.out_features == 3
    # a state dict saved with torch.save, from a model built for 64px: position embeddings resampled to 32px
    big = _timm_state("test_vit", img_size=64)
    pt = tmp_path / "vit64.pt"
    torch.save(big, pt)
    model = create_model("timm:test_vit", 3, 32, pretrained=False, weights=str(pt))
    loaded = model.backbone.net.state_dict()
    assert loaded["pos_embed"].shape == (1, 5, 64) and big["pos_embed"].shape == (1, 17, 64)
    assert torch.equal(loaded["blocks.0.attn.qkv.weight"], big["blocks.0.attn.qkv.weight"])
    # another architecture's file: refused naming the file and the keys
    other = tmp_path / "resnet.safetensors"
    save_file(_timm_state("test_resnet"), str(other))
    with pytest.raises(ConfigError, match=r"resnet\.safetensors do not fit the model: missing \['net\.cls_token"):
        create_model("timm:test_vit", 3, 32, pretrained=False, weights=str(other))


def test_freeze_by_stages_and_the_frozen_stage_cache(cifar3, tmp_path, caplog, monkeypatch):
    vit = create_model("timm:test_vit", 3, 32, pretrained=False)
    assert len(vit.backbone.stages()) == 5  # patch embedding, 3 groups of 2 blocks, final norm
    vit.freeze(1)
    frozen = {n for n, p in vit.named_parameters() if not p.requires_grad}
    assert frozen == {"backbone.net.cls_token", "backbone.net.pos_embed", "backbone.net.patch_embed.proj.weight",
                      "backbone.net.patch_embed.proj.bias"}
    vit.freeze("backbone")
    assert {n for n, p in vit.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}

    # a convolutional timm model, started from a weight file, its first 2 stages frozen and cached
    f = tmp_path / "resnet.safetensors"
    state = _timm_state("test_resnet")
    save_file(state, str(f))
    caplog.set_level(logging.INFO, logger="tuneforge")
    monkeypatch.chdir(tmp_path)  # the default run folder: runs/timm-test_resnet-TIMESTAMP, no ':' in it
    run = tuneforge.fit(data=str(cifar3), model="timm:test_resnet", weights=str(f), freeze="2", image_size=32,
                        augment="flip", **{**FIT, "epochs": 1})
    assert run.run_dir.parent.name == "runs" and run.run_dir.name.startswith("timm-test_resnet-")
    # one epoch with flip: the frozen stages run as it trains (a cache would compute each image twice)
    assert any("frozen stages 0-1: computed as it trains, BatchNorm folded" in r.getMessage() for r in caplog.records)
    trained = Predictor(run.run_dir / "model", backend="torch").model.backbone
    assert len(trained.stages()) == 5
    kept = {n for s in trained.stages()[:2] for n, _ in s.named_parameters()}
    names = {id(p): n[4:] for n, p in trained.named_parameters()}
    frozen = [names[id(p)] for s in trained.stages()[:2] for p in s.parameters()]
    moved = [names[id(p)] for s in trained.stages()[2:] for p in s.parameters()]
    weights = trained.net.state_dict()
    assert kept and all(torch.equal(weights[k], state[k]) for k in frozen)
    assert any(not torch.equal(weights[k], state[k]) for k in moved)


def test_pretrained_weights_come_from_the_hugging_face_cache_offline_or_random_init_is_said(tmp_path, monkeypatch,
                                                                                            caplog, capsys):
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("tried to download"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    caplog.set_level(logging.WARNING, logger="tuneforge")
    assert not model_spec("timm:test_vit").loads_weights()
    create_model("timm:test_vit", 3, 32)  # nothing cached: random init, said
    assert any("RANDOM INIT" in r.getMessage() and "timm:test_vit" in r.getMessage() for r in caplog.records)

    repo = tmp_path / "hub" / "models--timm--test_vit.r160_in1k"  # the layout huggingface_hub writes
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    state = _timm_state("test_vit", img_size=160)
    save_file(state, str(repo / "snapshots" / "abc123" / "model.safetensors"))
    assert model_spec("timm:test_vit").loads_weights()
    loaded = create_model("timm:test_vit", 3, 32).backbone.net.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded if k != "pos_embed")
    assert loaded["pos_embed"].shape == (1, 5, 64)  # resampled from 160px to 32px by timm's own filter
    assert main(["models", "--timm", "test_vi*"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("timm:test_vit "))
    assert "cached here" in line and "model.safetensors" in line


def test_models_timm_lists_architectures_and_unknown_names_are_refused(capsys):
    assert main(["models", "--timm", "vit_tiny*"]) == 0
    out = capsys.readouterr().out
    assert "timm:vit_tiny_patch16_224 " in out and "convnext" not in out and "nothing is downloaded" in out
    assert main(["models", "--timm", "no_such_net*"]) == 1
    assert "no timm architecture matches" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"did you mean timm:vit_tiny_patch16_224,"):
        model_spec("timm:vit_tiny_patch16_2244")
    spec = model_spec("timm:vit_tiny_patch16_224")
    assert (spec.default_image_size, spec.size_multiple) == (224, 16) and "multiple of the 16px patch" in spec.doc
    assert model_spec("timm:resnet18").size_multiple == 32
