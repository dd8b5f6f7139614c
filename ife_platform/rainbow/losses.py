"""Rainbow losses as pure functions: C51 projection, categorical and Huber double-Q losses.

Each loss returns a dict: ``loss`` is the scalar to optimise (importance-sampling weighted
mean), named terms start with ``loss_`` (unweighted means, for logging), ``td_error`` [B] is
the detached per-sample error for replay priorities and ``q_mean`` is the mean online Q(s, a)
of the taken actions (detached).

References:
    Bellemare et al. 2017, "A Distributional Perspective on RL" (C51, Algorithm 1).
    van Hasselt et al. 2016, "Deep RL with Double Q-learning" (Eq. 4).
    Hessel et al. 2018, "Rainbow" (Eq. 3-4: multi-step distributional double-Q target, KL loss).
    Schaul et al. 2016, "Prioritized Experience Replay" (importance-sampling weights, Alg. 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "categorical_double_q_loss",
    "huber_double_q_loss",
    "make_support",
    "project_distribution",
]


def make_support(v_min: float, v_max: float, num_atoms: int) -> Tensor:
    """Atom values z_i = v_min + i * (v_max - v_min) / (K - 1), i = 0..K-1, shape [K]."""
    if num_atoms < 2:
        raise ValueError(f"a categorical support needs at least 2 atoms, got {num_atoms}")
    return torch.linspace(v_min, v_max, num_atoms)


def project_distribution(
    next_probs: Tensor, rewards: Tensor, discounts: Tensor, support: Tensor
) -> Tensor:
    """Project the distribution of r + discount * Z onto the fixed support (C51).

    Bellemare et al. 2017, Algorithm 1: for every atom j,
        Tz_j = clamp(r + discount * z_j, v_min, v_max),  b_j = (Tz_j - v_min) / dz,
        l = floor(b_j), u = l + 1,
        m_l += p_j (u - b_j),  m_u += p_j (b_j - l).
    Here l is capped at K-2 so that u = l + 1 is always a valid atom: when b_j is an integer
    (Tz_j lands exactly on an atom, including v_min and v_max after clamping) all of p_j goes
    to that atom, with weight 1 on one neighbour and 0 on the other, and no mass is lost (the
    naive l = floor, u = ceil version drops p_j when l == u).

    Args:
        next_probs: p_j(s', a*), probabilities over atoms [B, K].
        rewards: n-step returns r [B].
        discounts: gamma^m, or 0 after a terminal [B].
        support: atom values z, evenly spaced [K].

    Returns:
        Projected target probabilities m [B, K]; each row sums to the row sum of next_probs.
    """
    num_atoms = support.shape[0]
    v_min, v_max = support[0], support[-1]
    delta_z = (v_max - v_min) / (num_atoms - 1)
    tz = rewards.unsqueeze(-1) + discounts.unsqueeze(-1) * support  # [B, K]
    tz = tz.clamp(v_min, v_max)
    b = ((tz - v_min) / delta_z).clamp(0, num_atoms - 1)  # [B, K], in [0, K-1]
    lower = b.floor().clamp(max=num_atoms - 2).long()  # [B, K], in [0, K-2]
    upper = lower + 1  # [B, K], in [1, K-1]
    target = torch.zeros_like(next_probs)
    target.scatter_add_(1, lower, next_probs * (upper.to(b.dtype) - b))
    target.scatter_add_(1, upper, next_probs * (b - lower.to(b.dtype)))
    return target


def categorical_double_q_loss(
    online_logp: Tensor,
    actions: Tensor,
    online_next_logp: Tensor,
    target_next_logp: Tensor,
    rewards: Tensor,
    discounts: Tensor,
    support: Tensor,
    weights: Tensor,
) -> dict[str, Tensor]:
    """Distributional (C51) double-Q loss with IS weights (Rainbow, Hessel et al. 2018).

    a* = argmax_a sum_i z_i p_i(s', a; online)            (double Q: the ONLINE net selects)
    m  = Phi(r + discount * z, p(s', a*; target))         (the TARGET net evaluates; projection)
    CE = -sum_i m_i log p_i(s, a; online)                  (Rainbow Eq. 3, KL up to a constant)
    loss = mean_b w_b * CE_b                               (PER importance weights)

    Args:
        online_logp: online log-probabilities at s, [B, A, K].
        actions: taken actions, [B] (int).
        online_next_logp: online log-probabilities at s' (action selection), [B, A, K].
        target_next_logp: target-net log-probabilities at s' (evaluation), [B, A, K].
        rewards: n-step returns, [B].
        discounts: bootstrap discount gamma^m (0 after a terminal), [B].
        support: atom values z, [K].
        weights: importance-sampling weights, [B] (ones without PER).

    Returns:
        dict with ``loss`` (scalar, weighted mean), ``loss_ce`` (scalar, unweighted mean
        cross-entropy), ``td_error`` ([B], detached cross-entropy, for priorities) and
        ``q_mean`` (scalar, detached mean online Q(s, a)).
    """
    actions = actions.reshape(-1).long()
    batch = torch.arange(actions.shape[0], device=actions.device)
    with torch.no_grad():
        next_q = (online_next_logp.exp() * support).sum(-1)  # [B, A]
        next_actions = next_q.argmax(dim=1)  # [B], a* from the online net
        next_probs = target_next_logp[batch, next_actions].exp()  # [B, K], target net
        target = project_distribution(next_probs, rewards.float(), discounts.float(), support)
    logp_a = online_logp[batch, actions]  # [B, K]
    ce = -(target * logp_a).sum(-1)  # [B]
    loss = (weights.reshape(-1) * ce).mean()
    with torch.no_grad():
        q_mean = (logp_a.exp() * support).sum(-1).mean()
    return {"loss": loss, "loss_ce": ce.mean().detach(), "td_error": ce.detach(), "q_mean": q_mean}


def huber_double_q_loss(
    online_q: Tensor,
    actions: Tensor,
    online_next_q: Tensor,
    target_next_q: Tensor,
    rewards: Tensor,
    discounts: Tensor,
    weights: Tensor,
) -> dict[str, Tensor]:
    """Huber double-Q loss with IS weights (Fast Rainbow profile).

    a* = argmax_a Q(s', a; online)                        (van Hasselt et al. 2016, Eq. 4)
    y  = r + discount * Q(s', a*; target)                  (n-step target, discount gamma^m or 0)
    delta = y - Q(s, a; online)
    loss = mean_b w_b * huber(delta_b),  huber(x) = x^2/2 if |x| < 1 else |x| - 1/2

    Args:
        online_q: online Q at s, [B, A].
        actions: taken actions, [B] (int).
        online_next_q: online Q at s' (action selection), [B, A].
        target_next_q: target-net Q at s' (evaluation), [B, A].
        rewards: n-step returns, [B].
        discounts: bootstrap discount gamma^m (0 after a terminal), [B].
        weights: importance-sampling weights, [B] (ones without PER).

    Returns:
        dict with ``loss`` (scalar, weighted mean), ``loss_huber`` (scalar, unweighted mean),
        ``td_error`` ([B], detached |delta|, for priorities) and ``q_mean`` (scalar, detached
        mean online Q(s, a)).
    """
    actions = actions.reshape(-1, 1).long()
    q_sa = online_q.gather(1, actions).squeeze(1)  # [B]
    with torch.no_grad():
        next_actions = online_next_q.argmax(dim=1, keepdim=True)  # [B, 1], online selects
        next_q = target_next_q.gather(1, next_actions).squeeze(1)  # [B], target evaluates
        target = rewards.float() + discounts.float() * next_q  # [B]
    huber = F.smooth_l1_loss(q_sa, target, reduction="none", beta=1.0)  # [B]
    loss = (weights.reshape(-1) * huber).mean()
    return {
        "loss": loss,
        "loss_huber": huber.mean().detach(),
        "td_error": (target - q_sa).abs().detach(),
        "q_mean": q_sa.mean().detach(),
    }
