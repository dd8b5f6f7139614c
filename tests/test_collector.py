"""``VectorStepCollector``: TorchRL's collector without the per-step stack, same batches."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_same_batches_until_every_episode_end
from torchrl.collectors import Collector

from ife_platform.bench.common import make_platform_collector
from ife_platform.collector import VectorStepCollector
from ife_platform.envs import AtariVecEnv


def _collector(torchrl_rollout: bool, frames_per_batch: int = 3, **env_kwargs) -> Collector:
    env = AtariVecEnv("breakout", 3, seed=5, max_episode_frames=800, noop_max=5, **env_kwargs)
    return make_platform_collector(env, frames_per_batch, torchrl_rollout=torchrl_rollout, seed=11)


@pytest.mark.parametrize("direct", [True, False], ids=["policy-function", "policy-module"])
def test_one_vector_step_batches_equal_torchrl_rollout_bit_for_bit(direct: bool) -> None:
    """Life losses, game overs, truncations and FIRE presses: every key, dtype, shape, value;
    with the policy's function called directly (a plain TensorDictModule) or, as TorchRL
    does, through the module (a hook on it)."""
    fast = _collector(False, fire_on_life_loss=True)
    generic = _collector(True, fire_on_life_loss=True)
    assert isinstance(fast, VectorStepCollector) and type(generic) is Collector
    assert fast.fast_path and fast._direct is not None
    if not direct:
        fast.policy.register_forward_hook(lambda module, args, out: None)
        fast._direct = fast._direct_policy()
        assert fast._direct is None

    def check(a, b) -> None:
        assert a.batch_size == b.batch_size == torch.Size([3, 1]) and a.names == b.names
        nxt = a["next"]
        assert torch.equal(nxt["truncated"], nxt["done"] & ~nxt["terminated"])

    # TorchRL's buffer drops ("next", "truncated"), which the env's spec does not list
    assert_same_batches_until_every_episode_end(
        fast, generic, limit=1500, extra_keys=frozenset({("next", "truncated")}), per_batch=check
    )


def test_other_batch_sizes_fall_back_to_torchrl_rollout() -> None:
    """Two vector steps per batch: TorchRL's own loop, the same [N, T] batches as Collector."""
    fast = _collector(False, frames_per_batch=6)
    generic = _collector(True, frames_per_batch=6)
    assert not fast.fast_path
    try:
        for _, (a, b) in zip(range(20), zip(fast, generic, strict=False), strict=False):
            assert a.batch_size == torch.Size([3, 2])
            assert all(torch.equal(a[k], b[k]) for k in a.keys(True, True))
    finally:
        fast.shutdown()
        generic.shutdown()
