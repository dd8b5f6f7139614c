"""The learners' optimiser: fused Adam computes the reference Adam update."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from ife_platform.config import compose
from ife_platform.optim import make_adam


def _steps(fused: bool, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = make_adam(net.parameters(), OmegaConf.create({"lr": 1e-2, "eps": 1e-8, "fused": fused}))
    assert bool(opt.defaults["fused"]) is fused
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(32, 7, generator=gen)
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


def test_fused_adam_matches_the_reference_update() -> None:
    fused, reference = _steps(True), _steps(False)
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, torch.zeros_like(a)) for a in fused)


def test_fused_is_the_default_and_can_be_turned_off() -> None:
    assert compose([]).optim.fused is True
    assert compose(["optim.fused=false"]).optim.fused is False
    half = [torch.nn.Parameter(torch.zeros(3, dtype=torch.float16, device="meta"))]
    # no fused kernel on this device type: the default implementation
    assert not make_adam(half, compose([]).optim).defaults["fused"]
    # frozen parameters are left out of the optimiser
    frozen = torch.nn.Parameter(torch.zeros(2), requires_grad=False)
    live = torch.nn.Parameter(torch.zeros(2))
    (group,) = make_adam([frozen, live], compose([]).optim).param_groups
    assert group["params"] == [live]
