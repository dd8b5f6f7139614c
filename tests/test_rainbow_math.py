"""Rainbow math against numbers worked out by hand: C51 projection, n-step, heads, losses."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ife_platform.rainbow import (
    NoisyLinear,
    NStepAccumulator,
    QHead,
    categorical_double_q_loss,
    expected_q,
    huber_double_q_loss,
    make_support,
    nstep_targets,
    project_distribution,
)

SUPPORT5 = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])  # v_min -2, v_max 2, dz = 1


def close(actual, expected, atol=1e-5):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, atol=atol), (actual, expected)


# ------------------------------------------------------------------ C51 projection


def project1(probs, reward, discount):
    return project_distribution(
        torch.tensor([probs]), torch.tensor([reward]), torch.tensor([discount]), SUPPORT5
    )[0]


def test_projection_half_atom_shift_splits_mass_and_clamps_top():
    # p uniform 0.2, r = 0.5, discount 1: Tz = z + 0.5 = [-1.5, -0.5, 0.5, 1.5, 2.5 -> clamp 2]
    # b = Tz + 2 = [0.5, 1.5, 2.5, 3.5, 4.0]
    # atom 0: 0.1 (from b=0.5)          atom 1: 0.1 + 0.1 (b=0.5, b=1.5)
    # atom 2: 0.1 + 0.1                 atom 3: 0.1 + 0.1
    # atom 4: 0.1 (from b=3.5) + 0.2 (b=4.0 exactly, the clamped edge: all of it) = 0.3
    close(project1([0.2] * 5, 0.5, 1.0), [0.1, 0.2, 0.2, 0.2, 0.3])


def test_projection_one_hot_half_shift():
    # all mass on z=0, r=0.5: Tz = 0.5, b = 2.5 -> half to atom 2 (z=0), half to atom 3 (z=1)
    close(project1([0.0, 0.0, 1.0, 0.0, 0.0], 0.5, 1.0), [0.0, 0.0, 0.5, 0.5, 0.0])


def test_projection_terminal_puts_all_mass_at_reward():
    # discount 0: Tz = r = 0.3 for every atom, b = 2.3 -> atom 2 gets 0.7, atom 3 gets 0.3
    close(project1([0.1, 0.2, 0.3, 0.4, 0.0], 0.3, 0.0), [0.0, 0.0, 0.7, 0.3, 0.0])
    # discount 0, r = -1 (exactly on an atom): all mass on atom 1
    close(project1([0.1, 0.2, 0.3, 0.4, 0.0], -1.0, 0.0), [0.0, 1.0, 0.0, 0.0, 0.0])


def test_projection_clamps_beyond_support():
    # r = 5: Tz = z + 5 >= 3 > v_max -> all clamp to 2 -> all mass on the top atom
    close(project1([0.1, 0.2, 0.3, 0.4, 0.0], 5.0, 1.0), [0.0, 0.0, 0.0, 0.0, 1.0])
    # r = -5: everything below v_min -> bottom atom
    close(project1([0.1, 0.2, 0.3, 0.4, 0.0], -5.0, 1.0), [1.0, 0.0, 0.0, 0.0, 0.0])


def test_projection_exact_atom_landing_l_equals_u():
    # r = 1, discount 1: Tz = [-1, 0, 1, 2, 3 -> 2], b = [1, 2, 3, 4, 4], all integers (l == u)
    # p = [.1, .2, .3, .4, 0] shifts up one atom: [0, .1, .2, .3, .4 + 0]
    close(project1([0.1, 0.2, 0.3, 0.4, 0.0], 1.0, 1.0), [0.0, 0.1, 0.2, 0.3, 0.4])
    # r = 0, discount 0.5: Tz = [-1, -0.5, 0, 0.5, 1], b = [1, 1.5, 2, 2.5, 3], p uniform 0.2
    # atom 1: 0.2 + 0.1 = 0.3; atom 2: 0.1 + 0.2 + 0.1 = 0.4; atom 3: 0.1 + 0.2 = 0.3
    close(project1([0.2] * 5, 0.0, 0.5), [0.0, 0.3, 0.4, 0.3, 0.0])


def test_projection_conserves_mass_batched():
    g = torch.Generator().manual_seed(0)
    support = make_support(-10.0, 10.0, 51)
    probs = torch.softmax(torch.randn(64, 51, generator=g), dim=-1)
    rewards = torch.randn(64, generator=g) * 8  # some land beyond the support
    discounts = torch.tensor([0.0, 1.0, 0.99, 0.99**3] * 16)
    rewards[:4] = torch.tensor([10.0, -10.0, 0.2, 0.0])  # edges and exact atom
    out = project_distribution(probs, rewards, discounts, support)
    close(out.sum(-1), torch.ones(64))
    assert (out >= 0).all()
    # mean of the projection equals the mean of r + discount z where nothing was clamped
    row = 3  # r = 0, discount 0.99^3: Tz inside [-10, 10], linear interpolation keeps the mean
    mean_target = (probs[row] * discounts[row] * support).sum()
    close((out[row] * support).sum(), mean_target, atol=1e-4)


def test_make_support():
    close(make_support(-2.0, 2.0, 5), SUPPORT5)
    with pytest.raises(ValueError):
        make_support(-1.0, 1.0, 1)


# ------------------------------------------------------------------ n-step, pure


def test_nstep_targets_hand_example_with_terminal():
    # n = 3, gamma = 0.5, r = [1, 2, 3, 4, 6, 8], terminal after step 2
    # t=0: 1 + .5*2 + .25*3 = 2.75, window hits terminal at k=2 -> m=3, discount 0, next 3
    # t=1: 2 + .5*3 = 3.5, m=2, discount 0, next 3
    # t=2: 3, m=1, discount 0, next 3
    # t=3: 4 + .5*6 + .25*8 = 9, m=3, discount .5^3 = .125, next 6
    # t=4: 6 + .5*8 = 10, end of data -> m=2, discount .25, next 6 (truncated window)
    # t=5: 8, m=1, discount .5, next 6
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0, 8.0])
    terminals = torch.tensor([False, False, True, False, False, False])
    ret, disc, nxt = nstep_targets(rewards, terminals, gamma=0.5, n=3)
    close(ret, [2.75, 3.5, 3.0, 9.0, 10.0, 8.0])
    close(disc, [0.0, 0.0, 0.0, 0.125, 0.25, 0.5])
    assert nxt.tolist() == [3, 3, 3, 6, 6, 6]


def test_nstep_targets_n1_is_one_step():
    # n = 1: G = r_t, discount gamma (0 at the terminal), next = t + 1
    ret, disc, nxt = nstep_targets(
        torch.tensor([1.0, -1.0, 0.5]), torch.tensor([False, True, False]), gamma=0.9, n=1
    )
    close(ret, [1.0, -1.0, 0.5])
    close(disc, [0.9, 0.0, 0.9])
    assert nxt.tolist() == [1, 2, 3]


# ------------------------------------------------------------------ n-step, streaming


def push_steps(acc, rewards, terminals, dones, chunk, obs_fn=None):
    """Feed [N, S] streams in chunks of `chunk` steps; obs ids encode (env, step).

    obs[e, s] = (e, s); next_obs[e, s] = (e, 1000 + s); action[e, s] = 100 * e + s.
    Returns {(env, start): (G, discount, end_step)} and the raw outputs.
    """
    n_env, total = rewards.shape
    env = torch.arange(n_env)[:, None].expand(n_env, total)
    step = torch.arange(total)[None].expand(n_env, total)
    obs = torch.stack([env, step], -1)  # [N, S, 2]
    next_obs = torch.stack([env, step + 1000], -1)
    action = 100 * env + step
    found = {}
    outs = []
    sizes = chunk if isinstance(chunk, list) else [chunk] * math.ceil(total / chunk)
    begin = 0
    for size in sizes:
        sl = slice(begin, min(begin + size, total))
        begin = sl.stop
        out = acc.push(
            obs[:, sl], action[:, sl], rewards[:, sl], terminals[:, sl], dones[:, sl],
            next_obs[:, sl],
        )  # fmt: skip
        outs.append(out)
        for i in range(out.batch_size[0]):
            e, s = out["obs"][i].tolist()
            e2, end = out["next_obs"][i].tolist()
            assert e2 == e
            assert out["action"][i].item() == 100 * e + s
            key = (e, s)
            assert key not in found, f"transition {key} emitted twice"
            found[key] = (out["reward"][i].item(), out["discount"][i].item(), end - 1000)
        if begin >= total:
            break
    return found, outs


def reference_transitions(rewards, terminals, dones, gamma, n):
    """Expected closed windows: split each env's stream at dones, apply nstep_targets."""
    expected = {}
    for e in range(rewards.shape[0]):
        total = rewards.shape[1]
        seg_start = 0
        for s in range(total + 1):
            seg_end = s == total or bool(dones[e, s])
            if not seg_end:
                continue
            stop = s + 1 if s < total else total  # segment [seg_start, stop)
            ret, disc, nxt = nstep_targets(
                rewards[e, seg_start:stop], terminals[e, seg_start:stop], gamma, n
            )
            ended_by_done = s < total
            for k in range(stop - seg_start):
                m = int(nxt[k]) - k
                term_in = disc[k].item() == 0.0 and gamma > 0
                if ended_by_done or term_in or m == n:  # window closed
                    t = seg_start + k
                    expected[(e, t)] = (ret[k].item(), disc[k].item(), seg_start + int(nxt[k]) - 1)
            seg_start = stop
    return expected


