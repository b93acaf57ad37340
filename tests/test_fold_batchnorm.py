"""Frozen stages with their BatchNorm folded into the convolutions (core/models/base.py): the
folded copy computes what the frozen stages compute, a pairing it cannot trust is refused, the
model itself is left as it was, and a frozen prefix gets no gradients."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tuneforge.core.models import create_model
from tuneforge.core.models.base import Backbone, Classifier, FrozenPrefix, extract_features, fold_batchnorm, folded_if_same


def lite0_with_statistics() -> Classifier:
    """Lite0 with random BatchNorm statistics and affines, so a wrong fold shows."""
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 3, 64, False, None, 0.0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval().to(memory_format=torch.channels_last)


def test_folded_stages_compute_the_same_and_leave_the_model_alone():
    model = lite0_with_statistics()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model, 3)
    # stem (1) + stage 1 (depthwise, project: 2) + stage 2 (2 blocks x expand, depthwise, project: 6)
    assert folded.folded_batchnorms == 9
    assert not any(isinstance(m, nn.BatchNorm2d) for st in folded.backbone.stages()[:3] for m in st.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in folded.backbone.stages()[3].modules())  # later stages keep theirs
    x = model.prepare(torch.rand(4, 3, 64, 64))
    with torch.inference_mode():
        want = model.backbone.forward_stages(x, 0, 3)
        got = folded.backbone.forward_stages(x, 0, 3)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_extract_features_uses_the_fold_and_gives_the_unfolded_maps():
    model = lite0_with_statistics()
    images = torch.randint(0, 256, (6, 3, 64, 64), dtype=torch.uint8)
    assert folded_if_same(model, images, 2) is not model
    maps = extract_features(model, images, batch_size=4, mirrored=True, stage=2)
    x = images.float().div(255.0)
    with torch.inference_mode():
        want = torch.stack([model.backbone.forward_stages(model.prepare(v), 0, 2) for v in (x, x.flip(3))], 1)
    torch.testing.assert_close(maps, want, rtol=1e-4, atol=1e-4)


class _BNFirst(Backbone):
    """A conv registered before a BatchNorm that is applied before it: registration order misleads."""
    feature_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.bn.running_mean.fill_(3.0)

    def stages(self) -> list[nn.Module]:
        return [nn.ModuleList([self.conv, self.bn])]

    def forward_stages(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return self.conv(self.bn(x[:, :1].expand(-1, 4, -1, -1).contiguous()))

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        return maps.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_stages(x))


def test_a_pairing_that_does_not_hold_is_not_used():
    model = Classifier(_BNFirst(), 2).eval()
    assert fold_batchnorm(model, 1).folded_batchnorms == 1  # the heuristic pairs them...
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert folded_if_same(model, images, 1) is model  # ...and the check refuses it
    assert folded_if_same(model, images, None) is model


def test_frozen_prefix_gets_no_gradients():
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 3, 64, False, None, 0.0)
    model.freeze(3)
    model.train()
    stages = model.backbone.stages()
    assert not any(m.training for st in stages[:3] for m in st.modules() if isinstance(m, nn.BatchNorm2d))  # frozen BatchNorms keep their statistics
    F.cross_entropy(model(torch.rand(4, 3, 64, 64)), torch.tensor([0, 1, 2, 0])).backward()
    assert all(p.grad is None for st in stages[:3] for p in st.parameters())
    assert all(p.grad is not None for p in stages[3].parameters())


def test_frozen_prefix_trains_the_tail_like_the_model():
    """FrozenPrefix gives the model's outputs and the model's gradients for the trained stages."""
    model = lite0_with_statistics()
    model.freeze(3)
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    wrapped = FrozenPrefix(model, 3, images)
    assert wrapped._prefix[0] is not model and not any(k.startswith("_prefix") for k in wrapped.state_dict())
    assert {id(p) for p in wrapped.parameters() if p.requires_grad} == {id(p) for p in model.parameters() if p.requires_grad}
    x, y = images.float().div(255.0), torch.tensor([0, 1, 2, 0])
    grads = []
    for net in (model, wrapped):
        net.eval()  # no drop-connect or batch statistics: the two must agree exactly up to rounding
        model.zero_grad()
        F.cross_entropy(net(x), y).backward()
        grads.append([p.grad.clone() for p in model.backbone.stages()[3].parameters()])
        assert all(p.grad is None for st in model.backbone.stages()[:3] for p in st.parameters())
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
