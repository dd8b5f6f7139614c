"""A3C math against numbers worked out by hand (GAE, loss terms) and the LSTM reset contract.

Also: the a3c_cnn extractor's shapes at 84 x 84, and every attention-capable extractor inside
the recurrent actor-critic on one gray frame per step.
"""

from __future__ import annotations

import math

import pytest
import torch

from ife_platform.a3c import RecurrentActorCritic, actor_critic_loss, build_actor_critic, gae
from ife_platform.extractors import build_extractor


def close(actual, expected, atol=1e-6):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, atol=atol), (actual, expected)


# ------------------------------------------------------------------ GAE

# T = 4, B = 2, gamma = 0.5.
# Column 0: the episode ends after t = 1 (no bootstrap from V(s_2) into t = 1), bootstrap 4.
# Column 1: the episode ends after the last step, so the bootstrap 100 is ignored.
REWARDS = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
VALUES = torch.tensor([[0.5, 1.0], [1.0, 1.0], [2.0, 1.0], [1.0, 1.0]])
DONES = torch.tensor([[False, False], [True, False], [False, False], [False, True]])
BOOTSTRAP = torch.tensor([4.0, 100.0])
GAMMA = 0.5

# delta_t = r_t + gamma * (1 - d_t) * V_{t+1} - V_t, V_4 = bootstrap
# column 0:  t0: 1 + 0.5 * 1.0 - 0.5 =  1.0
#            t1: 2 - 1.0 (done: no V_2)  =  1.0
#            t2: 0 + 0.5 * 1.0 - 2.0 = -1.5
#            t3: 1 + 0.5 * 4.0 - 1.0 =  2.0
# column 1:  t0..t2: 0 + 0.5 * 1 - 1 = -0.5;  t3: 1 - 1 (done: no bootstrap) = 0.0
#
# lam = 1 (gamma * lam = 0.5), A_t = delta_t + 0.5 * (1 - d_t) * A_{t+1}:
# column 0:  A3 = 2.0;  A2 = -1.5 + 0.5 * 2.0 = -0.5;  A1 = 1.0 (done);  A0 = 1.0 + 0.5 * 1.0 = 1.5
#            R = A + V = [2.0, 2.0, 1.5, 3.0]
#            = the n-step returns: R3 = 1 + 0.5 * 4 = 3, R2 = 0 + 0.5 * 3 = 1.5, R1 = 2 (done),
#              R0 = 1 + 0.5 * 2 = 2.
# column 1:  A3 = 0;  A2 = -0.5;  A1 = -0.5 + 0.5 * -0.5 = -0.75;  A0 = -0.5 + 0.5 * -0.75 = -0.875
#            R = [0.125, 0.25, 0.5, 1.0]  (= 1, 0.5, 0.25, 0.125 discounted back from t3)
#
# lam = 0.5 (gamma * lam = 0.25):
# column 0:  A3 = 2.0;  A2 = -1.5 + 0.25 * 2.0 = -1.0;  A1 = 1.0;  A0 = 1.0 + 0.25 * 1.0 = 1.25
#            R = [1.75, 2.0, 1.0, 3.0]
# column 1:  A3 = 0;  A2 = -0.5;  A1 = -0.5 + 0.25 * -0.5 = -0.625;
#            A0 = -0.5 + 0.25 * -0.625 = -0.65625;  R = [0.34375, 0.375, 0.5, 1.0]


@pytest.mark.parametrize(
    ("lam", "advantages", "returns"),
    [
        (
            1.0,
            [[1.5, -0.875], [1.0, -0.75], [-0.5, -0.5], [2.0, 0.0]],
            [[2.0, 0.125], [2.0, 0.25], [1.5, 0.5], [3.0, 1.0]],
        ),
        (
            0.5,
            [[1.25, -0.65625], [1.0, -0.625], [-1.0, -0.5], [2.0, 0.0]],
            [[1.75, 0.34375], [2.0, 0.375], [1.0, 0.5], [3.0, 1.0]],
        ),
    ],
)
def test_gae_hand_checked(lam, advantages, returns):
    adv, ret = gae(REWARDS, VALUES, BOOTSTRAP, DONES, GAMMA, lam)
    close(adv, advantages)
    close(ret, returns)


def test_gae_lam0_is_one_step_td_error_and_float_dones_work():
    # lam = 0: A_t = delta_t, the deltas worked out above.
    adv, ret = gae(REWARDS, VALUES, BOOTSTRAP, DONES.float(), GAMMA, 0.0)
    close(adv, [[1.0, -0.5], [1.0, -0.5], [-1.5, -0.5], [2.0, 0.0]])
    close(ret, adv + VALUES)


