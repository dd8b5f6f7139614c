"""Frame-deduplicated replay (issue 13): the same batches as the stacked storage, bit for bit.

The reference is the layout before issue 13: ``NStepAccumulator`` emitting stacked ``obs`` /
``next_obs`` into a ``GatherTensorStorage``. The new path is ``FrameNStepAccumulator`` into a
``FrameStackStorage`` (each 84x84 frame once, stacks rebuilt from frame ids at sampling).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.collectors import Collector
from torchrl.data import TensorDictPrioritizedReplayBuffer

from ife_platform.checkpoint import CheckpointError
from ife_platform.envs import AtariVecEnv
from ife_platform.rainbow.dedup import (
    FrameNStepAccumulator,
    FrameStackStorage,
    frame_ring_size,
)
from ife_platform.rainbow.nstep import NStepAccumulator
from ife_platform.rainbow.replay import GatherTensorStorage
from ife_platform.rainbow.snapshot import load_replay, replay_state, save_replay

S = 4  # frame stack


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small tensor ops on a shared 2-core machine: intra-op threads only spin (7x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _buffer(storage, seed: int = 11, batch: int = 32) -> TensorDictPrioritizedReplayBuffer:
    return TensorDictPrioritizedReplayBuffer(
        alpha=0.5,
        beta=0.4,
        priority_key="td_error",
        storage=storage,
        batch_size=batch,
        generator=torch.Generator().manual_seed(seed),
    )


def _frame_storage(capacity: int, num_envs: int, ring: int, blank: bool) -> FrameStackStorage:
    return FrameStackStorage(
        capacity, frame_stack=S, num_envs=num_envs, ring_size=ring, blank_before_life_start=blank
    )


class _KaixhinBlanker:
    """Reference for ``blank_before_life_start``, written from Kaixhin/Rainbow's memory: a
    stack whose newest frame is the k-th of its life (k < S) has its S - k older frames
    zeroed. It follows each env's life age from the flags alone, independently of the ring."""

    def __init__(self, num_envs: int) -> None:
        self.age = torch.ones(num_envs, dtype=torch.long)  # first stacks: a reset, age 1

    @staticmethod
    def _blank(stacks: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        keep = torch.arange(S)[None, :] >= (S - age)[:, None]  # [N, S]
        return stacks * keep[:, :, None, None].to(stacks.dtype)

    def __call__(self, obs, terminal, done, next_obs) -> tuple[torch.Tensor, torch.Tensor]:
        n_env, t_len = obs.shape[:2]
        done = done.reshape(n_env, t_len).bool()
        lost = terminal.reshape(n_env, t_len).bool() & ~done
        out_obs, out_next = obs.clone(), next_obs.clone()
        for t in range(t_len):
            out_obs[:, t] = self._blank(obs[:, t], self.age)
            after = torch.where(lost[:, t], 1, (self.age + 1).clamp(max=S))
            out_next[:, t] = self._blank(next_obs[:, t], after)
            self.age = torch.where(done[:, t], 1, after)
        return out_obs, out_next


class _Pair:
    """The old and the new data path, fed the same collector batches. With ``blank``, the old
    path stores the stacks :class:`_KaixhinBlanker` blanks and the new one blanks at reads."""

    def __init__(
        self,
        num_envs: int,
        capacity: int,
        n: int,
        ring_size: int | None = None,
        blank: bool = False,
    ):
        ring = ring_size or frame_ring_size(capacity, num_envs, n, S)
        self.old = _buffer(GatherTensorStorage(capacity))
        self.new = _buffer(_frame_storage(capacity, num_envs, ring, blank))
        self.old_acc = NStepAccumulator(num_envs, n, 0.99)
        self.new_acc = FrameNStepAccumulator(num_envs, n, 0.99, self.new.storage, verify=True)
        self.blanker = _KaixhinBlanker(num_envs) if blank else None

    def push(self, obs, action, reward, terminal, done, next_obs) -> None:
        old_obs, old_next = obs, next_obs
        if self.blanker is not None:
            old_obs, old_next = self.blanker(obs, terminal, done, next_obs)
        a = self.old_acc.push(old_obs, action, reward, terminal, done, old_next)
        b = self.new_acc.push(obs, action, reward, terminal, done, next_obs)
        assert a.batch_size == b.batch_size
        if a.batch_size[0]:
            self.old.extend(a)
            self.new.extend(b)

    def assert_same_storage(self) -> None:
        """Every stored slot reads the same from both storages, key by key, bit for bit."""
        assert len(self.old) == len(self.new)
        idx = torch.arange(len(self.old))
        a, b = self.old.storage.get(idx), self.new.storage.get(idx)
        _assert_same(a, b)

    def assert_same_samples(self, rounds: int, seed: int) -> None:
        """Prioritized samples: same indices, weights and data; then the same priority update."""
        g = torch.Generator().manual_seed(seed)
        for _ in range(rounds):
            a, b = self.old.sample(), self.new.sample()
            _assert_same(a, b)
            td = torch.rand(a.batch_size[0], generator=g) * 3
            for rb, batch in ((self.old, a), (self.new, b)):
                batch.set("td_error", td)
                rb.update_tensordict_priority(batch)


def _assert_same(a: TensorDict, b: TensorDict) -> None:
    assert set(a.keys()) == set(b.keys()), (set(a.keys()), set(b.keys()))
    for key in a.keys():
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key
    assert b["obs"].dtype == torch.uint8 and b["obs"].shape[1:] == (S, 84, 84)


# ------------------------------------------------------------------ hand-worked stream


def _frame(value: int) -> torch.Tensor:
    return torch.full((84, 84), value, dtype=torch.uint8)


class _ToyEnvs:
    """Envs whose frames are constant images (value = 10 * env + step + 1) and whose stacks
    behave like ale-py's: three zero frames and the first frame at a reset."""

    def __init__(self, num_envs: int) -> None:
        self.count = [0] * num_envs
        self.stacks = [self._reset(e) for e in range(num_envs)]

    def _reset(self, env: int) -> torch.Tensor:
        self.count[env] += 1
        return torch.stack([_frame(0)] * (S - 1) + [_frame(10 * env + self.count[env])])

    def step(self, dones: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """One vector step; returns (obs, next_obs) [N, 1, S, 84, 84] (next_obs before reset)."""
        obs = torch.stack(self.stacks)
        nxt = []
        for e, d in enumerate(dones):
            self.count[e] += 1
            new = torch.cat([self.stacks[e][1:], _frame(10 * e + self.count[e])[None]])
            nxt.append(new)
            self.stacks[e] = self._reset(e) if d else new
        return obs[:, None], torch.stack(nxt)[:, None]


def test_two_envs_with_a_reset_zero_frames_by_hand() -> None:
    """Env 0 ends its episode after its 2nd step; env 1 plays on. n = 1, so each step emits
    one transition per env: [env, first frame of obs, first frame of next_obs]."""
    storage = FrameStackStorage(16, frame_stack=S, num_envs=2, ring_size=64)
    acc = FrameNStepAccumulator(2, 1, 0.9, storage, verify=True)
    envs = _ToyEnvs(2)
    dones = [[False, False], [True, False], [False, False]]
    out = []
    for d in dones:
        obs, nxt = envs.step(d)
        done = torch.tensor(d)[:, None]
        out.append(acc.push(obs, torch.zeros(2, 1), torch.ones(2, 1), done, done, nxt))
    # Each env's frames, by id: 0-3 its reset stack (three zeros, first frame), 4 the new
    # frame of step 0, 5 that of step 1 (env 0: its final frame); env 0 restarts at step 2:
    # 6-9 its new reset stack, 10 the new frame of step 2. Env 1 goes on: 6 at step 2.
    refs = [o["frames"].tolist() for o in out]
    assert refs[0] == [[0, 0, 1], [1, 0, 1]]
    assert refs[1] == [[0, 1, 2], [1, 1, 2]]
    assert refs[2] == [[0, 6, 7], [1, 2, 3]]
    # the frames themselves: env 0 showed values 1, 2, 3 (final), then reset 4, then 5
    env0 = storage.frames[storage.rows(torch.tensor(0), torch.arange(11)), 0, 0].tolist()
    assert env0 == [0, 0, 0, 1, 2, 3, 0, 0, 0, 4, 5]
    env1 = storage.frames[storage.rows(torch.tensor(1), torch.arange(7)), 0, 0].tolist()
    assert env1 == [0, 0, 0, 11, 12, 13, 14]
    assert storage.frame_count.tolist() == [11, 7]


def test_stacks_that_do_not_shift_by_one_frame_stop_training() -> None:
    """Without ``verify`` the accumulator still checks its first pushes: an env whose next
    stack is not its stack shifted by one frame cannot be stored once per frame."""
    storage = FrameStackStorage(16, frame_stack=S, num_envs=2, ring_size=64)
    acc = FrameNStepAccumulator(2, 1, 0.9, storage)  # production default: verify=False
    envs = _ToyEnvs(2)
    obs, nxt = envs.step([False, False])
    nxt = nxt.flip(2)  # the frames of the next stack in the wrong order
    no = torch.zeros(2, 1, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="next_obs stack differs"):
        acc.push(obs, torch.zeros(2, 1), torch.ones(2, 1), no, no, nxt)


def test_blanking_before_a_life_start_by_hand() -> None:
    """Env 0 loses a life at its 2nd step (terminal, game goes on); env 1 plays on. n = 1.
    Env 0's frames by id: 0-2 zeros, 3-6 values 1-4; id 5 (value 3, pushed by the losing
    step) is the first of the new life. Read stacks zero the frames before it; env 1's and
    the acting stacks are untouched."""
    storage = FrameStackStorage(16, frame_stack=S, num_envs=2, blank_before_life_start=True)
    rb = _buffer(storage)
    acc = FrameNStepAccumulator(2, 1, 0.9, storage, verify=True)  # verify: raw stacks kept
    envs = _ToyEnvs(2)
    no = torch.zeros(2, 1, dtype=torch.bool)
    lost = torch.tensor([[False, False], [True, False], [False, False]])
    for t in range(3):
        obs, nxt = envs.step([False, False])
        rb.extend(acc.push(obs, torch.zeros(2, 1), torch.ones(2, 1), lost[t][:, None], no, nxt))
    assert storage.life_start.tolist() == [5, 3]
    # transitions in push order: env 0 and env 1 of step 0, then of step 1, then of step 2
    batch = storage.get(torch.arange(6))
    first = batch["obs"][:, :, 0, 0].tolist()
    second = batch["next_obs"][:, :, 0, 0].tolist()
    assert first == [[0, 0, 0, 1], [0, 0, 0, 11], [0, 0, 1, 2], [0, 0, 11, 12],
                     [0, 0, 0, 3], [0, 11, 12, 13]]  # fmt: skip
    assert second == [[0, 0, 1, 2], [0, 0, 11, 12], [0, 0, 0, 3], [0, 11, 12, 13],
                      [0, 0, 3, 4], [11, 12, 13, 14]]  # fmt: skip
    raw = storage.gather_stacks(torch.tensor([0]), torch.tensor([3]), blank=False)
    assert raw[0, :, 0, 0].tolist() == [1, 2, 3, 4]
    # without the option the same stream reads the env's stacks
    plain = FrameStackStorage(16, frame_stack=S, num_envs=2)
    rb, acc, envs = _buffer(plain), FrameNStepAccumulator(2, 1, 0.9, plain), _ToyEnvs(2)
    for t in range(3):
        obs, nxt = envs.step([False, False])
        rb.extend(acc.push(obs, torch.zeros(2, 1), torch.ones(2, 1), lost[t][:, None], no, nxt))
    assert plain.get(torch.arange(6))["obs"][4, :, 0, 0].tolist() == [0, 1, 2, 3]
    assert plain.get(torch.arange(6))["next_obs"][4, :, 0, 0].tolist() == [1, 2, 3, 4]


@pytest.mark.parametrize("blank", [False, True])
def test_toy_stream_with_one_step_episodes_grows_the_ring_and_stays_exact(blank: bool) -> None:
    """Episodes of 1-2 steps take up to 2 frames per transition, more than the ring's 1.25:
    the ring grows (never overwriting a live frame) and the batches stay identical (with
    ``blank``: identical to the reference blanking, across the growth)."""
    num_envs, capacity = 3, 40
    pair = _Pair(num_envs, capacity, n=3, ring_size=50, blank=blank)
    envs = _ToyEnvs(num_envs)
    g = torch.Generator().manual_seed(0)
    for step in range(120):
        d = (torch.rand(num_envs, generator=g) < 0.6).tolist()
        obs, nxt = envs.step(d)
        done = torch.tensor(d)[:, None]
        term = done | (torch.rand(num_envs, 1, generator=g) < 0.2)  # a life loss now and then
        act = torch.randint(4, (num_envs, 1), generator=g)
        pair.push(obs, act, torch.randn(num_envs, 1, generator=g), term, done, nxt)
        if step % 10 == 9:
            pair.assert_same_storage()
            pair.assert_same_samples(2, step)
    assert pair.new.storage.ring_size > 50


# ------------------------------------------------------------------ real games


class _SeededRandomActor:
    def __init__(self, num_actions: int) -> None:
        self.n, self.g = num_actions, torch.Generator().manual_seed(3)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.randint(self.n, (pixels.shape[0],), generator=self.g)


def _collector(game: str, num_envs: int, frames_per_batch: int, frame_cap: int) -> Collector:
    env = AtariVecEnv(game, num_envs, seed=5, max_episode_frames=frame_cap, noop_max=5)
    policy = TensorDictModule(
        _SeededRandomActor(env.num_actions), in_keys=["pixels"], out_keys=["action"]
    )
    return Collector(
        env, policy, frames_per_batch=frames_per_batch, total_frames=-1, trust_policy=True
    )


@pytest.mark.parametrize(
    ("game", "num_envs", "steps_per_batch", "vector_steps", "frame_cap", "blank"),
    [
        ("breakout", 4, 1, 700, 600, False),
        ("ms_pacman", 2, 3, 1200, 2400, False),
        ("breakout", 4, 1, 700, 600, True),
    ],
)
def test_real_games_sample_bit_identical_batches(
    game: str,
    num_envs: int,
    steps_per_batch: int,
    vector_steps: int,
    frame_cap: int,
    blank: bool,
    tmp_path: Path,
) -> None:
    """Thousands of agent steps of real games (random policy) with life losses, game overs,
    frame-cap truncations and a 300-slot ring that wraps many times: every stored slot and
    every prioritized sample reads the same from both storages, at many points of the run.
    Then a snapshot round trip of the new buffer samples identically. With ``blank`` the
    reference stores the stacks Kaixhin's memory would (:class:`_KaixhinBlanker`)."""
    capacity = 300
    pair = _Pair(num_envs, capacity, n=3, blank=blank)
    ring = pair.new.storage.ring_size
    collector = _collector(game, num_envs, num_envs * steps_per_batch, frame_cap)
    counts = torch.zeros(3)
    try:
        for i, batch in enumerate(collector):
            nxt = batch["next"]
            reward = nxt["reward"].squeeze(-1).sign()
            life = nxt["life_lost"].squeeze(-1)
            terminal = nxt["terminated"].squeeze(-1) | life
            done = nxt["done"].squeeze(-1)
            counts += torch.stack(
                [life.sum(), nxt["terminated"].sum(), (done & ~nxt["terminated"].squeeze(-1)).sum()]
            )
            pair.push(batch["pixels"], batch["action"], reward, terminal, done, nxt["pixels"])
            if i % 25 == 24:
                pair.assert_same_storage()
                pair.assert_same_samples(2, i)
            if (i + 1) * steps_per_batch >= vector_steps:
                break
    finally:
        collector.shutdown()
    pair.assert_same_storage()
    life_losses, game_overs, truncations = counts.tolist()
    assert life_losses >= 3 and game_overs + truncations >= 3, counts
    agent_steps = vector_steps * num_envs
    assert agent_steps >= 1600 and pair.new.storage._written >= 4 * capacity  # wrapped 3+ times
    assert pair.new.storage.ring_size == ring  # real episodes fit in 1.25 frames/transition

    # snapshot round trip: a fresh buffer loads it and samples the same batches
    path = tmp_path / "replay.pt"
    save_replay(pair.new, path)
    fresh = _buffer(_frame_storage(capacity, num_envs, ring, blank), seed=99)
    load_replay(fresh, path)
    for _ in range(3):
        _assert_same(pair.new.sample(), fresh.sample())
    # the snapshot holds the frame ring, not two stacks per slot: far smaller than the old one
    old_path = tmp_path / "old.pt"
    torch.save(replay_state(pair.old), old_path)
    assert path.stat().st_size < 0.3 * old_path.stat().st_size


def test_snapshot_of_the_stacked_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "v1.pt"
    torch.save({"version": 1, "len": 0}, path)
    rb = _buffer(FrameStackStorage(8, frame_stack=S))
    with pytest.raises(CheckpointError, match="layout version 1"):
        load_replay(rb, path)


def test_snapshot_of_another_env_count_is_refused(tmp_path: Path) -> None:
    pair = _Pair(2, 16, n=1)
    envs = _ToyEnvs(2)
    for _ in range(6):
        obs, nxt = envs.step([False, False])
        done = torch.zeros(2, 1, dtype=torch.bool)
        pair.push(obs, torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1), done, done, nxt)
    save_replay(pair.new, tmp_path / "two.pt")
    other = _buffer(FrameStackStorage(16, frame_stack=S, num_envs=3))
    with pytest.raises(CheckpointError, match="num_envs=2"):
        load_replay(other, tmp_path / "two.pt")
