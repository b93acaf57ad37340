"""The CPU speed settings of the fine-tune path (issue 17) change speed, not what is computed
(fused AdamW), and the OpenMP wait policy is set before torch loads."""
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from tuneforge.core.engine import build_optimizer
from tuneforge.core.models import create_model


def test_fused_adamw_takes_the_same_steps_as_the_foreach_update():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    ref = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    ref.load_state_dict(net.state_dict())
    start = net[0].weight.detach().clone()
    opt = build_optimizer(net, "adamw", 1e-2, 0.05)
    assert all(g.get("fused") for g in opt.param_groups)  # the fused kernel on CPU
    groups = [{"params": [p for p in ref.parameters() if p.ndim > 1], "weight_decay": 0.05},
              {"params": [p for p in ref.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    ref_opt = torch.optim.AdamW(groups, lr=1e-2, foreach=True)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(5):
        for m, o in ((net, opt), (ref, ref_opt)):
            o.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            o.step()
    for a, b in zip(net.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(net[0].weight, start, atol=1e-3)  # and the steps did move the weights


def test_openmp_threads_sleep_by_default_unless_the_user_says_otherwise():
    code = "import tuneforge, os, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"  # the user's own setting wins
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ACTIVE"


@pytest.mark.parametrize("size", [64, 37])
def test_lite0_same_padding_equals_the_package_convolution(size):
    """Symmetric padding inside the convolution, asymmetric (stride 2) padded first: outputs and
    gradients equal the package's Conv2dDynamicSamePadding, odd input sizes included."""
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", 3, size, pretrained=False).eval()  # no random drop-connect
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and type(m).__name__ == "_SamePaddingConv"]
    assert len(convs) > 30 and any(m.stride[0] == 2 for m in convs)
    x = torch.rand(2, 3, size, size)
    ours = model(x)
    ours.sum().backward()
    grads = [m.weight.grad.clone() for m in convs]
    model.zero_grad()
    for m in convs:
        m.__class__ = Conv2dDynamicSamePadding
    theirs = model(x)
    theirs.sum().backward()
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert all(torch.allclose(a, m.weight.grad, atol=1e-4) for a, m in zip(grads, convs))