def test_gae_targets_carry_no_gradient():
    values = VALUES.clone().requires_grad_(True)
    adv, ret = gae(REWARDS, values, BOOTSTRAP, DONES, GAMMA, 1.0)
    assert not adv.requires_grad and not ret.requires_grad


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\[T, B\]"):
        gae(REWARDS[:3], VALUES, BOOTSTRAP, DONES, GAMMA, 1.0)
    with pytest.raises(ValueError, match="bootstrap_value"):
        gae(REWARDS, VALUES, BOOTSTRAP[:1], DONES, GAMMA, 1.0)


# ------------------------------------------------------------------ actor-critic loss

# T = 2, B = 1, A = 2.
# t0: logits [0, 0]      -> pi = [0.5, 0.5],   a = 0, log pi(a) = -ln 2, A = 2, V = 1, R = 3
# t1: logits [ln 3, 0]   -> pi = [0.75, 0.25], a = 1, log pi(a) = -ln 4, A = 1, V = 0, R = 1
# policy_loss = -mean(log pi(a) * A) = -(-2 ln 2 - ln 4) / 2 = (2 ln 2 + 2 ln 2) / 2 = 2 ln 2
#             = 1.3862944
# value_loss  = 0.5 * mean((R - V)^2) = 0.5 * (4 + 1) / 2 = 1.25
# entropy     = mean(ln 2, -(0.75 ln 0.75 + 0.25 ln 0.25))
#             = mean(0.6931472, 0.2157616 + 0.3465736) = mean(0.6931472, 0.5623351) = 0.6277412
# loss        = 1.3862944 + 0.5 * 1.25 - 0.01 * 0.6277412 = 2.0050170
LOGITS = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])
ACTIONS = torch.tensor([[0], [1]])
ADVANTAGES = torch.tensor([[2.0], [1.0]])
AC_VALUES = torch.tensor([[1.0], [0.0]])
AC_RETURNS = torch.tensor([[3.0], [1.0]])


def test_actor_critic_loss_terms_hand_checked():
    out = actor_critic_loss(LOGITS, AC_VALUES, ACTIONS, ADVANTAGES, AC_RETURNS)
    assert set(out) == {"loss", "loss_policy", "loss_value", "entropy"}
    close(out["loss_policy"], 2 * math.log(2.0))
    close(out["loss_policy"], 1.3862944)
    close(out["loss_value"], 1.25)
    close(out["entropy"], 0.6277412)
    close(out["loss"], 2.0050170)
    for name in ("loss_policy", "loss_value", "entropy"):
        assert not out[name].requires_grad


def test_actor_critic_loss_gradients_hand_checked():
    logits = LOGITS.clone().requires_grad_(True)
    values = AC_VALUES.clone().requires_grad_(True)
    adv = ADVANTAGES.clone().requires_grad_(True)
    ret = AC_RETURNS.clone().requires_grad_(True)
    out = actor_critic_loss(logits, values, ACTIONS, adv, ret, entropy_coef=0.0)
    out["loss"].backward()
    # d loss / d V_t = value_coef * 0.5 * 2 * (V_t - R_t) / N = 0.5 * (V_t - R_t) / 2
    #   t0: 0.5 * (1 - 3) / 2 = -0.5;  t1: 0.5 * (0 - 1) / 2 = -0.25
    close(values.grad, [[-0.5], [-0.25]])
    # d policy_loss / d logits_t = -A_t / N * (onehot(a_t) - pi_t)
    #   t0: -2 / 2 * ([1, 0] - [0.5, 0.5]) = [-0.5, 0.5]
    #   t1: -1 / 2 * ([0, 1] - [0.75, 0.25]) = [0.375, -0.375]
    close(logits.grad, [[[-0.5, 0.5]], [[0.375, -0.375]]])
    # Advantages and returns are targets: no gradient flows into them.
    assert adv.grad is None and ret.grad is None


@pytest.mark.parametrize("num_actions", [2, 6, 18])
def test_entropy_of_uniform_policy_is_log_a(num_actions):
    # Constant logits (any constant, per step) give pi = 1/A and H = ln A at every step.
    logits = torch.arange(6.0).view(3, 2, 1).expand(3, 2, num_actions)
    zeros = torch.zeros(3, 2)
    out = actor_critic_loss(logits, zeros, zeros.long(), zeros, zeros)
    close(out["entropy"], math.log(num_actions))
    # With zero advantages and perfect values only the entropy bonus is left.
    close(out["loss"], -0.01 * math.log(num_actions))


# ------------------------------------------------------------------ a3c_cnn extractor

# Hand-worked sides (conv n + 2p - k + 1, then pool floor(n / 2)):
#   84: 84 -> 42, 40 -> 20, 19 -> 9, 9 -> 4;   80: 80 -> 40, 38 -> 19, 18 -> 9, 9 -> 4
# Parameters (1 input frame): 1*32*25+32 = 832; 32*32*25+32 = 25632; 32*64*16+64 = 32832;
#   64*64*9+64 = 36928 -> 96224


