"""N-step returns: a pure reference function and a streaming, vectorised accumulator.

Multi-step targets (Sutton 1988; Rainbow, Hessel et al. 2018, Eq. 2):
    G_t^(n) = sum_{k=0}^{n-1} gamma^k r_{t+k},   target = G_t^(n) + gamma^n * Q(s_{t+n}, .)
with the window cut at the first learning terminal (no bootstrap, discount 0) or at the end of
the episode's data (truncation: bootstrap with gamma^m from the observation after the last step).

Two notions of "end" (Atari-100k / Fast Rainbow protocol, see agent profiles):
    terminal: learning terminal = game over OR life loss. Cuts the n-step window and sets the
        bootstrap discount to 0. A life loss does NOT reset the env: the next step continues
        the same game, but it must not be in the same window.
    done: the episode ended (game over or time-limit truncation) and the env was reset after
        this step. Cuts the window; nothing crosses it. Truncation (done and not terminal)
        still bootstraps, with discount gamma^m.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor

__all__ = ["NStepAccumulator", "nstep_returns", "nstep_targets"]


def nstep_targets(
    rewards: Tensor, terminals: Tensor, gamma: float, n: int
) -> tuple[Tensor, Tensor, Tensor]:
    """N-step returns, bootstrap discounts and bootstrap indices for one episode segment.

    For each step t, with m = min(n, steps up to and including the first terminal at or after
    t, steps available T - t):
        returns[t]    = G_t = sum_{k=0}^{m-1} gamma^k r_{t+k}
        discounts[t]  = 0 if a terminal lies in r_t .. r_{t+m-1}, else gamma^m
        next_index[t] = t + m, the index of the bootstrap observation (the observation after
                        step t+m-1; index T means the observation after the last step).

    Truncation at the end of the data: a window that runs past the last step is shortened to
    m = T - t < n and still bootstraps (discount gamma^m) from the observation after the last
    step. That is the right target when the segment ended by a time-limit truncation; for a
    segment that is still running such windows are incomplete, and :class:`NStepAccumulator`
    holds them back until n later steps or a terminal / done arrive.

    This is a plain loop written for clarity; it is the reference that tests compare the
    vectorised accumulator against.

    Args:
        rewards: r_t, shape [T].
        terminals: learning terminal after step t (bool), shape [T].
        gamma: discount factor.
        n: number of steps (>= 1).

    Returns:
        (returns [T] float32, discounts [T] float32, next_index [T] int64).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    r = rewards.reshape(-1).tolist()
    term = terminals.reshape(-1).bool().tolist()
    num = len(r)
    returns, discounts, next_index = [], [], []
    for t in range(num):
        g, m, cut = 0.0, 0, False
        for k in range(n):
            if t + k >= num:  # end of the available data: truncated window
                break
            g += gamma**k * r[t + k]
            m = k + 1
            if term[t + k]:  # the first terminal ends the window, no bootstrap
                cut = True
                break
        returns.append(g)
        discounts.append(0.0 if cut else gamma**m)
        next_index.append(t + m)
    return (
        torch.tensor(returns, dtype=torch.float32),
        torch.tensor(discounts, dtype=torch.float32),
        torch.tensor(next_index, dtype=torch.int64),
    )


#: Name used in docs/design.md; same function.
nstep_returns = nstep_targets


