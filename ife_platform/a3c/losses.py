"""A3C losses as pure functions: generalised advantage estimation and the actor-critic loss.

Shapes are time-major: ``[T, B]`` for a rollout of ``T`` steps from ``B`` environments.
``dones[t]`` means the episode ended AFTER step ``t`` (the transition ``s_t -> s_{t+1}`` was
terminal, or truncated and treated as terminal): nothing is bootstrapped across it, and the
next step ``t + 1`` (if any) starts a new episode.

References:
    Mnih et al. 2016, "Asynchronous Methods for Deep RL" (arXiv 1602.01783), Algorithm S3:
        policy gradient grad log pi(a_t|s_t) A_t, value regression (R_t - V(s_t))^2, and the
        entropy bonus beta * H(pi(.|s_t)) (Sec. 4, "Asynchronous advantage actor-critic").
    Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
        Estimation" (arXiv 1506.02438), Eq. 11-16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["actor_critic_loss", "gae"]


@torch.no_grad()
def gae(
    rewards: Tensor,
    values: Tensor,
    bootstrap_value: Tensor,
    dones: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates and the matching value targets.

    Schulman et al. 2016, Eq. 11-16, with an episode end cutting both the bootstrap and the
    recursion (``m_t = 1 - dones[t]``, ``V_T = bootstrap_value``):

        delta_t = r_t + gamma * m_t * V_{t+1} - V_t                         (Eq. 12)
        A_t     = delta_t + gamma * lam * m_t * A_{t+1},  A_T = 0            (Eq. 16)
        R_t     = A_t + V_t                                                 (value target)

    With ``lam = 1`` the targets are A3C's n-step bootstrapped returns
    ``R_t = r_t + gamma * m_t * R_{t+1}``, ``R_T = V_T`` (Mnih et al. 2016, Algorithm S3), and
    ``A_t = R_t - V_t``; with ``lam = 0``, ``A_t = delta_t`` (one-step TD error).

    Everything is computed without gradient: advantages and returns are targets.

    Args:
        rewards: r_t, ``[T, B]``.
        values: V(s_t) from the critic, ``[T, B]`` (detached here).
        bootstrap_value: V(s_T), the critic's value of the state after the last step, ``[B]``
            (ignored where ``dones[T - 1]``).
        dones: episode ended after step t, ``[T, B]`` (bool or 0/1).
        gamma: discount factor.
        lam: GAE lambda (1.0 in A3C-LSTM).

    Returns:
        ``(advantages [T, B], returns [T, B])``, in the dtype of ``values``.
    """
    if rewards.shape != values.shape or dones.shape != values.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and dones "
            f"{tuple(dones.shape)} must all be [T, B]"
        )
    if bootstrap_value.shape != values.shape[1:]:
        raise ValueError(
            f"bootstrap_value must be [B] = {tuple(values.shape[1:])}, "
            f"got {tuple(bootstrap_value.shape)}"
        )
    values = values.detach()
    rewards = rewards.to(values.dtype)
    not_done = 1.0 - dones.to(values.dtype)  # [T, B]  m_t
    bootstrap = bootstrap_value.detach().to(values.dtype)  # [B]  V_T
    next_values = torch.cat([values[1:], bootstrap[None]])  # [T, B]  V_{t+1}
    deltas = rewards + gamma * not_done * next_values - values  # [T, B]  delta_t
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(bootstrap)  # A_{t+1}, [B]
    for t in reversed(range(values.shape[0])):
        running = deltas[t] + gamma * lam * not_done[t] * running
        advantages[t] = running
    return advantages, advantages + values


def actor_critic_loss(
    logits: Tensor,
    values: Tensor,
    actions: Tensor,
    advantages: Tensor,
    returns: Tensor,
    entropy_coef: float = 0.01,
    value_coef: float = 0.5,
    sampled: Tensor | None = None,
) -> dict[str, Tensor]:
    """The A3C loss: policy gradient + value regression - entropy bonus (Mnih et al. 2016).

    With ``N = T * B`` and ``pi = softmax(logits)``:

        policy_loss = -1/N sum_t log pi(a_t | s_t) * A_t          (A_t detached)
        value_loss  = 1/N sum_t 0.5 * (R_t - V(s_t))^2            (R_t detached)
        entropy     = 1/N sum_t H(pi(. | s_t)),  H = -sum_a pi(a) log pi(a)
        loss        = policy_loss + value_coef * value_loss - entropy_coef * entropy

    Convention: terms are MEANS over the ``T * B`` steps, and ``value_loss`` keeps the 0.5 of
    the squared error, so with ``value_coef = 0.5`` the value term weighs
    ``0.25 * mean((R - V)^2)``. The reference A3C-LSTM code sums over the rollout instead
    (``policy_loss + 0.5 * sum_t 0.5 * (R_t - V_t)^2``): the same relative weights, but its
    gradients are ``T`` times larger (20 x for 20-step rollouts); a learning rate tuned there
    does not carry over unchanged.

    Args:
        logits: unnormalised action scores, ``[T, B, A]``.
        values: V(s_t) with gradient, ``[T, B]``.
        actions: actions taken, int64 ``[T, B]``.
        advantages: A_t (e.g. from :func:`gae`), ``[T, B]``; detached here.
        returns: value targets R_t, ``[T, B]``; detached here.
        entropy_coef: beta, weight of the entropy bonus (0.01 in A3C).
        value_coef: weight of ``value_loss`` in ``loss`` (0.5 in A3C).
        sampled: bool ``[T, B]``, the action was sampled from the policy (None: every one).
            A step whose action the env forced (FIRE after a lost life) adds nothing to the
            policy and entropy sums, which keep their ``1/N``: the reference presses that FIRE
            inside its fire-reset wrapper, where no policy acts. Its value term stays.

    Returns:
        ``loss`` (scalar to optimise, with gradient) and the detached terms for logging:
        ``loss_policy``, ``loss_value`` (the platform's ``loss_*`` names), ``entropy``.
    """
    if logits.shape[:-1] != values.shape or actions.shape != values.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be [T, B, A] and values "
            f"{tuple(values.shape)}, actions {tuple(actions.shape)} [T, B]"
        )
    if sampled is not None and sampled.shape != values.shape:
        raise ValueError(f"sampled {tuple(sampled.shape)} must be [T, B] {tuple(values.shape)}")
    log_probs = F.log_softmax(logits.float(), dim=-1)  # [T, B, A], fp32 under any autocast
    logp_a = log_probs.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)  # [T, B]
    step_entropy = -(log_probs.exp() * log_probs).sum(-1)  # [T, B]  H(pi(.|s_t))
    step_policy = logp_a * advantages.detach()  # [T, B]
    if sampled is not None:
        keep = sampled.to(device=values.device, dtype=torch.bool)
        step_policy = torch.where(keep, step_policy, torch.zeros_like(step_policy))
        step_entropy = torch.where(keep, step_entropy, torch.zeros_like(step_entropy))
    policy_loss = -step_policy.mean()
    value_loss = 0.5 * (returns.detach() - values).pow(2).mean()
    entropy = step_entropy.mean()  # mean over [T, B] of H(pi)
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
    return {
        "loss": loss,
        "loss_policy": policy_loss.detach(),
        "loss_value": value_loss.detach(),
        "entropy": entropy.detach(),
    }