def random_streams(n_env, total, seed):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randint(-1, 2, (n_env, total), generator=g).float()
    u = torch.rand(n_env, total, generator=g)
    life_loss = u < 0.12  # terminal, env continues
    game_over = (u >= 0.12) & (u < 0.17)  # terminal and done
    truncation = (u >= 0.17) & (u < 0.22)  # done, not terminal
    terminals = life_loss | game_over
    dones = game_over | truncation
    return rewards, terminals, dones


@pytest.mark.parametrize("n", [1, 3, 5])
@pytest.mark.parametrize("chunk", [1, 2, 7, [1, 2, 9, 1, 3, 20, 1, 1, 50]])
def test_accumulator_matches_pure_function(n, chunk):
    gamma = 0.9
    rewards, terminals, dones = random_streams(n_env=2, total=80, seed=n)
    acc = NStepAccumulator(num_envs=2, n=n, gamma=gamma)
    found, _ = push_steps(acc, rewards, terminals, dones, chunk)
    expected = reference_transitions(rewards, terminals, dones, gamma, n)
    assert set(found) == set(expected)
    for key, (g, d, end) in expected.items():
        fg, fd, fend = found[key]
        assert fg == pytest.approx(g, abs=1e-5), key
        assert fd == pytest.approx(d, abs=1e-6), key
        assert fend == end, key
    # the open windows left are the steps after each env's last cut, at most n - 1 of them
    assert acc.num_pending == 2 * 80 - len(found)
    assert acc.num_pending <= 2 * (n - 1)