class NStepAccumulator:
    """Turn streams of one-step transitions from N lock-stepped envs into n-step transitions.

    ``push`` takes a collector batch [N, T] and returns every n-step transition whose window
    closed in it: n steps are known, or a terminal / done cut the window earlier. A window that
    starts at step t is emitted in the call that delivers its last step t+m-1, so the bootstrap
    observation is always ``next_obs`` of a step of the current batch.

    Every env has at most n open windows, one per start step, kept in slot (start % n) of small
    [N, n] tensors: the running return G, the length m and an open flag. Each new step r
    updates every open window at once (G += gamma^m r; m += 1) and closes those that reached
    length n or met a terminal / done. This loop runs over the T steps of a batch only (T = 1
    in the Fast Rainbow / DER collectors), vectorised over envs and windows.

    Observations and actions of start steps live in a ring buffer (global step % capacity,
    capacity >= n - 1 + T, grown when a larger batch arrives). Each batch is written once with
    slice copies and the starts of emitted windows are gathered with one index_select, so per
    call the frame traffic is: write the batch, gather obs and next_obs of the M outputs.

    Args:
        num_envs: N, the number of parallel envs (fixed).
        n: number of steps (>= 1).
        gamma: discount factor.
    """

    def __init__(self, num_envs: int, n: int, gamma: float) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        self.n = n
        self.gamma = gamma
        self._powers = torch.tensor([gamma**k for k in range(n + 1)])  # gamma^0 .. gamma^n
        self._steps = 0  # global steps pushed per env (envs are lock-stepped)
        self._ret: Tensor | None = None  # [N, n] running n-step return G per open window
        self._len: Tensor | None = None  # [N, n] window length m (int64)
        self._open: Tensor | None = None  # [N, n] bool: window starting at slot is open
        self._obs_ring: Tensor | None = None  # [N, C, ...] s_t at slot (step % C)
        self._act_ring: Tensor | None = None  # [N, C, ...] a_t at slot (step % C)

    def reset(self) -> None:
        """Drop all open windows (e.g. after every env was reset outside the collector)."""
        if self._open is not None:
            self._open.zero_()

    @property
    def num_pending(self) -> int:
        """Number of open windows held back, waiting for later steps (over all envs)."""
        return 0 if self._open is None else int(self._open.sum())

    def _ensure_state(self, obs: Tensor, action: Tensor, device: torch.device) -> None:
        """Allocate the state on the first call; grow the rings to hold n - 1 + T steps."""
        n_env, t_len = obs.shape[0], obs.shape[1]
        if self._open is None:
            self._ret = torch.zeros(n_env, self.n, device=device)
            self._len = torch.zeros(n_env, self.n, dtype=torch.int64, device=device)
            self._open = torch.zeros(n_env, self.n, dtype=torch.bool, device=device)
            self._powers = self._powers.to(device)
        capacity = self.n - 1 + t_len
        old_obs, old_act = self._obs_ring, self._act_ring
        if old_obs is not None and old_act is not None and old_obs.shape[1] >= capacity:
            return
        self._obs_ring = obs.new_zeros((n_env, capacity, *obs.shape[2:]))
        self._act_ring = action.new_zeros((n_env, capacity, *action.shape[2:]))
        if old_obs is not None and old_act is not None:  # carry the last n - 1 steps over
            old_cap = old_obs.shape[1]
            for step in range(max(0, self._steps - self.n + 1), self._steps):
                self._obs_ring[:, step % capacity] = old_obs[:, step % old_cap]
                self._act_ring[:, step % capacity] = old_act[:, step % old_cap]

    def _write_ring(self, ring: Tensor, data: Tensor) -> None:
        """Write data [N, T, ...] to ring slots (step % C) for steps S .. S+T-1.

        At most two contiguous runs of slice copies (index_copy_ takes a per-element path on
        CPU, about 15x slower for frames).
        """
        capacity, t_len = ring.shape[1], data.shape[1]
        first = self._steps % capacity
        head = min(t_len, capacity - first)
        ring[:, first : first + head].copy_(data[:, :head])
        if head < t_len:
            ring[:, : t_len - head].copy_(data[:, head:])

    def push(
        self,
        obs: Tensor,
        action: Tensor,
        reward: Tensor,
        terminal: Tensor,
        done: Tensor,
        next_obs: Tensor,
    ) -> TensorDict:
        """Add a batch of one-step transitions and return the n-step transitions now ready.

        Args:
            obs: observations s_t, [N, T, ...] (any dtype; uint8 frames in practice).
            action: actions a_t, [N, T, ...].
            reward: rewards r_t (already clipped for learning), [N, T] or [N, T, 1].
            terminal: learning terminal after step t (game over or life loss), [N, T](, 1).
            done: episode ended after step t (game over or truncation; env reset), [N, T](, 1).
            next_obs: observations after step t, before any reset, [N, T, ...].

        Returns:
            TensorDict with batch size [M] and keys ``obs`` [M, ...], ``action`` [M, ...],
            ``reward`` [M] (n-step return G), ``discount`` [M] (gamma^m, or 0 when a terminal
            ended the window) and ``next_obs`` [M, ...] (bootstrap observation s_{t+m}).
            Ordered by the step that closed the window, then env, then start step.
        """
        n_env, t_len = obs.shape[0], obs.shape[1]
        if n_env != self.num_envs:
            raise ValueError(f"expected {self.num_envs} envs, got obs of shape {tuple(obs.shape)}")
        reward = reward.reshape(n_env, t_len).float()
        terminal = terminal.reshape(n_env, t_len).bool()
        cut = terminal | done.reshape(n_env, t_len).bool()  # [N, T]: the window ends here
        self._ensure_state(obs, action, reward.device)
        assert self._ret is not None and self._len is not None and self._open is not None
        assert self._obs_ring is not None and self._act_ring is not None
        ret, length, is_open, powers, n = self._ret, self._len, self._open, self._powers, self.n

        closed_env, closed_t, closed_ret, closed_len = [], [], [], []
        for t in range(t_len):
            slot = (self._steps + t) % n  # the window starting now; free: closed by step-1
            is_open[:, slot] = True
            ret[:, slot] = 0.0
            length[:, slot] = 0
            # every open window takes this reward: G += gamma^m r_t ; m += 1   [N, n]
            ret.add_(powers[length] * reward[:, t : t + 1] * is_open)
            length.add_(is_open)
            closing = is_open & ((length == n) | cut[:, t : t + 1])  # [N, n]
            env_idx, slot_idx = closing.nonzero(as_tuple=True)  # [M_t] each
            closed_env.append(env_idx)
            closed_t.append(torch.full_like(env_idx, t))
            closed_ret.append(ret[env_idx, slot_idx])
            closed_len.append(length[env_idx, slot_idx])
            is_open.logical_and_(~closing)

        if t_len == 1:
            env_idx, t_idx, g, m = closed_env[0], closed_t[0], closed_ret[0], closed_len[0]
        else:
            env_idx, t_idx = torch.cat(closed_env), torch.cat(closed_t)
            g, m = torch.cat(closed_ret), torch.cat(closed_len)
        # start step of each window: global step t_end - m + 1; its frame sits in the ring
        self._write_ring(self._obs_ring, obs)
        self._write_ring(self._act_ring, action)
        start = self._steps + t_idx - m + 1  # [M], global step
        capacity = self._obs_ring.shape[1]
        ring_idx = env_idx * capacity + start % capacity  # [M]
        obs_out = self._obs_ring.flatten(0, 1).index_select(0, ring_idx)  # s_t      [M, ...]
        act_out = self._act_ring.flatten(0, 1).index_select(0, ring_idx)  # a_t      [M, ...]
        next_out = next_obs.flatten(0, 1).index_select(0, env_idx * t_len + t_idx)  # s_{t+m}
        term_end = terminal[env_idx, t_idx]  # [M]: a terminal ended the window
        discount = torch.where(term_end, 0.0, powers[m])  # 0 or gamma^m  [M]
        self._steps += t_len
        return TensorDict(
            {
                "obs": obs_out,
                "action": act_out,
                "reward": g,
                "discount": discount,
                "next_obs": next_out,
            },
            batch_size=[env_idx.numel()],
        )
