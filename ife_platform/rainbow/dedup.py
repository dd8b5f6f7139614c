"""Frame-deduplicated replay: every 84x84 frame is stored once, stacks are rebuilt at sampling.

Today's stacks overlap: with a 4-frame stack, ``obs`` of step t+1 holds three frames of ``obs``
of step t, and the n-step successor ``next_obs`` is ``obs`` of a later step. Storing both
stacks per transition takes 8 frames per slot (56,472 bytes); the frames are in fact new at
the rate of one per agent step, plus one stack per episode (its reset observation).

Layout (issue 13, item 3):

- :class:`FrameStackStorage` is a TorchRL storage (``GatherTensorStorage``) of transitions with
  a **frame ring** beside it: one block of rows per env, ``[N * (R_e + S - 1), 84, 84]`` uint8,
  each env's frames in push order (frame ``i`` of env ``e`` in row ``e * (R_e + S - 1) +
  i % R_e``; the last ``S - 1`` rows of a block repeat its first ``S - 1``). A stack is then
  ``S`` adjacent rows, and a transition stores ``frames`` = ``[env, first frame of obs, first
  frame of next_obs]`` (int64). ``get`` reads whole stacks with one ``index_select`` each on an
  overlapping strided view of the ring (row r of the view = rows r .. r + S - 1).
- :class:`FrameNStepAccumulator` sits where :class:`~ife_platform.rainbow.nstep.NStepAccumulator`
  sat. Each vector step it pushes, per env, the last frame of ``next_obs`` (also ``final_obs``
  at the end of a game) and, for an env whose observation starts an episode, that whole reset
  stack first (ale-py's is three zero frames and the first frame), so every stack an env ever
  shows is ``S`` consecutive frames of its block. Life losses do not reset the stack (a
  storage with ``blank_before_life_start`` zeroes the older frames of a new life's stacks when
  it reads them, as Kaixhin/Rainbow's memory does). The
  (env, first frame) pairs then go through an unchanged ``NStepAccumulator``, so the n-step
  windows, returns, discounts and the order of the emitted transitions are the old ones by
  construction.

Frame lifetime. Each block overwrites its oldest frames first, like the transition ring
(TorchRL's round-robin writer). A frame must outlive every stored transition that references
it and every stack the accumulator still holds (open windows and current stacks: frames of the
last ``n + frame_stack`` vector steps). Each ring row records the write serial of the newest
stored transition that references it; a push that would overwrite a row still referenced by
a stored transition (serial within the last ``capacity`` writes) or a protected recent frame
grows every block instead (logged: only episodes of a few steps need it). The default ring,
:func:`~ife_platform.rainbow.replay.frame_ring_size`, is ``capacity`` frames plus a quarter
(room for the reset stacks and the lookahead), i.e. 1.25 frames per transition.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import torch
from tensordict import TensorDict, is_tensor_collection
from torch import Tensor

from ife_platform.rainbow.nstep import NStepAccumulator
from ife_platform.rainbow.replay import GatherTensorStorage, frame_ring_size

log = logging.getLogger(__name__)

__all__ = ["FrameNStepAccumulator", "FrameStackStorage", "frame_ring_size"]

#: Pushes checked against the ring at the start of a run, and the period of the checks after.
CHECKED_PUSHES, CHECK_EVERY = 100, 1000

#: The key a transition stores its frames under: ``[env, first id of obs, first id of next_obs]``.
FRAMES_KEY = "frames"


class FrameStackStorage(GatherTensorStorage):
    """Transitions of frame references plus per-env rings of unique frames.

    Stored per transition: ``frames`` (int64 ``[3]``: env, id of the first frame of ``obs``,
    id of the first frame of ``next_obs``) and the scalars the accumulator emits (``action``,
    ``reward``, ``discount``; TorchRL adds ``index``). Read batches carry ``obs`` and
    ``next_obs`` (uint8 ``[..., frame_stack, 84, 84]``) instead of ``frames``, bit-identical to
    the stacks the env produced.

    Args:
        max_size: transition capacity (``replay.capacity``).
        frame_stack: frames per stack (S).
        num_envs: envs feeding the replay (one block of the ring each).
        ring_size: frame ring rows over all envs (mirror rows included);
            :func:`~ife_platform.rainbow.replay.frame_ring_size` for the training config.
        frame_shape: shape of one frame.
        device: where the frame ring lives (a GPU keeps the sampled stacks on it; the
            transition scalars and the bookkeeping stay on the CPU with TorchRL's sampler).
        blank_before_life_start: zero, in every read stack, the frames from before the start
            of the life its newest frame belongs to, as Kaixhin/Rainbow's replay memory does
            (its timestep restarts at a life-loss terminal and ``_get_transitions`` blanks the
            frames before it). The acting stacks keep those frames, in both. Off: every read
            stack is the one the env produced. Costs one int64 per ring row.
    """

    def __init__(
        self,
        max_size: int,
        *,
        frame_stack: int = 4,
        num_envs: int = 1,
        ring_size: int | None = None,
        frame_shape: tuple[int, int] = (84, 84),
        device: torch.device | str = "cpu",
        blank_before_life_start: bool = False,
    ) -> None:
        super().__init__(max_size)
        self.frame_device = torch.device(device)
        self.blank_before_life_start = bool(blank_before_life_start)
        self.frame_stack = int(frame_stack)
        self.num_envs = int(num_envs)
        self.frame_shape = tuple(frame_shape)
        total = int(ring_size if ring_size is not None else max_size + max_size // 4)
        self.env_rows = max(total // self.num_envs - (self.frame_stack - 1), self.frame_stack)
        self.frame_count = torch.zeros(self.num_envs, dtype=torch.int64)  # next id per env
        self._written = 0  # transitions written so far; the next transition's serial
        self._frames: Tensor | None = None  # [N * block, H, W] uint8
        self._ref: Tensor | None = None  # [N * block] int64: newest serial referencing the row
        # with blank_before_life_start: [N * block] int64, the id of the first frame of the
        # life each row's frame belongs to; and each env's current life start
        self._life: Tensor | None = None
        self.life_start = torch.zeros(self.num_envs, dtype=torch.int64)

    @property
    def block(self) -> int:
        """Rows per env: ``env_rows`` plus ``frame_stack - 1`` mirror rows."""
        return self.env_rows + self.frame_stack - 1

    @property
    def ring_size(self) -> int:
        """Frame ring rows over all envs (mirror rows included)."""
        return self.num_envs * self.block

    @property
    def frames(self) -> Tensor | None:
        """The frame ring ``[ring_size, H, W]``, or None before the first frame."""
        return self._frames

    # -- frames --------------------------------------------------------------------------
    def _allocate(self, dtype: torch.dtype) -> None:
        self._frames = torch.zeros(
            (self.ring_size, *self.frame_shape), dtype=dtype, device=self.frame_device
        )
        self._ref = torch.full((self.ring_size,), -1, dtype=torch.int64)
        if self.blank_before_life_start:
            self._life = torch.zeros((self.ring_size,), dtype=torch.int64, device=self.frame_device)

    def rows(self, env: Tensor, ids: Tensor) -> Tensor:
        """Ring rows of frames ``ids`` of envs ``env`` (broadcast)."""
        return env * self.block + ids % self.env_rows

    def add_frames(
        self,
        env: Tensor,
        frames: Tensor,
        protect_from: Tensor,
        starts_life: Tensor | None = None,
    ) -> Tensor:
        """Append frames to the envs' rings; returns their ids (per env, consecutive).

        Args:
            env: ``[K]`` env of each frame; frames of one env are appended in this order.
            frames: ``[K, H, W]`` new frames.
            protect_from: ``[N]``: frames of env e with ids ``>= protect_from[e]`` must
                survive this push (the accumulator's open windows and current stacks).
            starts_life: ``[K]`` bool, the frame is the first of a life (a game's first
                observation, or the first after a lost life); read with
                ``blank_before_life_start`` only.

        Returns:
            int64 ids ``[K]``.
        """
        if self._frames is None:
            self._allocate(frames.dtype)
        onehot = torch.nn.functional.one_hot(env, self.num_envs)  # [K, N]
        rank = (onehot.cumsum(0) - 1).gather(1, env[:, None]).squeeze(1)
        ids = self.frame_count[env] + rank
        old = ids - self.env_rows  # the frames these writes replace
        if bool((old >= 0).any()):
            assert self._ref is not None
            ref = self._ref[self.rows(env, ids)]  # -1: no stored transition referenced it
            stored = (ref >= 0) & (ref >= self._written - self.max_size)
            live = stored | (old >= protect_from[env])
            if bool((live & (old >= 0)).any()):
                self._grow(env, ids, protect_from)
        assert self._frames is not None and self._ref is not None
        rows = self.rows(env, ids)
        dev = self.frame_device
        frames = frames.to(dev, non_blocking=True)
        self._frames[rows.to(dev)] = frames
        self._ref[rows] = -1
        mirror = ids % self.env_rows < self.frame_stack - 1
        if bool(mirror.any()):
            self._frames[(rows[mirror] + self.env_rows).to(dev)] = frames[mirror.to(dev)]
        if self._life is not None:
            self._life[rows.to(dev)] = self._life_ids(env, ids, onehot, starts_life).to(dev)
            if bool(mirror.any()):
                src = rows[mirror].to(dev)
                self._life[src + self.env_rows] = self._life[src]
        self.frame_count += onehot.sum(0)
        return ids

    def _life_ids(
        self, env: Tensor, ids: Tensor, onehot: Tensor, starts_life: Tensor | None
    ) -> Tensor:
        """Life start id of each new frame (the newest start at or before it, per env)."""
        if starts_life is None or not bool(starts_life.any()):
            return self.life_start[env]
        marks = torch.where(onehot.bool() & starts_life[:, None], ids[:, None], -1)  # [K, N]
        latest = torch.maximum(marks.cummax(0).values, self.life_start[None, :])
        self.life_start = latest[-1].clone()
        return latest.gather(1, env[:, None]).squeeze(1)

    def _grow(self, env: Tensor, ids: Tensor, protect_from: Tensor) -> None:
        """Enlarge every env's block so that writing ``ids`` overwrites no live frame."""
        assert self._frames is not None and self._ref is not None
        oldest = torch.minimum(protect_from, self.frame_count)
        n = len(self)
        if n:
            stored = self._storage[FRAMES_KEY][:n]
            oldest = oldest.scatter_reduce(0, stored[:, 0], stored[:, 1], reduce="amin")
        newest = self.frame_count.scatter_reduce(0, env, ids + 1, reduce="amax")
        need = int((newest - oldest).max())
        old_rows, old_block = self.env_rows, self.block
        new_rows = max(old_rows + old_rows // 2, need + need // 4 + self.frame_stack)
        log.warning(
            "replay frame ring grows from %d to %d frames per env (episodes of a few steps "
            "need more than 1.25 frames per transition)",
            old_rows,
            new_rows,
        )
        self.env_rows = new_rows
        frames = torch.zeros(
            (self.ring_size, *self.frame_shape), dtype=self._frames.dtype, device=self.frame_device
        )
        ref = torch.full((self.ring_size,), -1, dtype=torch.int64)
        life = None if self._life is None else torch.zeros_like(ref, device=self.frame_device)
        for e in range(self.num_envs):
            count = int(self.frame_count[e])
            kept = torch.arange(max(0, count - old_rows), count)
            src = e * old_block + kept % old_rows
            dst = self.rows(torch.tensor(e), kept)
            frames[dst.to(self.frame_device)] = self._frames[src.to(self.frame_device)]
            ref[dst] = self._ref[src]
            base = e * self.block
            frames[base + new_rows : base + self.block] = frames[base : base + self.frame_stack - 1]
            if life is not None and self._life is not None:
                dev = self.frame_device
                life[dst.to(dev)] = self._life[src.to(dev)]
                life[base + new_rows : base + self.block] = life[base : base + self.frame_stack - 1]
        self._frames, self._ref, self._life = frames, ref, life

    def gather_stacks(self, env: Tensor, first: Tensor, *, blank: bool = True) -> Tensor:
        """Stacks of ``frame_stack`` frames starting at frame ``first`` of env ``env``.

        Args:
            env: int64 ``[B]``.
            first: int64 ``[B]``, the id of each stack's oldest frame.
            blank: with ``blank_before_life_start``, zero the frames from before the life of
                the stack's newest frame (False: the stacks as the env produced them).

        Returns:
            uint8 ``[B, frame_stack, H, W]``, gathered with one ``index_select``.
        """
        assert self._frames is not None
        ring, s = self._frames, self.frame_stack
        h, w = self.frame_shape
        view = ring.as_strided((ring.shape[0] - s + 1, s, h, w), (h * w, h * w, w, 1))
        rows = self.rows(env, first).to(ring.device)
        stacks = view.index_select(0, rows)
        if blank and self._life is not None:  # blank the frames from before the newest frame's life
            ids = first.to(ring.device)[:, None] + torch.arange(s, device=ring.device)  # [B, S]
            keep = ids >= self._life.index_select(0, rows + s - 1)[:, None]
            # (a product with a 0/1 mask: a broadcast masked_fill_ of uint8 took 30x longer)
            stacks.mul_(keep.to(stacks.dtype)[:, :, None, None])
        return stacks

    # -- TorchRL storage -----------------------------------------------------------------
    def set(self, cursor: Any, data: Any, *, set_cursor: bool = True) -> None:  # noqa: D102
        if not is_tensor_collection(data) or FRAMES_KEY not in data.keys():
            raise TypeError(
                "FrameStackStorage stores frame references ('frames', from "
                "FrameNStepAccumulator.push), not stacked observations"
            )
        refs = data[FRAMES_KEY].reshape(-1, 3)
        m = refs.shape[0]
        if m and self._ref is not None:
            offsets = torch.arange(self.frame_stack)
            env = refs[:, :1]
            rows = torch.cat(
                [
                    self.rows(env, refs[:, 1:2] + offsets),
                    self.rows(env, refs[:, 2:3] + offsets),
                ],
                dim=1,
            )  # [M, 2S]
            serial = torch.arange(self._written, self._written + m).unsqueeze(1).expand_as(rows)
            self._ref.scatter_reduce_(0, rows.reshape(-1), serial.reshape(-1), reduce="amax")
        self._written += m
        super().set(cursor, data, set_cursor=set_cursor)

    def _stacks(self, refs: Tensor) -> tuple[Tensor, Tensor]:
        """``obs`` and ``next_obs`` of transitions with ``frames`` ``refs`` ``[..., 3]``."""
        flat = refs.reshape(-1, 3)
        env, first, nxt = flat[:, 0], flat[:, 1], flat[:, 2]
        shape = (*refs.shape[:-1], self.frame_stack, *self.frame_shape)
        return self.gather_stacks(env, first).view(shape), self.gather_stacks(env, nxt).view(shape)

    def get(self, index: Any) -> Any:  # noqa: D102
        stored = self._storage
        if (
            isinstance(index, torch.Tensor)
            and index.ndim == 1
            and index.dtype == torch.long
            and self.initialized
            and isinstance(stored, TensorDict)
        ):  # the sampling path: one index_select per key, one TensorDict built unchecked
            out = {
                k: v.index_select(0, index)
                for k, v in stored.items()
                if k != FRAMES_KEY and isinstance(v, torch.Tensor)
            }
            if len(out) + 1 == len(stored.keys()):  # flat storage: every leaf taken
                refs = stored.get(FRAMES_KEY).index_select(0, index)
                out["obs"], out["next_obs"] = self._stacks(refs)
                return TensorDict._new_unsafe(out, batch_size=index.shape)
        data = super().get(index)
        if not is_tensor_collection(data) or FRAMES_KEY not in data.keys():
            return data
        obs, next_obs = self._stacks(data.get(FRAMES_KEY))
        out = data.exclude(FRAMES_KEY)
        out.set("obs", obs)
        out.set("next_obs", next_obs)
        return out

    def _empty(self) -> None:
        super()._empty()
        self.frame_count = torch.zeros(self.num_envs, dtype=torch.int64)
        self._written = 0
        self._frames = None
        self._ref = None
        self._life = None
        self.life_start = torch.zeros(self.num_envs, dtype=torch.int64)

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        state = super().state_dict()
        state["frame_ring"] = {
            "frames": self._frames,
            "ref": self._ref,
            "env_rows": self.env_rows,
            "frame_count": self.frame_count.clone(),
            "written": self._written,
            "num_envs": self.num_envs,
            "frame_stack": self.frame_stack,
            "life": self._life,
            "life_start": self.life_start.clone(),
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        ring = state_dict["frame_ring"]
        for key in ("frame_stack", "num_envs"):
            if int(ring[key]) != getattr(self, key):
                raise ValueError(
                    f"the replay state has {key}={ring[key]}, this storage {getattr(self, key)}"
                )
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "frame_ring"})
        self.env_rows = int(ring["env_rows"])
        self.frame_count = ring["frame_count"].clone()
        self._written = int(ring["written"])
        frames, ref = ring["frames"], ring["ref"]
        self._frames = None if frames is None else frames.to(self.frame_device, copy=True)
        self._ref = None if ref is None else ref.clone()
        self._life, self.life_start = None, torch.zeros(self.num_envs, dtype=torch.int64)
        if self.blank_before_life_start and frames is not None:
            life = ring.get("life")
            if life is None:  # saved without blanking: no row's frame starts a life we know of
                life = torch.zeros(self._ref.shape, dtype=torch.int64)  # type: ignore[union-attr]
            else:
                self.life_start = ring["life_start"].clone()
            self._life = life.to(self.frame_device, copy=True)

    def nbytes(self) -> int:
        """Bytes held: transition tensors plus the frame ring and its reference serials."""
        total = 0
        if self._storage is not None and is_tensor_collection(self._storage):
            total += sum(t.nbytes for t in self._storage.values(True, True))
        if self._frames is not None and self._ref is not None:
            total += self._frames.nbytes + self._ref.nbytes
        if self._life is not None:
            total += self._life.nbytes
        return total


class FrameNStepAccumulator:
    """N-step transitions whose observations are frame references in a :class:`FrameStackStorage`.

    Same interface and same transitions (in the same order) as
    :class:`~ife_platform.rainbow.nstep.NStepAccumulator`, except that ``push`` writes the new
    frames of the batch into ``storage``'s ring and returns ``frames`` (int64 ``[M, 3]``: env,
    first frame id of ``obs``, first frame id of ``next_obs``) instead of the stacks.

    Per env it keeps the id of the oldest frame of the current stack. An observation after a
    ``done`` (or the first one) starts an episode: its whole stack is pushed. Every step then
    pushes the last frame of ``next_obs`` (also the ``final_obs`` of a finished game): the next
    stack starts one frame later. Life losses do not reset the stack; the storage is told which
    frames start a life (``terminal`` without ``done``), for ``blank_before_life_start``.

    Args:
        num_envs: N, the number of parallel envs (fixed; ``storage.num_envs``).
        n: number of steps (>= 1).
        gamma: discount factor.
        storage: the replay's storage, whose ring receives the frames.
        verify: check every pushed stack against the stack rebuilt from the ring (tests).
            Without it, the first :data:`CHECKED_PUSHES` pushes and every
            :data:`CHECK_EVERY`-th are still checked: the ring holds each frame once only if
            the env's stacks shift by one frame per step, and a broken assumption must stop
            training rather than fill the replay with wrong frames.
    """

    def __init__(
        self,
        num_envs: int,
        n: int,
        gamma: float,
        storage: FrameStackStorage,
        *,
        verify: bool = False,
    ) -> None:
        if storage.num_envs != num_envs:
            raise ValueError(f"the storage has {storage.num_envs} env blocks, not {num_envs}")
        self.inner = NStepAccumulator(num_envs, n, gamma)
        self.num_envs, self.n, self.gamma = num_envs, n, gamma
        self.storage = storage
        self.verify = verify
        self._pushes = 0
        self._env = torch.arange(num_envs)
        self._cur = torch.zeros(num_envs, dtype=torch.int64)  # first frame id of each stack
        self._start = torch.ones(num_envs, dtype=torch.bool)  # next obs starts an episode
        # each env's frame count at each of the last n + frame_stack + 1 steps (protected)
        self._recent: deque[Tensor] = deque(maxlen=n + storage.frame_stack + 1)

    def reset(self) -> None:
        """Drop all open windows; the next observation of every env starts an episode."""
        self.inner.reset()
        self._start.fill_(True)

    @property
    def num_pending(self) -> int:
        """Number of open windows held back, waiting for later steps (over all envs)."""
        return self.inner.num_pending

    def _step_ids(self, obs: Tensor, next_obs: Tensor, life_lost: Tensor) -> tuple[Tensor, Tensor]:
        """Push the new frames of one vector step; first frame ids of its obs / next_obs.

        ``life_lost`` ``[N]``: the step lost a life and the game goes on, so the last frame of
        ``next_obs`` is the first of a new life (as is the last frame of a reset stack).
        """
        s = self.storage.frame_stack
        starting = self._start.nonzero().squeeze(1)
        k = starting.numel()
        self._recent.append(self.storage.frame_count.clone())
        if k:
            env = torch.cat([starting.repeat_interleave(s), self._env])
            frames = torch.cat([obs.index_select(0, starting).flatten(0, 1), next_obs[:, -1]])
            first_frame = torch.zeros((k, s), dtype=torch.bool)
            first_frame[:, -1] = True
            starts_life = torch.cat([first_frame.flatten(), life_lost])
        else:
            env, frames, starts_life = self._env, next_obs[:, -1], life_lost
        ids = self.storage.add_frames(
            env, frames, protect_from=self._recent[0], starts_life=starts_life
        )
        cur = self._cur  # never written in place: it is also the last step's next_obs start
        if k:
            cur = cur.clone()
            cur[starting] = ids[: k * s : s]
        self._cur = cur + 1
        return cur, self._cur

    def _check(self, env: Tensor, first: Tensor, stacks: Tensor, key: str) -> None:
        """Raise if ``stacks`` [N, T, S, H, W] differ from the ones the ring rebuilds."""
        rebuilt = self.storage.gather_stacks(env.reshape(-1), first.reshape(-1), blank=False)
        if not torch.equal(rebuilt.view(stacks.shape).to(stacks.device), stacks):
            raise RuntimeError(
                f"an {key} stack differs from the frames the replay stored for it: the env's "
                "stacks must shift by one frame per step (and start from the reset stack), "
                "or the frame-deduplicated replay cannot rebuild them"
            )

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

        Args: as :meth:`NStepAccumulator.push <ife_platform.rainbow.nstep.NStepAccumulator.push>`
            (``obs`` / ``next_obs`` uint8 ``[N, T, frame_stack, H, W]``).

        Returns:
            TensorDict with batch size [M] and keys ``frames`` [M, 3] (env, first frame of
            ``obs``, first frame of ``next_obs``), ``action``, ``reward`` (n-step return) and
            ``discount``, in the order ``NStepAccumulator`` emits them.
        """
        n_env, t_len = obs.shape[0], obs.shape[1]
        if n_env != self.num_envs:
            raise ValueError(f"expected {self.num_envs} envs, got obs of shape {tuple(obs.shape)}")
        done_b = done.reshape(n_env, t_len).bool()
        life_lost = terminal.reshape(n_env, t_len).bool() & ~done_b
        env = self._env[:, None].expand(n_env, t_len)
        firsts, nexts = [], []
        for t in range(t_len):
            first, nxt = self._step_ids(obs[:, t], next_obs[:, t], life_lost[:, t])
            firsts.append(first)
            nexts.append(nxt)
            self._start = done_b[:, t].clone()
        first_id = torch.stack(firsts, 1)  # [N, T]
        next_id = torch.stack(nexts, 1)
        self._pushes += 1
        if self.verify or self._pushes <= CHECKED_PUSHES or self._pushes % CHECK_EVERY == 0:
            self._check(env, first_id, obs, "obs")
            self._check(env, next_id, next_obs, "next_obs")
        out = self.inner.push(
            torch.stack([env, first_id], -1),
            action,
            reward,
            terminal,
            done,
            torch.stack([env, next_id], -1),
        )
        return TensorDict(
            {
                FRAMES_KEY: torch.cat([out["obs"], out["next_obs"][:, 1:]], dim=1),
                "action": out["action"],
                "reward": out["reward"],
                "discount": out["discount"],
            },
            batch_size=out.batch_size,
        )
