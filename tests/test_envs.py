"""Atari envs on real ROMs: the TorchRL vector env and the evaluation env agree pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ife_platform.config import ConfigError
from ife_platform.envs import AtariEvalEnv, AtariVecEnv, atari_spec


def _step(env: AtariVecEnv, td, actions):
    td["action"] = torch.as_tensor(actions, dtype=torch.int64)
    out = env.step(td)
    return out, env.step_mdp(out)


@pytest.mark.parametrize("game", ["breakout", "pong"])
def test_eval_env_reproduces_vector_env_observations(game: str) -> None:
    vec = AtariVecEnv(game, 1, seed=3, noop_max=0)
    ev = AtariEvalEnv(game, seed=3, noop_max=0)
    td = vec.reset()
    obs, rgb = ev.reset()
    assert rgb.shape == (210, 160, 3) and rgb.dtype == np.uint8
    assert np.array_equal(obs, td["pixels"][0].numpy())
    rng = np.random.default_rng(0)
    games_over = 0
    for _ in range(400):
        a = int(rng.integers(vec.num_actions))
        out, td = _step(vec, td, [a])
        obs, reward, over, truncated, rgb = ev.step(a)
        nxt = out["next"]
        assert np.array_equal(obs, nxt["pixels"][0].numpy())  # final obs on game over too
        assert reward == nxt["reward"].item()
        assert over == nxt["terminated"].item()
        if over:
            games_over += 1
            obs, rgb = ev.reset()
            td = vec.reset(td.set("_reset", nxt["done"].clone()))
            assert np.array_equal(obs, td["pixels"][0].numpy())
    if game == "breakout":
        assert games_over >= 1  # random Breakout ends within 400 steps: the reset path ran


def test_vector_env_reports_raw_scores_and_life_loss() -> None:
    env = AtariVecEnv("breakout", 2, seed=0, noop_max=0)
    td = env.reset()
    assert td["pixels"].shape == (2, 4, 84, 84) and td["pixels"].dtype == torch.uint8
    rng = np.random.default_rng(1)
    lives_lost = np.zeros(2, int)
    running = np.zeros(2)
    finished: list[float] = []
    for _ in range(600):
        out, td = _step(env, td, rng.integers(env.num_actions, size=2))
        nxt = out["next"]
        running += nxt["reward"].squeeze(-1).numpy()
        lost = nxt["life_lost"].squeeze(-1).numpy()
        done = nxt["done"].squeeze(-1).numpy()
        assert not (lost & done).any()  # the last life is a game over, not a life loss
        lives_lost += lost
        ret = nxt["episode_return"].squeeze(-1).numpy()
        np.testing.assert_allclose(ret, running)  # running raw (unclipped) score
        for i in np.flatnonzero(done):
            finished.append(float(ret[i]))
            running[i] = 0.0
        if done.any():
            td = env.reset(td.set("_reset", nxt["done"].clone()))
            assert (td["episode_return"].squeeze(-1).numpy()[done] == 0).all()
    assert (lives_lost >= 4).any()  # Breakout has 5 lives: losses before each game over
    assert finished, "no game finished in 600 random Breakout steps"


def test_vector_env_seeds_are_reproducible() -> None:
    def roll(seed: int) -> torch.Tensor:
        env = AtariVecEnv("pong", 2, seed=seed)  # with random no-op starts
        td = env.reset()
        frames = [td["pixels"].clone()]
        for _ in range(20):
            _, td = _step(env, td, [0, 1])
            frames.append(td["pixels"].clone())
        return torch.stack(frames)

    assert torch.equal(roll(5), roll(5))
    assert not torch.equal(roll(5), roll(6))


def test_action_sets_and_unknown_game() -> None:
    assert atari_spec("pong").num_actions == 6
    assert atari_spec("pong", full_action_space=True).num_actions == 18
    assert AtariVecEnv("pong", 1, full_action_space=True).num_actions == 18
    with pytest.raises(ConfigError, match="Did you mean 'ms_pacman'"):
        AtariVecEnv("ms_pacmann", 1)
    with pytest.raises(ConfigError, match="unknown game"):
        AtariEvalEnv("not_a_game")


def test_is_init_marks_the_first_observation_of_every_game() -> None:
    from tensordict.nn import TensorDictModule
    from torchrl.collectors import Collector

    # 40 emulator frames = 10 agent steps per game: several truncations in 35 steps
    env = AtariVecEnv("pong", 2, seed=0, max_episode_frames=40)
    policy = TensorDictModule(
        lambda p: torch.zeros(p.shape[0], dtype=torch.int64),
        in_keys=["pixels"],
        out_keys=["action"],
    )
    collector = Collector(
        env,
        policy,
        frames_per_batch=70,
        total_frames=-1,
        trust_policy=True,
        auto_register_policy_transforms=False,
    )
    batch = next(iter(collector))  # [2 envs, 35 steps]
    collector.shutdown()
    is_init = batch["is_init"].squeeze(-1)
    done = batch["next", "done"].squeeze(-1)
    assert done.sum() >= 4 and is_init[:, 0].all()
    # a game starts exactly where the previous step ended one
    assert torch.equal(is_init[:, 1:], done[:, :-1])
    assert not batch["next", "is_init"].any()  # the final observation of a game is no start
