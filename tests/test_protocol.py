"""The evaluation and training protocol on real ALE games (issue 14, "Comparable protocols").

- no-op starts: the evaluation env spends the same raw emulator frames on its no-op start as
  ale-py's vector env (the training env), at most ``noop_max - 1`` = 29;
- the episode cap: both envs truncate a game at the same agent step, every evaluation path
  records which games a cap ended, and the actor-critic presets evaluate under the same
  108k-frame cap as Rainbow (their 40k-frame cap is for training only);
- life loss (the reference A3C-LSTM's episodic-life + fire-reset wrappers): FIRE is pressed at
  the step after a lost life in games with FIRE, the return is cut there (no bootstrap), and
  the LSTM state is zeroed for the next step, in the actors, the learner and evaluation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ife_platform.tasks.a3c import RecurrentActor, rollout_flags
from tensordict import TensorDict

from ife_platform.a3c import actor_critic_loss, build_actor_critic, gae
from ife_platform.config import ConfigError, compose
from ife_platform.envs import (
    AtariEvalEnv,
    AtariVecEnv,
    cap_steps,
    eval_env_kwargs,
    fire_index,
    make_vector_env,
    train_max_episode_frames,
)
from ife_platform.evaluation import StepView, evaluate_parallel, play
from ife_platform.rainbow.agent import build_q_network
from ife_platform.seeding import ale_env_seeds

NOOP_MAX = 30
BREAKOUT_FIRE = 1  # breakout's minimal set: NOOP, FIRE, RIGHT, LEFT


# ------------------------------------------------------------------ no-op starts


def _eval_env_noop_frames(game: str, fire: bool, resets: int) -> list[int]:
    env = AtariEvalEnv(game, seed=11, noop_max=NOOP_MAX, fire_reset=fire)
    frames = []
    for _ in range(resets):
        env.reset()
        frames.append(env.ale.getEpisodeFrameNumber())  # raw frames since reset_game
    return frames


def _vector_env_noop_frames(game: str, fire: bool, resets: int) -> list[int]:
    n = 16
    vec = make_vector_env(game, n, noop_max=NOOP_MAX, fire_reset=fire, num_threads=1)
    frames: list[int] = []
    try:
        for k in range(resets // n):  # (seeding reloads every ROM: only the first reset)
            _, info = vec.reset(seed=ale_env_seeds(1000, n) if k == 0 else None)
            frames += [int(f) for f in info["episode_frame_number"]]
    finally:
        vec.close()
    return frames


@pytest.mark.parametrize(
    ("game", "fire", "support"),
    [
        ("pong", False, set(range(0, NOOP_MAX))),  # 0..29 no-op frames
        ("breakout", True, set(range(1, NOOP_MAX))),  # k-1 no-ops + 1 FIRE frame, at least 1
    ],
)
def test_noop_start_is_raw_frames_as_in_training(game: str, fire: bool, support: set) -> None:
    evaluation = _eval_env_noop_frames(game, fire, 240)
    training = _vector_env_noop_frames(game, fire, 240)
    assert max(evaluation) <= NOOP_MAX and max(training) <= NOOP_MAX
    # one definition: the same frame counts in both (a frame-skipped no-op would give
    # multiples of 4 up to 116 or 120), spanning the whole range
    assert set(evaluation) == support
    assert set(training) == support
    # uniform: every count about 1/30 of the resets (8 expected; seeded, so deterministic)
    counts = np.bincount(evaluation, minlength=NOOP_MAX)[sorted(support)]
    assert counts.min() >= 2, counts


def test_no_noop_start_with_noop_max_zero() -> None:
    env = AtariEvalEnv("pong", seed=0, noop_max=0)
    for _ in range(5):
        env.reset()
        assert env.noop_start_frames == 0
    vec = make_vector_env("pong", 4, noop_max=0, num_threads=1)
    try:
        _, info = vec.reset(seed=ale_env_seeds(0, 4))
        assert (info["episode_frame_number"] == 0).all()
    finally:
        vec.close()


def test_fire_reset_observation_is_the_training_envs() -> None:
    # noop_max=1: k is always 0, so both press only FIRE; the first observations must agree
    vec = AtariVecEnv("breakout", 1, seed=3, noop_max=1, fire_reset=True)
    env = AtariEvalEnv("breakout", seed=3, noop_max=1, fire_reset=True)
    obs, _ = env.reset()
    assert env.noop_start_frames == 1
    assert np.array_equal(obs, vec.reset()["pixels"][0].numpy())


def test_bad_protocol_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="env.noop_max must be >= 0"):
        AtariEvalEnv("pong", noop_max=-1)
    with pytest.raises(ConfigError, match="env.max_episode_frames must be >= 1"):
        AtariVecEnv("pong", 1, max_episode_frames=0)
    with pytest.raises(ConfigError, match="env.train_max_episode_frames must be >= 1 or null"):
        compose(["env.train_max_episode_frames=0"])
    with pytest.raises(ConfigError, match="tracking.eval_max_steps must be >= 1 or null"):
        compose(["tracking.eval_max_steps=0"])


# ------------------------------------------------------------------ the episode cap


def test_both_envs_truncate_at_the_same_agent_step() -> None:
    cap = 102  # not a multiple of the frame skip: ceil(102 / 4) = 26 agent steps
    assert cap_steps(cap, 4) == 26 and cap_steps(108_000, 4) == 27_000
    vec = AtariVecEnv("pong", 2, seed=5, max_episode_frames=cap)  # with random no-op starts
    env = AtariEvalEnv("pong", seed=5, max_episode_frames=cap)
    td = vec.reset()
    env.reset()
    for t in range(1, 27):
        td["action"] = torch.zeros(2, dtype=torch.int64)
        td, root = vec.step_and_maybe_reset(td)
        _, _, over, truncated, _ = env.step(0)
        assert not over and not td["next", "terminated"].any()
        assert truncated == (t == 26)
        assert td["next", "truncated"].squeeze(-1).tolist() == [t == 26] * 2
        td = root


def _q_net(num_actions: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_q_network("nature_cnn", num_actions, noisy=False)


def test_play_records_which_games_a_cap_ended() -> None:
    net = _q_net(6)
    env = AtariEvalEnv("pong", seed=0, max_episode_frames=40)  # 10 agent steps
    r = play(net, env, episodes=2, epsilon=0.0, seed=0)
    assert r.lengths == [10, 10] and r.truncated == [True, True]
    assert r.cap_frames == 40 and not r.short_cap
    m = r.metrics()
    assert m["eval/truncated"] == 2.0 and m["eval/cap_frames"] == 40.0
    # a step cap below the episode cap is the shorter cap, and says so
    r = play(net, AtariEvalEnv("pong", seed=0), episodes=1, epsilon=0.0, seed=0, max_steps=7)
    assert r.lengths == [7] and r.truncated == [True]
    assert r.cap_frames == 28 and r.short_cap
    assert "7 agent steps, shorter than the 108,000-frame episode cap" in r.cap_note()
    # a game over is no truncation: random Breakout ends well within the cap
    env = AtariEvalEnv("breakout", seed=1, fire_reset=True)
    r = play(_q_net(4), env, episodes=1, epsilon=1.0, seed=1, max_steps=5000)
    assert r.truncated == [False] and r.lengths[0] < 5000
    assert r.metrics()["eval/truncated"] == 0.0


def test_parallel_evaluation_records_truncation_under_the_env_cap() -> None:
    net = _q_net(6)
    kwargs = dict(eval_env_kwargs(compose(["env.max_episode_frames=48"])))
    r = evaluate_parallel(net, "pong", episodes=3, env_kwargs=kwargs)  # no step cap
    assert r.lengths == [12, 12, 12] and r.truncated == [True] * 3 and r.cap_frames == 48
    r = evaluate_parallel(net, "pong", episodes=2, max_steps=5, env_kwargs=kwargs)
    assert r.lengths == [5, 5] and r.truncated == [True, True] and r.cap_frames == 20


@pytest.mark.parametrize("agent", ["a3c_lstm", "s3ta"])
def test_every_agent_evaluates_under_the_108k_frame_cap(agent: str) -> None:
    rainbow = compose([])
    cfg = compose([f"agent={agent}"])
    for c in (rainbow, cfg):
        assert eval_env_kwargs(c)["max_episode_frames"] == 108_000
        assert c.tracking.eval_max_steps is None  # no extra step cap by default
    assert train_max_episode_frames(rainbow.env) == 108_000
    assert train_max_episode_frames(cfg.env) == 40_000  # the A3C code's 10,000-step games
    # the reference A3C-LSTM protocol (agent-profiles.md)
    e, a = cfg.env, cfg.agent
    assert e.life_loss_terminal and e.fire_reset and e.fire_on_life_loss
    assert e.num_envs * a.rollout <= 20  # one optimiser step per actor rollout of <= 20 steps


# ------------------------------------------------------------------ FIRE after a lost life


def _play_without_fire(fire_on_life_loss: bool, steps: int) -> tuple[int, int, list[int]]:
    """Breakout with a policy that never chooses FIRE; returns (lives lost, games, bad)."""
    env = AtariVecEnv("breakout", 1, seed=4, fire_reset=True, fire_on_life_loss=fire_on_life_loss)
    rng = np.random.default_rng(0)
    td = env.reset()
    lost = games = 0
    wrong: list[int] = []  # steps where the played action broke the rule
    for t in range(steps):
        chosen = int(rng.choice([0, 2, 3]))  # NOOP, RIGHT, LEFT
        td["action"] = torch.tensor([chosen])
        after_loss = bool(td["life_lost"].item())  # this observation starts a new life
        td, root = env.step_and_maybe_reset(td)
        played = int(td["action"].item())  # written back by the env
        expected = BREAKOUT_FIRE if (after_loss and fire_on_life_loss) else chosen
        if played != expected:
            wrong.append(t)
        lost += int(td["next", "life_lost"].item())
        games += int(td["next", "done"].item())
        td = root
    return lost, games, wrong


def test_fire_is_pressed_after_every_lost_life_in_breakout() -> None:
    assert fire_index("breakout") == BREAKOUT_FIRE
    lost, games, wrong = _play_without_fire(True, 900)
    assert wrong == []  # FIRE exactly at the steps after a lost life, the policy's elsewhere
    # the ball is relaunched after each lost life, so the game goes on losing lives
    assert lost >= 8 and games >= 1
    # without it, the ball is never relaunched after the first lost life
    lost_off, games_off, wrong_off = _play_without_fire(False, 900)
    assert wrong_off == [] and lost_off <= 1 and games_off == 0


def test_games_without_fire_or_lives_are_never_forced() -> None:
    assert fire_index("ms_pacman") is None  # lives, but no FIRE in its minimal set
    assert fire_index("ms_pacman", full_action_space=True) == 1  # every game has it in 18
    env = AtariVecEnv("ms_pacman", 1, seed=0, fire_on_life_loss=True)
    assert env.fire_action is None
    pong = AtariVecEnv("pong", 1, seed=0, fire_on_life_loss=True, max_episode_frames=800)
    td = pong.reset()
    for _ in range(200):
        td["action"] = torch.tensor([2])  # RIGHT, never FIRE
        td, root = pong.step_and_maybe_reset(td)
        assert int(td["action"].item()) == 2 and not td["next", "life_lost"].any()
        td = root


def test_eval_env_presses_fire_after_a_lost_life() -> None:
    env = AtariEvalEnv("breakout", seed=2, fire_reset=True, fire_on_life_loss=True)
    env.reset()
    rng = np.random.default_rng(3)
    losses = 0
    for _ in range(900):
        forced = env.forced_action
        assert forced == (BREAKOUT_FIRE if env.life_lost else None)
        lives = env.ale.lives()
        _, _, over, _, _ = env.step(int(rng.choice([0, 2, 3])))  # the policy never fires
        losses += int(env.life_lost)
        if over:
            break
        assert env.ale.lives() in (lives, lives - 1)
    assert losses >= 4  # only the forced FIRE relaunches the ball: the game went on


# ------------------------------------------------------------------ A3C rollouts with life loss


def _a3c_rollout(steps: int = 300) -> tuple[TensorDict, torch.nn.Module]:
    """One real Breakout rollout ``[1, steps]`` of an untrained A3C-LSTM actor, as actors see it."""
    from tensordict.nn import TensorDictModule
    from torchrl.collectors import Collector

    torch.manual_seed(0)
    net = build_actor_critic("a3c_cnn", 4, hidden=32)
    actor = RecurrentActor(net, reset_on_life_loss=True)
    policy = TensorDictModule(
        actor,
        in_keys=actor.in_keys,
        out_keys=["action", "policy_version", "state_0", "state_1"],
    )
    env = AtariVecEnv("breakout", 1, seed=1, frame_stack=1, fire_reset=True, fire_on_life_loss=True)
    collector = Collector(
        env,
        policy,
        frames_per_batch=steps,
        total_frames=-1,
        trust_policy=True,
        auto_register_policy_transforms=False,
    )
    try:
        batch = next(iter(collector))
    finally:
        collector.shutdown()
    return batch, net


def test_a3c_life_loss_cuts_the_return_zeroes_the_lstm_and_fires() -> None:
    batch, net = _a3c_rollout()
    tb = batch.transpose(0, 1)  # [T, 1]
    lost = tb["next", "life_lost"].squeeze(-1)[:, 0]
    losses = torch.nonzero(lost[:-2]).flatten().tolist()
    assert losses, "no life lost in 300 random Breakout steps"
    first, done, sampled = rollout_flags(tb, life_loss_terminal=True, fire_forced=True)
    for t in losses:
        assert done[t, 0] and first[t + 1, 0] and not sampled[t + 1, 0]
        assert tb["action"][t + 1, 0] == BREAKOUT_FIRE  # the collector holds what was played
        assert tb["life_lost"][t + 1, 0]  # the next observation starts a new life
    assert sampled.sum() == len(sampled) - lost.sum()  # every other action was the policy's
    # the actor zeroed its LSTM state before the first step of the new life: the state it
    # recorded entering step t + 2 is one step from zero on obs[t + 1]
    t = losses[0]
    zero = net.initial_state(1)
    with torch.no_grad():
        _, _, (h, c) = net.step(tb["pixels"][t + 1], zero, torch.zeros(1, dtype=torch.bool))
    assert torch.allclose(tb["state_0"][t + 2], h, atol=1e-6)
    assert torch.allclose(tb["state_1"][t + 2], c, atol=1e-6)
    assert tb["state_0"][t + 1].abs().sum() > 0  # ... and not from the state it had
    # the learner's re-run resets at the same steps: from t + 1 on it equals a fresh unroll
    state0 = (tb["state_0"][0], tb["state_1"][0])
    with torch.no_grad():
        logits, values, _ = net(tb["pixels"], state0, first)
        fresh_logits, fresh_values, _ = net(tb["pixels"][t + 1 :], zero, first[t + 1 :])
    assert torch.allclose(values[t + 1 :], fresh_values, atol=1e-5)
    assert torch.allclose(logits[t + 1 :], fresh_logits, atol=1e-5)
    # no bootstrap across the lost life: R_t is the clipped reward of step t alone
    reward = tb["next", "reward"].squeeze(-1).clamp(-1, 1)
    _, returns = gae(reward, values, values[-1], done, 0.99, 1.0)
    for t in losses:
        assert returns[t, 0] == reward[t, 0]
    # whole games (life_loss_terminal off): the return runs on through the lost life
    cut_off = rollout_flags(tb, life_loss_terminal=False, fire_forced=True)[1]
    _, through = gae(reward, values, values[-1], cut_off, 0.99, 1.0)
    for t in losses:
        expected = float(reward[t, 0] + 0.99 * through[t + 1, 0])
        assert float(through[t, 0]) == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------ by hand


def test_returns_with_a_life_loss_cut_by_hand() -> None:
    # One env, T = 4, gamma = 0.5, lambda = 1; rewards 1, 1, 0, 2; values 0.5 each;
    # bootstrap V(s_4) = 4. A life is lost at step 1 (next life_lost), so obs[2] starts a new
    # life (root life_lost) and its action is the env's FIRE.
    tb = TensorDict(
        {
            "is_init": torch.tensor([[True], [False], [False], [False]]).unsqueeze(-1),
            "life_lost": torch.tensor([[False], [False], [True], [False]]).unsqueeze(-1),
            "next": TensorDict(
                {
                    "done": torch.zeros(4, 1, 1, dtype=torch.bool),
                    "life_lost": torch.tensor([[False], [True], [False], [False]]).unsqueeze(-1),
                },
                batch_size=[4, 1],
            ),
        },
        batch_size=[4, 1],
    )
    first, done, sampled = rollout_flags(tb, life_loss_terminal=True, fire_forced=True)
    assert first[:, 0].tolist() == [True, False, True, False]
    assert done[:, 0].tolist() == [False, True, False, False]
    assert sampled[:, 0].tolist() == [True, True, False, True]
    rewards = torch.tensor([[1.0], [1.0], [0.0], [2.0]])
    values = torch.full((4, 1), 0.5)
    # R3 = 2 + 0.5 * 4 = 4;  R2 = 0 + 0.5 * 4 = 2;  R1 = 1 (life lost: no bootstrap);
    # R0 = 1 + 0.5 * 1 = 1.5.  A = R - 0.5.
    adv, ret = gae(rewards, values, torch.tensor([4.0]), done, 0.5, 1.0)
    assert ret[:, 0].tolist() == [1.5, 1.0, 2.0, 4.0]
    assert adv[:, 0].tolist() == [1.0, 0.5, 1.5, 3.5]
    # whole games (life_loss_terminal off): R1 = 1 + 0.5 * 2 = 2, R0 = 1 + 0.5 * 2 = 2
    _, whole = gae(
        rewards,
        values,
        torch.tensor([4.0]),
        rollout_flags(tb, life_loss_terminal=False, fire_forced=False)[1],
        0.5,
        1.0,
    )
    assert whole[:, 0].tolist() == [2.0, 2.0, 2.0, 4.0]


def test_forced_steps_add_nothing_to_the_policy_and_entropy_terms_by_hand() -> None:
    # T = 2, B = 1, two actions. Step 0: logits (0, 0), action 0, A = 2; step 1 (forced FIRE):
    # logits (0, ln 3), action 1, A = 4. Values 0 and 1, returns 1 and 1.
    logits = torch.tensor([[[0.0, 0.0]], [[0.0, float(np.log(3.0))]]], requires_grad=True)
    values = torch.tensor([[0.0], [1.0]], requires_grad=True)
    actions = torch.tensor([[0], [1]])
    adv, ret = torch.tensor([[2.0], [4.0]]), torch.tensor([[1.0], [1.0]])
    sampled = torch.tensor([[True], [False]])
    t = actor_critic_loss(logits, values, actions, adv, ret, sampled=sampled)
    # policy = -(log(1/2) * 2 + 0) / 2 = ln 2;  entropy = (ln 2 + 0) / 2
    # value = 0.5 * ((1 - 0)^2 + (1 - 1)^2) / 2 = 0.25 (forced steps keep their value term)
    assert t["loss_policy"].item() == pytest.approx(np.log(2.0))
    assert t["entropy"].item() == pytest.approx(np.log(2.0) / 2)
    assert t["loss_value"].item() == pytest.approx(0.25)
    t["loss"].backward()
    assert torch.equal(logits.grad[1], torch.zeros(1, 2))  # no gradient into the forced step
    assert values.grad[1].item() == 0.0 and values.grad[0].item() == pytest.approx(-0.25)


# ------------------------------------------------------------------ evaluation of A3C agents


def test_recurrent_evaluation_zeroes_the_state_and_fires_after_a_lost_life() -> None:
    torch.manual_seed(0)
    net = build_actor_critic("a3c_cnn", 4, hidden=32)
    cfg = compose(["agent=a3c_lstm", "env.game=breakout"])
    env = AtariEvalEnv("breakout", seed=7, **eval_env_kwargs(cfg))
    views: list[StepView] = []
    r = play(net, env, episodes=1, epsilon=0.2, seed=0, max_steps=600, observer=views.append)
    starts = [v.t for v in views if v.first]
    assert starts[0] == 0 and len(starts) >= 2, "no life lost in 600 Breakout steps"
    for v in views:
        if v.first and v.t > 0:
            assert v.action == BREAKOUT_FIRE  # the step after a lost life plays FIRE
            assert all(torch.count_nonzero(s) == 0 for s in v.state)  # from a zero state
        elif v.t > 0:
            assert all(torch.count_nonzero(s) > 0 for s in v.state)
    assert r.returns and len(r.truncated) == 1