def test_accumulator_chunks_t1_and_t2_agree():
    rewards, terminals, dones = random_streams(n_env=2, total=40, seed=7)
    a1, _ = push_steps(NStepAccumulator(2, 3, 0.99), rewards, terminals, dones, 1)
    a2, _ = push_steps(NStepAccumulator(2, 3, 0.99), rewards, terminals, dones, 2)
    assert a1 == a2


def test_accumulator_life_loss_cuts_window_without_reset():
    # n = 3, gamma = .5, one env, r = [1, 2, 4, 8, 16], life loss (terminal, not done) after 1
    # step 1 closes t=0: G = 1 + .5*2 = 2, discount 0, bootstrap obs next_obs[1]
    #              and t=1: G = 2, discount 0
    # steps 2, 3: nothing (window from 2 still open)
    # step 4 closes t=2: G = 4 + .5*8 + .25*16 = 12, m = 3, discount .125, next_obs[4]
    # windows from 3 and 4 remain open
    rewards = torch.tensor([[1.0, 2.0, 4.0, 8.0, 16.0]])
    terminals = torch.tensor([[False, True, False, False, False]])
    dones = torch.zeros(1, 5, dtype=torch.bool)
    acc = NStepAccumulator(1, n=3, gamma=0.5)
    found, outs = push_steps(acc, rewards, terminals, dones, 1)
    assert [o.batch_size[0] for o in outs] == [0, 2, 0, 0, 1]
    assert found == {(0, 0): (2.0, 0.0, 1), (0, 1): (2.0, 0.0, 1), (0, 2): (12.0, 0.125, 4)}
    assert acc.num_pending == 2


