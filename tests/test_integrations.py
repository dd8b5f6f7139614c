"""The platform's extractors inside other libraries: Stable-Baselines3 and plain TorchRL."""

from __future__ import annotations

import runpy
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ppo_learns_with_ife_on_a_real_atari_game_and_the_mask_is_readable() -> None:
    import ale_py
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from ife_platform.integrations.sb3 import SB3FeaturesExtractor

    gym.register_envs(ale_py)
    env = make_atari_env(
        "ALE/Pong-v5",
        n_envs=2,
        seed=0,
        env_kwargs={"frameskip": 1, "repeat_action_probability": 0.0},
    )
    env = VecFrameStack(env, n_stack=4)
    model = PPO(
        "CnnPolicy",
        env,
        n_steps=64,
        batch_size=64,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={
            "features_extractor_class": SB3FeaturesExtractor,
            "features_extractor_kwargs": {"extractor": "ife", "width": 1},
        },
    )
    before = [p.detach().clone() for p in model.policy.features_extractor.parameters()]
    model.learn(total_timesteps=256)  # 2 rollouts of 2 envs x 64 steps, 2 gradient epochs
    extractor = model.policy.features_extractor
    after = list(extractor.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))  # IFE learnt
    obs = env.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (2,)
    mask = extractor.attention_mask
    assert mask.shape == (2, 14, 14)  # one cell per 6x6 window of the 84x84 frame
    assert torch.allclose(mask.sum((1, 2)), torch.ones(2), atol=1e-5)
    rects = extractor.extractor.cell_screen_rects()
    assert rects.shape == (14, 14, 4)
    env.close()


def test_sb3_adapter_refuses_channel_last_frames() -> None:
    from ife_platform.integrations.sb3 import SB3FeaturesExtractor

    space = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
    with pytest.raises(ValueError, match="channel-first"):
        SB3FeaturesExtractor(space)
    ok = SB3FeaturesExtractor(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8), "der_cnn")
    assert ok.features_dim == ok.extractor.features_dim and ok.attention_mask is None


@pytest.mark.slow
def test_torchrl_example_trains_dqn_with_ife_and_reads_the_mask() -> None:
    example = runpy.run_path(str(REPO / "examples" / "torchrl_dqn.py"))
    out = example["main"](["--game", "pong", "--frames", "256", "--envs", "2"])
    assert np.isfinite(out["loss"])
    mask = out["mask"]
    assert mask.shape == (2, 14, 14)
    assert torch.allclose(mask.sum((1, 2)), torch.ones(2), atol=1e-5)
    assert out["rects"].shape == (196, 4)  # screen rectangle of every mask cell
