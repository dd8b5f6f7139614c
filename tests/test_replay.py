"""GatherTensorStorage: same data and samples as TorchRL's LazyTensorStorage (index_select reads,
leaf-by-leaf writes)."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictPrioritizedReplayBuffer

from ife_platform.rainbow.replay import GatherTensorStorage


def _buffer(storage_cls: type[LazyTensorStorage], tmp_seed: int = 3):
    return TensorDictPrioritizedReplayBuffer(
        alpha=0.5,
        beta=0.4,
        priority_key="td_error",
        storage=storage_cls(64),
        batch_size=8,
        generator=torch.Generator().manual_seed(tmp_seed),
    )


def _data(n: int, offset: int) -> TensorDict:
    g = torch.Generator().manual_seed(offset)
    return TensorDict(
        {
            "obs": torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=g),
            "action": torch.arange(offset, offset + n),
            "reward": torch.rand(n, generator=g),
        },
        batch_size=[n],
    )


def test_prioritized_samples_are_identical_to_lazy_tensor_storage() -> None:
    plain, gather = _buffer(LazyTensorStorage), _buffer(GatherTensorStorage)
    for rb in (plain, gather):
        rb.extend(_data(40, 0))
        rb.extend(_data(40, 40))  # wraps around the 64-slot ring
    # writes go leaf by leaf in GatherTensorStorage: the stored tensors are TorchRL's
    assert len(plain) == len(gather) == 64
    for key, value in plain.storage._storage.items():
        assert torch.equal(value, gather.storage._storage[key]), key
    for step in range(10):
        a, b = plain.sample(), gather.sample()
        assert torch.equal(a["index"], b["index"])
        for key in ("obs", "action", "reward", "priority_weight"):
            assert torch.equal(a[key], b[key]), key
        assert b["obs"].dtype == torch.uint8
        # Slot k holds the transition written last into it: action == 40 + k for k < 16.
        idx = b["index"]
        assert torch.equal(b["action"], torch.where(idx < 16, idx + 64, idx))
        td = 1.0 + torch.rand(8, generator=torch.Generator().manual_seed(step))
        for rb, batch in ((plain, a), (gather, b)):
            batch.set("td_error", td)
            rb.update_tensordict_priority(batch)


def test_other_index_forms_still_work() -> None:
    storage = GatherTensorStorage(16)
    rb = TensorDictPrioritizedReplayBuffer(
        alpha=0.5, beta=0.4, priority_key="td_error", storage=storage, batch_size=4
    )
    rb.extend(_data(10, 0))
    assert rb[3]["action"].item() == 3
    assert rb[2:5]["action"].tolist() == [2, 3, 4]


@pytest.mark.parametrize(
    ("frame_stack", "capacity", "blank"),
    [(1, 32, True), (4, 32, True), (4, 400, True), (4, 400, False)],
)
def test_memory_estimate_matches_a_real_buffer(
    frame_stack: int, capacity: int, blank: bool
) -> None:
    """``replay_bytes`` (the config's host-memory check) is what the task's buffer holds when
    filled through its own accumulator as in training (transition tensors plus the frame
    ring and, with blanking, its life start ids), plus the sampler's priority trees."""
    from ife_platform.tasks.rainbow import RainbowTask

    from ife_platform.config import compose
    from ife_platform.rainbow.dedup import FrameNStepAccumulator
    from ife_platform.rainbow.replay import SAMPLER_BYTES, estimate_replay_bytes, replay_bytes

    cfg = compose(
        [
            "model.extractor=der_cnn",
            f"env.frame_stack={frame_stack}",
            f"replay.capacity={capacity}",
            "agent.batch_size=4",
            "agent.n_step=3",
            "env.num_envs=2",
            f"replay.blank_before_life_start={blank}",
        ]
    )
    replay = RainbowTask(cfg).build_replay()
    acc = FrameNStepAccumulator(num_envs=2, n=3, gamma=0.99, storage=replay.storage)
    g = torch.Generator().manual_seed(0)
    # 8 steps of 2 envs whose stacks shift by one frame per step, as an env's do
    frames = torch.randint(0, 256, (2, 8 + frame_stack, 84, 84), dtype=torch.uint8, generator=g)
    obs = torch.stack([frames[:, t : t + frame_stack] for t in range(8)], 1)
    nxt = torch.stack([frames[:, t + 1 : t + 1 + frame_stack] for t in range(8)], 1)
    ready = acc.push(
        obs,
        torch.randint(0, 4, (2, 8), generator=g),
        torch.rand(2, 8, generator=g),
        torch.zeros(2, 8, dtype=torch.bool),
        torch.zeros(2, 8, dtype=torch.bool),
        nxt,
    )
    replay.extend(ready)
    held = replay.storage.nbytes()  # lazily allocated transition tensors + frame ring
    expected = replay_bytes(
        capacity, frame_stack, num_envs=2, n_step=3, blank_before_life_start=blank
    )
    assert held == expected - SAMPLER_BYTES * capacity
    assert estimate_replay_bytes(cfg) == expected


def test_fast_profile_replay_is_about_10_gb() -> None:
    """Issue 13's target: at most 1.25 frames per transition plus scalars; 2^20 slots of the
    Fast profile (64 envs, 3-step, 4 frames) in about 10 GB (56,488 B per slot before)."""
    from ife_platform.rainbow.replay import FRAME_BYTES, replay_bytes, replay_bytes_per_transition

    per_slot = replay_bytes_per_transition(4, capacity=1 << 20, num_envs=64, n_step=3)
    scalars = 3 * 8 + 24 + 1.25 * 8 + 16  # frame refs, action..index, ring serials, trees
    assert per_slot <= 1.25 * FRAME_BYTES + scalars
    assert 9.0e9 < replay_bytes(1 << 20, 4, 64, 3) < 10.0e9
