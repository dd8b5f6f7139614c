"""``VectorStepCollector``: TorchRL's collector without the per-step stack, same batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import episode_end_counts
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
    counts = np.zeros(3, dtype=int)
    try:
        for i, (a, b) in enumerate(zip(fast, generic, strict=False)):
            assert i < 1500, f"not every kind of episode end seen: {counts}"
            assert a.batch_size == b.batch_size == torch.Size([3, 1])
            assert a.names == b.names
            keys = set(b.keys(True, True))
            # TorchRL's buffer drops ("next", "truncated"), which the env's spec does not list
            assert set(a.keys(True, True)) - keys == {("next", "truncated")}
            for k in keys:
                assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
                assert torch.equal(a[k], b[k]), (i, k)
            nxt = a["next"]
            counts += episode_end_counts(nxt)
            assert torch.equal(nxt["truncated"], nxt["done"] & ~nxt["terminated"])
            if counts.min() >= 1 and counts.sum() >= 6:
                break
    finally:
        fast.shutdown()
        generic.shutdown()
    life_losses, game_overs, truncations = counts
    assert life_losses >= 1 and game_overs >= 1 and truncations >= 1


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