@pytest.mark.parametrize("size", [84, 80])
def test_a3c_cnn_shapes_and_features_dim(size):
    model = build_extractor("a3c_cnn", in_channels=1, input_size=size).eval()
    assert model.features_dim == 64 * 4 * 4 == 1024
    assert not model.has_attention
    obs = torch.randint(0, 256, (3, 1, size, size), dtype=torch.uint8)
    with torch.no_grad():
        out = model(obs)
        torch.testing.assert_close(out, model(obs.float() / 255.0))
    assert out.shape == (3, 1024) and out.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 96224


def test_a3c_cnn_too_small_input_raises():
    with pytest.raises(ValueError, match="too small"):
        build_extractor("a3c_cnn", input_size=12)


# ------------------------------------------------------------------ LSTM state reset / carry

T, B, A = 4, 2, 5


@pytest.fixture(scope="module")
def net() -> RecurrentActorCritic:
    torch.manual_seed(0)
    return build_actor_critic("a3c_cnn", A, hidden=32).double().eval()


def _obs(steps: int = T, batch: int = B, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (steps, batch, 1, 84, 84), dtype=torch.uint8, generator=gen)


def _random_state(batch: int = B, hidden: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(batch, hidden, generator=gen, dtype=torch.float64)
    return h, torch.randn(batch, hidden, generator=gen, dtype=torch.float64)


def _no_first(steps: int, batch: int = B) -> torch.Tensor:
    return torch.zeros(steps, batch, dtype=torch.bool)


@torch.no_grad()
def test_reset_at_first_equals_two_separate_sequences(net):
    obs, state0 = _obs(), _random_state()  # nonzero start: "carried" must be visible
    first = _no_first(T)
    first[2, 0] = True  # column 0: a new episode starts at t = 2; column 1 runs on
    logits, values, (h, c) = net(obs, state0, first)

    # Separately: t < 2 from the carried state, then t >= 2 from zeros (column 0) or from the
    # carried state (column 1).
    l_a, v_a, (h_a, c_a) = net(obs[:2], state0, _no_first(2))
    h_mid = torch.stack([torch.zeros_like(h_a[0]), h_a[1]])
    c_mid = torch.stack([torch.zeros_like(c_a[0]), c_a[1]])
    l_b, v_b, (h_b, c_b) = net(obs[2:], (h_mid, c_mid), _no_first(2))
    torch.testing.assert_close(logits, torch.cat([l_a, l_b]))
    torch.testing.assert_close(values, torch.cat([v_a, v_b]))
    torch.testing.assert_close(h, h_b)
    torch.testing.assert_close(c, c_b)

    # Column 0 from t = 2 on is exactly a fresh episode run alone from zeros.
    l_0, v_0, _ = net(obs[2:, :1], net.initial_state(1), _no_first(2, 1))
    torch.testing.assert_close(logits[2:, :1], l_0)
    torch.testing.assert_close(values[2:, :1], v_0)

    # The reset matters (column 0) and is not applied elsewhere (column 1).
    l_carry, _, _ = net(obs, state0, _no_first(T))
    assert not torch.allclose(logits[2:, 0], l_carry[2:, 0])
    torch.testing.assert_close(logits[:, 1], l_carry[:, 1])
    torch.testing.assert_close(logits[:2], l_carry[:2])


@torch.no_grad()
def test_forward_equals_step_by_step(net):
    obs, state = _obs(seed=2), _random_state()
    first = _no_first(T)
    first[0, 1] = True
    first[2, 0] = True
    logits, values, (h, c) = net(obs, state, first)
    for t in range(T):
        l_t, v_t, state = net.step(obs[t], state, first[t])
        assert l_t.shape == (B, A) and v_t.shape == (B,)
        torch.testing.assert_close(l_t, logits[t])
        torch.testing.assert_close(v_t, values[t])
    torch.testing.assert_close(state[0], h)
    torch.testing.assert_close(state[1], c)


@torch.no_grad()
def test_unroll_is_nn_lstmcell_with_the_input_half_batched(net):
    from ife_platform.a3c.model import lstm_step

    # one step: the same equations, gate order and parameters as nn.LSTMCell
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, net.extractor.features_dim, generator=gen, dtype=torch.float64)
    state = _random_state(3)
    gates_x = torch.nn.functional.linear(x, net.lstm.weight_ih, net.lstm.bias_ih)
    h, c = lstm_step(net.lstm, gates_x, state)
    h_ref, c_ref = net.lstm(x, state)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)

    # a whole unroll with resets against a per-step nn.LSTMCell loop
    obs, state = _obs(seed=4), _random_state()
    first = _no_first(T)
    first[1, 0] = True
    logits, values, _ = net(obs, state, first)
    feats = net.extractor(obs.flatten(0, 1)).view(T, B, -1)
    h, c = state
    for t in range(T):
        keep = (~first[t]).double().unsqueeze(-1)
        h, c = net.lstm(feats[t], (h * keep, c * keep))
        torch.testing.assert_close(logits[t], net.actor(h))
        torch.testing.assert_close(values[t], net.critic(h).squeeze(-1))


