"""The evaluation loop: noise off by default (the DER protocol), noise on as a diagnostic."""

from __future__ import annotations

import torch

from ife_platform.envs import AtariEvalEnv
from ife_platform.evaluation import StepView, play
from ife_platform.rainbow.agent import build_q_network
from ife_platform.rainbow.heads import NoisyLinear


def _q_trace(network, *, noise: bool, seed: int = 0) -> list[torch.Tensor]:
    qs: list[torch.Tensor] = []

    def observe(step: StepView) -> None:
        qs.append(step.q)

    env = AtariEvalEnv("pong", seed=0, noop_max=0)
    play(
        network,
        env,
        episodes=1,
        epsilon=0.0,
        seed=seed,
        max_steps=12,
        observer=observe,
        noise=noise,
    )
    return qs


def test_noise_is_off_by_default_and_on_when_asked() -> None:
    torch.manual_seed(0)
    net = build_q_network("nature_cnn", 6, noisy=True, noisy_sigma0=0.5).train()
    off = _q_trace(net, noise=False)
    assert net.training  # the caller's mode is restored
    # noise off: the mean weights, so the same first frame gives the same Q in a second game
    assert torch.equal(off[0], _q_trace(net, noise=False)[0])
    on = _q_trace(net, noise=True, seed=1)
    assert not torch.allclose(on[0], off[0])  # sampled weights differ from the means
    assert torch.equal(on[0], _q_trace(net, noise=True, seed=1)[0])  # seeded noise
    assert not torch.equal(on[0], _q_trace(net, noise=True, seed=2)[0])
    assert all(m.training for m in net.modules() if isinstance(m, NoisyLinear))
    net.eval()
    _q_trace(net, noise=True)
    assert not any(m.training for m in net.modules())  # eval mode restored after noisy play
