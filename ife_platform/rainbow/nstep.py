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

    ``push`` takes a collector batch [N, T] and returns every n-step transition whose window has
    closed: n later steps are known, or a terminal / done cut the window earlier. The start step
    t of the window is emitted in the same call that delivers its last step t+m-1, so the
    bootstrap observation is always ``next_obs`` of a step of the current batch.

    State kept between calls: the last n-1 steps of every env (observations in a ring buffer
    indexed by global step modulo n-1, plus rewards, flags and actions). A start step from an
    earlier call is still pending exactly when no terminal / done lies between it and the end of
    the history, so no per-step bookkeeping is needed. All work is vectorised over envs and
    steps; only the observations of emitted transitions are copied.

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
        self._hist_len = n - 1  # P: steps kept between calls
        self._steps = 0  # global steps pushed per env (envs are lock-stepped)
        self._initialised = False

    def reset(self) -> None:
        """Drop all pending steps (e.g. after all envs were reset outside the collector)."""
        self._steps = 0
        self._initialised = False

    @property
    def num_pending(self) -> int:
        """Number of start steps held back, waiting for later steps (over all envs)."""
        if not self._initialised or self._hist_len == 0:
            return 0
        return int(self._pending_history().sum())

    def _pending_history(self) -> Tensor:
        """Bool [N, P]: history starts whose window is still open."""
        cut = self._h_term | self._h_done  # [N, P]
        # no cut in history positions j..P-1 (suffix count of cuts is zero)
        no_cut_after = cut.flip(1).cumsum(1).flip(1) == 0
        return no_cut_after & self._h_valid

    def _init_state(self, obs: Tensor, action: Tensor, reward_device: torch.device) -> None:
        n_env, p = self.num_envs, self._hist_len
        dev = reward_device
        self._h_reward = torch.zeros(n_env, p, device=dev)
        self._h_term = torch.zeros(n_env, p, dtype=torch.bool, device=dev)
        self._h_done = torch.zeros(n_env, p, dtype=torch.bool, device=dev)
        self._h_valid = torch.zeros(n_env, p, dtype=torch.bool, device=dev)
        self._h_action = action.new_zeros((n_env, p, *action.shape[2:]))
        # ring of observations: slot (global step % P) for the last P steps
        self._ring = obs.new_zeros((n_env, max(p, 1), *obs.shape[2:]))
        self._powers = torch.tensor(
            [self.gamma**k for k in range(self.n + 1)], dtype=torch.float32, device=dev
        )  # gamma^0 .. gamma^n
        self._initialised = True

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
            ``reward`` [M] (n-step return G), ``discount`` [M] (gamma^m, or 0 after a terminal)
            and ``next_obs`` [M, ...] (bootstrap observation s_{t+m}). Transitions are grouped:
            first those whose start step came from earlier calls, then those from this batch;
            within a group, ordered by env then step.
        """
        n_env, t_len = obs.shape[0], obs.shape[1]
        if n_env != self.num_envs:
            raise ValueError(f"expected {self.num_envs} envs, got obs of shape {tuple(obs.shape)}")
        reward = reward.reshape(n_env, t_len).float()
        terminal = terminal.reshape(n_env, t_len).bool()
        done = done.reshape(n_env, t_len).bool()
        if not self._initialised:
            self._init_state(obs, action, reward.device)
        n, p = self.n, self._hist_len
        length = p + t_len  # L: history followed by the new steps

        # --- scalars over [N, L] (history then new) ---
        r = torch.cat([self._h_reward, reward], dim=1)  # [N, L]
        term = torch.cat([self._h_term, terminal], dim=1)  # [N, L]
        done_all = torch.cat([self._h_done, done], dim=1)  # [N, L]
        cut = term | done_all  # [N, L]

        # sliding windows of length n starting at every position j, padded past the data
        r_win = torch.nn.functional.pad(r, (0, n - 1)).unfold(1, n, 1)  # [N, L, n]
        cut_win = torch.nn.functional.pad(cut, (0, n - 1)).unfold(1, n, 1)  # [N, L, n]
        avail = torch.arange(length + n - 1, device=r.device) < length
        avail_win = avail.unfold(0, n, 1)  # [L, n]
        # k is inside the window iff no cut at offsets < k and step j+k exists
        cut_i = cut_win.to(torch.int32)
        in_win = ((cut_i.cumsum(-1) - cut_i) == 0) & avail_win  # [N, L, n]
        m = in_win.sum(-1)  # [N, L], window length m >= 1
        closed = (cut_win & in_win).any(-1) | (m == n)  # cut inside, or n steps known

        ret = (r_win * self._powers[:n] * in_win).sum(-1)  # G = sum_k gamma^k r_{j+k}  [N, L]
        end = torch.arange(length, device=r.device) + m - 1  # last step j+m-1  [N, L]
        term_end = term.gather(1, end)
        discount = torch.where(term_end, 0.0, self._powers[m])  # 0 or gamma^m  [N, L]

        if p > 0:
            emit_hist = closed[:, :p] & self._pending_history()  # [N, P]
        else:
            emit_hist = closed[:, :0]
        emit_new = closed[:, p:]  # [N, T]
        env_h, pos_h = emit_hist.nonzero(as_tuple=True)
        env_n, pos_n = emit_new.nonzero(as_tuple=True)
        env_all = torch.cat([env_h, env_n])  # [M]
        pos_all = torch.cat([pos_h, pos_n + p])  # [M], position in [0, L)

        # observations s_t: from the ring (history starts) or from this batch (new starts)
        obs_flat = obs.reshape(n_env * t_len, *obs.shape[2:])
        m_h = env_h.numel()
        out_obs = obs.new_empty((m_h + env_n.numel(), *obs.shape[2:]))
        if m_h:
            slot = (self._steps - p + pos_h) % p  # global step -> ring slot
            ring_flat = self._ring.reshape(n_env * p, *obs.shape[2:])
            torch.index_select(ring_flat, 0, env_h * p + slot, out=out_obs[:m_h])
        torch.index_select(obs_flat, 0, env_n * t_len + pos_n, out=out_obs[m_h:])
        # bootstrap observation s_{t+m} = next_obs of step t+m-1, always in this batch
        end_sel = end[env_all, pos_all] - p  # [M], in [0, T)
        next_flat = next_obs.reshape(n_env * t_len, *next_obs.shape[2:])
        out_next = next_flat.index_select(0, env_all * t_len + end_sel)

        act = torch.cat([self._h_action, action], dim=1)  # [N, L, ...]
        out = TensorDict(
            {
                "obs": out_obs,
                "action": act[env_all, pos_all],
                "reward": ret[env_all, pos_all],
                "discount": discount[env_all, pos_all],
                "next_obs": out_next,
            },
            batch_size=[env_all.numel()],
        )

        # --- keep the last P steps for the next call ---
        if p > 0:
            w = min(p, t_len)
            slots = torch.arange(self._steps + t_len - w, self._steps + t_len, device=obs.device) % p
            self._ring.index_copy_(1, slots, obs[:, t_len - w :])
            valid = torch.cat(
                [self._h_valid, torch.ones(n_env, t_len, dtype=torch.bool, device=r.device)], 1
            )
            self._h_reward = r[:, -p:]
            self._h_term = term[:, -p:]
            self._h_done = done_all[:, -p:]
            self._h_valid = valid[:, -p:]
            self._h_action = act[:, -p:]
        self._steps += t_len
        return out