@torch.no_grad()
def test_state_carried_across_rollout_boundary(net):
    obs = _obs(steps=6, seed=3)
    first = _no_first(6)
    first[0] = True  # both episodes start at t = 0 ...
    first[4, 1] = True  # ... and column 1 starts another in the second rollout
    state = _random_state()  # overwritten by the reset at t = 0
    logits, values, final = net(obs, state, first)
    l_1, v_1, mid = net(obs[:3], state, first[:3])
    l_2, v_2, end = net(obs[3:], mid, first[3:])
    torch.testing.assert_close(logits, torch.cat([l_1, l_2]))
    torch.testing.assert_close(values, torch.cat([v_1, v_2]))
    torch.testing.assert_close(final[0], end[0])
    torch.testing.assert_close(final[1], end[1])
    # A first at t = 0 makes the incoming state irrelevant.
    l_z, _, _ = net(obs, net.initial_state(B), first)
    torch.testing.assert_close(logits, l_z)


def test_initial_state_and_heads_init(net):
    h, c = net.initial_state(3)
    assert h.shape == c.shape == (3, 32) and h.dtype == torch.float64
    assert not h.any() and not c.any() and h.data_ptr() != c.data_ptr()
    # Normalised-columns init: every output unit's weight row has norm 0.01 (actor), 1 (critic).
    close(net.actor.weight.norm(dim=1), torch.full((A,), 0.01))
    close(net.critic.weight.norm(dim=1), [1.0])
    assert not net.actor.bias.any() and not net.critic.bias.any()
    assert not net.lstm.bias_ih.any() and not net.lstm.bias_hh.any()


def test_build_rejects_fixed_extractor_args():
    with pytest.raises(ValueError, match="in_channels"):
        build_actor_critic("a3c_cnn", 4, extractor_kwargs={"in_channels": 4})


# ------------------------------------------------------------------ extractors inside A3C-LSTM

GRIDS = {"a3c_cnn": None, "cnn_attention": (15, 15), "ife": (14, 14)}


@pytest.mark.parametrize("name", sorted(GRIDS))
def test_extractors_inside_recurrent_actor_critic(name):
    torch.manual_seed(0)
    kwargs = {} if name == "a3c_cnn" else {"width": 1}
    net = build_actor_critic(name, A, extractor_kwargs=kwargs, hidden=64)
    assert net.extractor.in_channels == 1 and net.extractor.input_size == 84
    assert net.lstm.input_size == net.extractor.features_dim
    obs, first = _obs(steps=2, batch=3), _no_first(2, 3)
    first[0] = True
    logits, values, (h, c) = net(obs, net.initial_state(3), first)
    assert logits.shape == (2, 3, A) and values.shape == (2, 3)
    assert h.shape == c.shape == (3, 64)
    grid = GRIDS[name]
    if grid is None:
        assert net.attention_mask is None
    else:
        mask = net.attention_mask
        assert mask.shape == (2 * 3, *grid)  # [T * B, rows, cols]
        torch.testing.assert_close(mask.sum(dim=(1, 2)), torch.ones(6))
    # The whole network trains through the loss.
    adv, ret = gae(torch.ones(2, 3), values, torch.zeros(3), torch.zeros(2, 3), 0.99, 1.0)
    actions = torch.zeros(2, 3, dtype=torch.long)
    actor_critic_loss(logits, values, actions, adv, ret)["loss"].backward()
    for part in (net.extractor, net.lstm, net.actor, net.critic):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    # One acting step exposes the [B, rows, cols] mask of that step.
    with torch.no_grad():
        l_t, v_t, _ = net.step(obs[0], (h, c), torch.zeros(3, dtype=torch.bool))
    assert l_t.shape == (3, A) and v_t.shape == (3,)
    if grid is not None:
        assert net.attention_mask.shape == (3, *grid)


def test_ife_default_width_mask_is_14x14_and_sums_to_one():
    torch.manual_seed(0)
    net = build_actor_critic("ife", 6)
    assert net.extractor.features_dim == 4096 and net.extractor.cell_grid == (14, 14)
    with torch.no_grad():
        net.step(_obs(steps=1, batch=2)[0], net.initial_state(2), torch.ones(2, dtype=torch.bool))
    mask = net.attention_mask
    assert mask.shape == (2, 14, 14)
    assert (mask >= 0).all()
    torch.testing.assert_close(mask.sum(dim=(1, 2)), torch.ones(2))