def test_accumulator_truncation_bootstraps_and_nothing_crosses_done():
    # n = 4, gamma = .5, r = [1, 2, 4, 100, 100, 1]; truncation (done, not terminal) after 2,
    # game over (terminal and done) after 5
    # step 2 closes t=0: 1 + .5*2 + .25*4 = 3, m = 3, discount .5^3 = .125, next_obs[2]
    #                t=1: 2 + .5*4 = 4, m = 2, discount .25;   t=2: 4, m = 1, discount .5
    # (the 100s after the reset are not in those returns)
    # step 5 closes t=3: 100 + 50 + .25*1 = 150.25, discount 0 (game over)
    #                t=4: 100 + .5*1 = 100.5, discount 0;  t=5: 1, discount 0
    rewards = torch.tensor([[1.0, 2.0, 4.0, 100.0, 100.0, 1.0]])
    terminals = torch.tensor([[False, False, False, False, False, True]])
    dones = torch.tensor([[False, False, True, False, False, True]])
    acc = NStepAccumulator(1, n=4, gamma=0.5)
    found, outs = push_steps(acc, rewards, terminals, dones, 1)
    assert [o.batch_size[0] for o in outs] == [0, 0, 3, 0, 0, 3]
    assert found == {
        (0, 0): (3.0, 0.125, 2),
        (0, 1): (4.0, 0.25, 2),
        (0, 2): (4.0, 0.5, 2),
        (0, 3): (150.25, 0.0, 5),
        (0, 4): (100.5, 0.0, 5),
        (0, 5): (1.0, 0.0, 5),
    }
    assert acc.num_pending == 0


def test_accumulator_uint8_frames_and_trailing_dims():
    # collector-shaped input: reward/terminal/done [N, T, 1], frames [N, T, 4, 6, 6] uint8
    n_env, total = 3, 6
    frames = torch.arange(n_env * total, dtype=torch.uint8).view(n_env, total, 1, 1, 1)
    frames = frames.expand(n_env, total, 4, 6, 6).contiguous()
    acc = NStepAccumulator(n_env, n=2, gamma=0.9)
    outs = []
    for s in range(total):
        outs.append(
            acc.push(
                frames[:, s : s + 1],
                torch.zeros(n_env, 1, dtype=torch.int64),
                torch.ones(n_env, 1, 1),
                torch.zeros(n_env, 1, 1, dtype=torch.bool),
                torch.zeros(n_env, 1, 1, dtype=torch.bool),
                frames[:, s : s + 1] + 100,
            )
        )
    out = outs[-1]  # step 5 closes the windows from step 4: obs id e*6+4, next id e*6+5 (+100)
    assert out["obs"].dtype == torch.uint8 and out["obs"].shape == (n_env, 4, 6, 6)
    assert out["obs"][:, 0, 0, 0].tolist() == [4, 10, 16]
    assert out["next_obs"][:, 0, 0, 0].tolist() == [105, 111, 117]
    close(out["reward"], [1.9] * 3)  # 1 + .9 * 1
    close(out["discount"], [0.81] * 3)  # .9^2


# ------------------------------------------------------------------ heads


def test_dueling_subtracts_mean_advantage_over_actions():
    # F = 2, A = 3, hidden = 2; first layers identity (h = relu(x)); V = h1 + h2;
    # advantage = [h1, h2, h1 + h2]. x = [1, 2]: h = [1, 2], V = 3, A = [1, 2, 3], mean 2
    # Q = 3 + [1 - 2, 2 - 2, 3 - 2] = [2, 3, 4]
    head = QHead(2, 3, hidden=2, dueling=True)
    with torch.no_grad():
        for lin in (head.value[0], head.advantage[0]):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
        head.value[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
        head.value[2].bias.zero_()
        head.advantage[2].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        head.advantage[2].bias.zero_()
    close(head(torch.tensor([[1.0, 2.0]])), [[2.0, 3.0, 4.0]])


def test_dueling_c51_mean_is_over_actions_not_atoms():
    # F = 2, A = 2, K = 2, hidden = 2, h = relu(x); V = [0, 0];
    # advantage flat [h1, h2, 0, 0] -> [A, K] = [[h1, h2], [0, 0]]; mean over actions [h1/2, h2/2]
    # x = [2, 0]: logits = [[2 - 1, 0 - 0], [0 - 1, 0 - 0]] = [[1, 0], [-1, 0]]
    # log_softmax: ln(e + 1) = 1.313262 -> a0 = [1 - 1.313262, -1.313262]
    #              ln(1 + e^-1) = 0.313262 -> a1 = [-1 - 0.313262, -0.313262]
    # (a mean over atoms instead would give [[1, -1], [0, 0]] logits, i.e. other numbers)
    head = QHead(2, 2, hidden=2, dueling=True, num_atoms=2)
    with torch.no_grad():
        for lin in (head.value[0], head.advantage[0]):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
        head.value[2].weight.zero_()
        head.value[2].bias.zero_()
        w = torch.zeros(4, 2)
        w[0, 0] = 1.0
        w[1, 1] = 1.0
        head.advantage[2].weight.copy_(w)
        head.advantage[2].bias.zero_()
    out = head(torch.tensor([[2.0, 0.0]]))
    close(out, [[[-0.313262, -1.313262], [-1.313262, -0.313262]]])


@pytest.mark.parametrize("dueling", [True, False])
@pytest.mark.parametrize("noisy", [True, False])
def test_c51_head_log_probs_normalised(dueling, noisy):
    torch.manual_seed(0)
    head = QHead(16, 4, hidden=8, dueling=dueling, noisy=noisy, num_atoms=51)
    out = head(torch.randn(5, 16))
    assert out.shape == (5, 4, 51)
    close(out.exp().sum(-1), torch.ones(5, 4))
    support = make_support(-10.0, 10.0, 51)
    q = head.q_values(out, support)
    close(q, (out.exp() * support).sum(-1))
    assert q.shape == (5, 4)


def test_scalar_head_shapes_and_expected_q_passthrough():
    head = QHead(16, 4, hidden=8, dueling=False)
    out = head(torch.randn(3, 16))
    assert out.shape == (3, 4)
    assert expected_q(out) is out
    with pytest.raises(ValueError):
        expected_q(torch.zeros(3, 4, 5))


# ------------------------------------------------------------------ noisy nets


def test_noisy_linear_init_and_factorised_noise():
    layer = NoisyLinear(16, 4, sigma0=0.1)
    bound = 1 / math.sqrt(16)
    assert layer.weight_mu.abs().max() <= bound and layer.bias_mu.abs().max() <= bound
    close(layer.weight_sigma, torch.full((4, 16), 0.1 / 4))  # sigma0 / sqrt(p) = 0.1 / 4
    close(layer.bias_sigma, torch.full((4,), 0.1 / 4))
    eps = layer.weight_epsilon
    assert eps.shape == (4, 16) and torch.linalg.matrix_rank(eps) == 1  # factorised: rank one
    close(layer.bias_epsilon, layer.eps_out)


def test_noisy_sigma_gets_gradient_in_train_mode():
    torch.manual_seed(0)
    head = QHead(8, 3, hidden=8, noisy=True, num_atoms=5)
    head.train()
    out = head(torch.randn(4, 8))
    loss = -out[:, 0, 2].mean()
    loss.backward()
    sigmas = [m.weight_sigma.grad for m in head.modules() if isinstance(m, NoisyLinear)]
    assert len(sigmas) == 4
    assert all(g is not None and g.abs().sum() > 0 for g in sigmas)


def test_noisy_eval_is_deterministic_mean_path():
    torch.manual_seed(0)
    layer = NoisyLinear(8, 3)
    x = torch.randn(5, 8)
    layer.eval()
    y1 = layer(x)
    layer.reset_noise()
    y2 = layer(x)
    close(y1, y2, atol=0)
    close(y1, nn.functional.linear(x, layer.weight_mu, layer.bias_mu), atol=1e-6)


def test_noisy_reset_changes_train_output():
    torch.manual_seed(0)
    head = QHead(8, 3, hidden=8, noisy=True)
    head.train()
    x = torch.randn(5, 8)
    y1 = head(x)
    close(head(x), y1, atol=0)  # no resampling inside forward
    head.reset_noise()
    y2 = head(x)
    assert not torch.allclose(y1, y2)
    head.eval()
    close(head(x), head(x), atol=0)


def test_noisy_reset_with_generator_is_reproducible():
    layer = NoisyLinear(8, 3)
    layer.reset_noise(torch.Generator().manual_seed(3))
    e1 = layer.weight_epsilon.clone()
    layer.reset_noise(torch.Generator().manual_seed(3))
    close(layer.weight_epsilon, e1, atol=0)


# ------------------------------------------------------------------ losses

SUPPORT3 = torch.tensor([-1.0, 0.0, 1.0])


def logp(probs):
    return torch.tensor(probs).log()


def test_categorical_loss_hand_example_double_q_and_weights():
    # B = 2, A = 2, K = 3, support [-1, 0, 1]
    # sample 0: online next probs a0 [.1, .2, .7] (Q = .6), a1 [.3, .4, .3] (Q = 0) -> a* = 0
    #           target next probs a0 [.6, .2, .2] (Q = -.4), a1 [0, 0, 1] (Q = 1): the target's
    #           own argmax would be a1. Double Q evaluates a* = 0 -> p = [.6, .2, .2]
    #           r = 0, discount 1 -> m = [.6, .2, .2]; taken a = 1, online probs [.5, .25, .25]
    #           CE = -(.6 ln .5 + .2 ln .25 + .2 ln .25) = .6*.693147 + .4*1.386294 = .970406
    #           (with the target argmax, m = [0, 0, 1], CE would be ln 4 = 1.386294)
    # sample 1: r = 1, discount 0 -> m = [0, 0, 1]; taken a = 0, online probs [.25, .25, .5]
    #           CE = -ln .5 = .693147
    # weights [1, 3]: loss = (1*.970406 + 3*.693147)/2 = 1.524924; loss_ce = .831777
    # q_mean: Q(s0, a1) = -.5 + .25 = -.25, Q(s1, a0) = -.25 + .5 = .25 -> 0
    online = logp([[[0.3, 0.3, 0.4], [0.5, 0.25, 0.25]], [[0.25, 0.25, 0.5], [0.2, 0.6, 0.2]]])
    online.requires_grad_(True)
    online_next = logp([[[0.1, 0.2, 0.7], [0.3, 0.4, 0.3]], [[0.2, 0.3, 0.5], [0.5, 0.3, 0.2]]])
    target_next = logp([[[0.6, 0.2, 0.2], [1e-9, 1e-9, 1.0]], [[0.3, 0.3, 0.4], [0.4, 0.3, 0.3]]])
    online_next.requires_grad_(True)
    target_next.requires_grad_(True)
    out = categorical_double_q_loss(
        online,
        torch.tensor([1, 0]),
        online_next,
        target_next,
        torch.tensor([0.0, 1.0]),
        torch.tensor([1.0, 0.0]),
        SUPPORT3,
        torch.tensor([1.0, 3.0]),
    )
    close(out["td_error"], [0.970406, 0.693147])
    close(out["loss"], torch.tensor(1.524924))
    close(out["loss_ce"], torch.tensor(0.831777))
    close(out["q_mean"], torch.tensor(0.0))
    assert not out["td_error"].requires_grad
    out["loss"].backward()
    assert online.grad is not None and online.grad.abs().sum() > 0
    assert online_next.grad is None and target_next.grad is None  # targets carry no gradient


def test_categorical_loss_weights_scale_linearly():
    g = torch.Generator().manual_seed(0)
    support = make_support(-10.0, 10.0, 11)
    args = [torch.log_softmax(torch.randn(4, 3, 11, generator=g), -1) for _ in range(3)]
    rest = (torch.randn(4, generator=g), torch.full((4,), 0.9), support)
    actions = torch.tensor([0, 1, 2, 0])
    ones = categorical_double_q_loss(args[0], actions, args[1], args[2], *rest, torch.ones(4))
    half = categorical_double_q_loss(
        args[0], actions, args[1], args[2], *rest, torch.full((4,), 0.5)
    )
    close(half["loss"], ones["loss"] * 0.5)
    close(half["loss_ce"], ones["loss_ce"])  # the unweighted term does not change
    close(half["td_error"], ones["td_error"])


def test_huber_loss_hand_example_double_q_and_weights():
    # B = 2, A = 2
    # online Q(s) = [[1, 2], [0, 0]], actions [0, 1] -> Q(s, a) = [1, 0]
    # online Q(s') = [[3, 1], [0, 5]] -> a* = [0, 1]
    # target Q(s') = [[2, 10], [4, -1]] (its own argmax would be [1, 0]) -> Q_t(s', a*) = [2, -1]
    # r = [2, .5], discount [.5, .9] -> y = [2 + .5*2, .5 + .9*(-1)] = [3, -.4]
    # delta = y - Q(s, a) = [2, -.4]; huber = [2 - .5, .5 * .16] = [1.5, .08]
    # weights [1, .5]: loss = (1.5 + .04)/2 = .77; loss_huber = (1.5 + .08)/2 = .79
    # (target argmax instead: y = [7, 4.1] -> |delta| = [6, 4.1])
    online_q = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    online_next = torch.tensor([[3.0, 1.0], [0.0, 5.0]], requires_grad=True)
    target_next = torch.tensor([[2.0, 10.0], [4.0, -1.0]], requires_grad=True)
    out = huber_double_q_loss(
        online_q,
        torch.tensor([0, 1]),
        online_next,
        target_next,
        torch.tensor([2.0, 0.5]),
        torch.tensor([0.5, 0.9]),
        torch.tensor([1.0, 0.5]),
    )
    close(out["td_error"], [2.0, 0.4])
    close(out["loss"], torch.tensor(0.77))
    close(out["loss_huber"], torch.tensor(0.79))
    close(out["q_mean"], torch.tensor(0.5))
    out["loss"].backward()
    # d loss / d Q(s, a): -w * clip(delta, -1, 1) / B = [-1 * 1 / 2, -.5 * (-.4) / 2] = [-.5, .1]
    close(online_q.grad, [[-0.5, 0.0], [0.0, 0.1]])
    assert online_next.grad is None and target_next.grad is None


def test_huber_loss_terminal_ignores_bootstrap():
    # discount 0: y = r = 1 whatever Q(s') is; Q(s, a) = .5 -> delta = .5, huber = .125
    out = huber_double_q_loss(
        torch.tensor([[0.5, 9.0]]),
        torch.tensor([0]),
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[1e6, 0.0]]),
        torch.tensor([1.0]),
        torch.tensor([0.0]),
        torch.tensor([1.0]),
    )
    close(out["loss"], torch.tensor(0.125))
    close(out["td_error"], [0.5])
