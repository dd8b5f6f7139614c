"""Frame-deduplicated replay: every 84x84 frame is stored once, stacks are rebuilt at sampling.

Today's stacks overlap: with a 4-frame stack, ``obs`` of step t+1 holds three frames of ``obs``
of step t, and the n-step successor ``next_obs`` is ``obs`` of a later step. Storing both
stacks per transition takes 8 frames per slot (56,472 bytes); the frames are in fact new at
the rate of one per agent step, plus one per episode (its first frame).

Layout (issue 13, item 3):

- :class:`FrameStackStorage` is a TorchRL storage (``GatherTensorStorage``) of transitions with
  a **frame ring** beside it: one global ring ``[R + 1, 84, 84]`` uint8 of frames in push order
  (row ``R`` stays zero), each frame named by a global id (``id % R`` is its row). A
  transition stores ``frames``: the ids of its ``obs`` stack and of its ``next_obs`` stack,
  ``[2 * frame_stack]`` int64, with ``-1`` for the zero frames before an episode's first
  frame. ``get`` rebuilds both stacks with one ``index_select`` each on the flat ring.
- :class:`FrameNStepAccumulator` sits where :class:`~ife_platform.rainbow.nstep.NStepAccumulator`
  sat. Per env it keeps the ids of the current stack; each vector step it pushes the new frame
  of every env (the last frame of ``next_obs``, also for ``final_obs`` at the end of a game)
  and, for envs whose observation starts an episode, the non-zero frames of that reset stack
  (ale-py's reset stack is three zero frames and the first frame). The id stacks then go
  through an unchanged ``NStepAccumulator``, so the n-step windows, returns, discounts and the
  order of the emitted transitions are the old ones by construction.

Frame lifetime. The ring overwrites its oldest frames first, like the transition ring
(TorchRL's round-robin writer). A frame must outlive every stored transition that references
it and every stack the accumulator still holds (open windows and current stacks: frames of the
last ``n + frame_stack`` vector steps). Each ring row records the write serial of the newest
stored transition that references it; a push that would overwrite a row still referenced by
a stored transition (serial within the last ``capacity`` writes) or a frame of the protected
recent steps grows the ring instead (logged: only episodes a few steps long need it). The
default ring, :func:`frame_ring_size`, is ``capacity`` frames plus a quarter (the room for
episode-first frames and the n-step lookahead), i.e. at most 1.25 frames per transition.
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

#: The frame ids key a transition stores (obs ids, then next_obs ids).
FRAMES_KEY = "frames"


class FrameStackStorage(GatherTensorStorage):
    """Transitions of frame ids plus a ring of unique frames; reads rebuild the stacks.

    Stored per transition: ``frames`` (int64 ``[2 * frame_stack]``) and the scalars the
    accumulator emits (``action``, ``reward``, ``discount``; TorchRL adds ``index``). Read
    batches carry ``obs`` and ``next_obs`` (uint8 ``[..., frame_stack, 84, 84]``) instead of
    ``frames``, bit-identical to the stacks the env produced.

    Args:
        max_size: transition capacity (``replay.capacity``).
        frame_stack: frames per stack.
        ring_size: frame ring rows; :func:`frame_ring_size` for the training config.
        frame_shape: shape of one frame.
    """

    def __init__(
        self,
        max_size: int,
        *,
        frame_stack: int = 4,
        ring_size: int | None = None,
        frame_shape: tuple[int, int] = (84, 84),
    ) -> None:
        super().__init__(max_size)
        self.frame_stack = int(frame_stack)
        self.frame_shape = tuple(frame_shape)
        self.ring_size = int(ring_size if ring_size is not None else max_size + max_size // 4 - 1)
        self.frame_count = 0  # frames pushed so far; the next frame's id
        self._written = 0  # transitions written so far; the next transition's serial
        self._frames: Tensor | None = None  # [R + 1, H, W] uint8, row R zero
        self._ref: Tensor | None = None  # [R] int64: newest serial referencing the row

    # -- frames --------------------------------------------------------------------------
    @property
    def frames(self) -> Tensor | None:
        """The frame ring ``[ring_size + 1, H, W]`` (last row all zeros), or None before use."""
        return self._frames

    def _allocate(self, dtype: torch.dtype) -> None:
        self._frames = torch.empty((self.ring_size + 1, *self.frame_shape), dtype=dtype)
        self._frames[self.ring_size].zero_()
        self._ref = torch.full((self.ring_size,), -1, dtype=torch.int64)

    def _live_ids(self, lo: int, hi: int) -> Tensor:
        """Which of the frames with ids ``lo .. hi-1`` a stored transition still references."""
        assert self._ref is not None
        pos = torch.arange(lo, hi) % self.ring_size
        return self._ref[pos] >= self._written - self.max_size

    def add_frames(self, frames: Tensor, protect_from: int) -> Tensor:
        """Append frames to the ring; returns their ids.

        Args:
            frames: ``[K, H, W]`` new frames.
            protect_from: frames with ids ``>= protect_from`` must survive this push (the
                accumulator's open windows and current stacks use them).

        Returns:
            int64 ids ``[K]`` (consecutive).
        """
        k = int(frames.shape[0])
        if self._frames is None:
            self._allocate(frames.dtype)
        start = self.frame_count
        lo, hi = max(0, start - self.ring_size), start + k - self.ring_size  # ids overwritten
        if hi > lo and (hi > protect_from or bool(self._live_ids(lo, hi).any())):
            self._grow(k, protect_from)
        assert self._frames is not None and self._ref is not None
        size, first = self.ring_size, start % self.ring_size
        head = min(k, size - first)
        self._frames[first : first + head].copy_(frames[:head])
        self._ref[first : first + head] = -1
        if head < k:
            self._frames[: k - head].copy_(frames[head:])
            self._ref[: k - head] = -1
        self.frame_count += k
        return torch.arange(start, start + k)

    def _grow(self, k: int, protect_from: int) -> None:
        """Enlarge the ring so that pushing ``k`` frames overwrites no live frame."""
        assert self._frames is not None and self._ref is not None
        oldest = min(protect_from, self.frame_count)
        n = len(self)
        if n:
            ids = self._storage[FRAMES_KEY][:n]
            valid = ids[ids >= 0]
            if valid.numel():
                oldest = min(oldest, int(valid.min()))
        need = self.frame_count + k - oldest
        old_size = self.ring_size
        new_size = max(old_size + old_size // 2, need + need // 4)
        log.warning(
            "replay frame ring grows from %d to %d frames (episodes of a few steps need more "
            "than 1.25 frames per transition)",
            old_size,
            new_size,
        )
        frames = torch.empty((new_size + 1, *self.frame_shape), dtype=self._frames.dtype)
        frames[new_size].zero_()
        ref = torch.full((new_size,), -1, dtype=torch.int64)
        ids = torch.arange(max(0, self.frame_count - old_size), self.frame_count)
        frames[ids % new_size] = self._frames[ids % old_size]
        ref[ids % new_size] = self._ref[ids % old_size]
        self._frames, self._ref, self.ring_size = frames, ref, new_size

    def gather_frames(self, ids: Tensor) -> Tensor:
        """Frames of ``ids`` (any shape; ``-1`` gives a zero frame): ``[*ids.shape, H, W]``."""
        assert self._frames is not None
        flat = ids.reshape(-1)
        pos = torch.where(flat < 0, self.ring_size, flat % self.ring_size)
        return self._frames.index_select(0, pos).view(*ids.shape, *self.frame_shape)

    # -- TorchRL storage -----------------------------------------------------------------
    def set(self, cursor: Any, data: Any, *, set_cursor: bool = True) -> None:  # noqa: D102
        if not is_tensor_collection(data) or FRAMES_KEY not in data.keys():
            raise TypeError(
                "FrameStackStorage stores frame ids ('frames', from FrameNStepAccumulator.push), "
                "not stacked observations"
            )
        ids = data[FRAMES_KEY].reshape(-1, 2 * self.frame_stack)
        m = ids.shape[0]
        if m and self._ref is not None:
            serial = torch.arange(self._written, self._written + m).unsqueeze(1).expand_as(ids)
            valid = ids >= 0
            self._ref.scatter_reduce_(0, ids[valid] % self.ring_size, serial[valid], reduce="amax")
        self._written += m
        super().set(cursor, data, set_cursor=set_cursor)

    def get(self, index: Any) -> Any:  # noqa: D102
        stored = self._storage
        if (
            isinstance(index, torch.Tensor)
            and index.ndim == 1
            and index.dtype == torch.long
            and self.initialized
            and isinstance(stored, TensorDict)
            and not stored.is_locked
        ):  # the sampling path: one index_select per key, one TensorDict built unchecked
            s = self.frame_stack
            out = {
                k: v.index_select(0, index)
                for k, v in stored.items()
                if k != FRAMES_KEY and isinstance(v, torch.Tensor)
            }
            if len(out) + 1 == len(stored.keys()):  # flat storage: every leaf taken
                ids = stored.get(FRAMES_KEY).index_select(0, index)
                out["obs"] = self.gather_frames(ids[:, :s])
                out["next_obs"] = self.gather_frames(ids[:, s:])
                return TensorDict._new_unsafe(out, batch_size=index.shape)
        data = super().get(index)
        if not is_tensor_collection(data) or FRAMES_KEY not in data.keys():
            return data
        ids = data.get(FRAMES_KEY)
        s = self.frame_stack
        obs = self.gather_frames(ids[..., :s])
        next_obs = self.gather_frames(ids[..., s:])
        out = data.exclude(FRAMES_KEY)
        out.set("obs", obs)
        out.set("next_obs", next_obs)
        return out

    def _empty(self) -> None:
        super()._empty()
        self.frame_count = 0
        self._written = 0
        self._frames = None
        self._ref = None

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        state = super().state_dict()
        state["frame_ring"] = {
            "frames": None if self._frames is None else self._frames[: self.ring_size],
            "ref": self._ref,
            "ring_size": self.ring_size,
            "frame_count": self.frame_count,
            "written": self._written,
            "frame_stack": self.frame_stack,
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        ring = state_dict["frame_ring"]
        if int(ring["frame_stack"]) != self.frame_stack:
            raise ValueError(
                f"frame_stack {ring['frame_stack']} in the state, this storage has "
                f"{self.frame_stack}"
            )
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "frame_ring"})
        self.ring_size = int(ring["ring_size"])
        self.frame_count = int(ring["frame_count"])
        self._written = int(ring["written"])
        if ring["frames"] is None:
            self._frames = self._ref = None
            return
        frames = ring["frames"]
        self._frames = torch.empty((self.ring_size + 1, *frames.shape[1:]), dtype=frames.dtype)
        self._frames[: self.ring_size].copy_(frames)
        self._frames[self.ring_size].zero_()
        self._ref = ring["ref"].clone()

    def nbytes(self) -> int:
        """Bytes held: transition tensors plus the frame ring and its reference serials."""
        total = 0
        if self._storage is not None and is_tensor_collection(self._storage):
            total += sum(t.nbytes for t in self._storage.values(True, True))
        if self._frames is not None and self._ref is not None:
            total += self._frames.nbytes + self._ref.nbytes
        return total


class FrameNStepAccumulator:
    """N-step transitions whose observations are frame ids in a :class:`FrameStackStorage`.

    Same interface and same transitions (in the same order) as
    :class:`~ife_platform.rainbow.nstep.NStepAccumulator`, except that ``push`` writes the new
    frames of the batch into ``storage``'s ring and returns ``frames`` (int64
    ``[M, 2 * frame_stack]``: the ids of ``obs`` then of ``next_obs``) instead of the stacks.

    Per env it keeps the ids of the current observation stack. An observation after a
    ``done`` (or the first one) starts an episode: its non-zero frames are pushed and its zero
    frames get id ``-1``. Every step then pushes the last frame of ``next_obs`` (also the
    ``final_obs`` of a finished game) and shifts the stack; life losses do not reset it.

    Args:
        num_envs: N, the number of parallel envs (fixed).
        n: number of steps (>= 1).
        gamma: discount factor.
        storage: the replay's storage, whose ring receives the frames.
        verify: check every pushed stack against the stack rebuilt from the ring (tests).
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
        self.inner = NStepAccumulator(num_envs, n, gamma)
        self.num_envs, self.n, self.gamma = num_envs, n, gamma
        self.storage = storage
        self.verify = verify
        s = storage.frame_stack
        self._cur = torch.full((num_envs, s), -1, dtype=torch.int64)  # ids of current stacks
        self._start = torch.ones(num_envs, dtype=torch.bool)  # next obs starts an episode
        # first frame id pushed at each of the last n + frame_stack + 1 steps (protected)
        self._recent: deque[int] = deque(maxlen=n + s + 1)

    def reset(self) -> None:
        """Drop all open windows; the next observation of every env starts an episode."""
        self.inner.reset()
        self._start.fill_(True)

    @property
    def num_pending(self) -> int:
        """Number of open windows held back, waiting for later steps (over all envs)."""
        return self.inner.num_pending

    def _step_ids(self, obs: Tensor, next_obs: Tensor) -> tuple[Tensor, Tensor]:
        """Push the new frames of one vector step; ids of its obs and next_obs stacks."""
        starting = self._start.nonzero().squeeze(1)
        head: Tensor | None = None
        nonzero: Tensor | None = None
        if starting.numel():
            stacks = obs.index_select(0, starting)  # [k, S, H, W]
            nonzero = stacks.flatten(2).amax(-1) > 0  # [k, S]: frames that are not all zeros
            head = stacks[nonzero]  # [K, H, W], env-major
        new = next_obs[:, -1]  # [N, H, W]
        frames = new if head is None else torch.cat([head, new])
        self._recent.append(self.storage.frame_count)
        ids = self.storage.add_frames(frames, protect_from=self._recent[0])
        cur = self._cur  # never written in place: it is also the last step's next_obs ids
        if head is not None and nonzero is not None:
            block = torch.full(nonzero.shape, -1, dtype=torch.int64)
            block[nonzero] = ids[: head.shape[0]]
            cur = cur.clone()
            cur[starting] = block
        self._cur = torch.cat([cur[:, 1:], ids[-self.num_envs :, None]], dim=1)
        return cur, self._cur

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
            TensorDict with batch size [M] and keys ``frames`` [M, 2 * frame_stack] (ids of
            ``obs`` then ``next_obs``), ``action``, ``reward`` (n-step return) and
            ``discount``, in the order ``NStepAccumulator`` emits them.
        """
        n_env, t_len = obs.shape[0], obs.shape[1]
        if n_env != self.num_envs:
            raise ValueError(f"expected {self.num_envs} envs, got obs of shape {tuple(obs.shape)}")
        done_b = done.reshape(n_env, t_len).bool()
        obs_ids, next_ids = [], []
        for t in range(t_len):
            o, nx = self._step_ids(obs[:, t], next_obs[:, t])
            obs_ids.append(o)
            next_ids.append(nx)
            self._start = done_b[:, t].clone()
        obs_id = torch.stack(obs_ids, 1)  # [N, T, S]
        next_id = torch.stack(next_ids, 1)
        if self.verify:
            if not torch.equal(self.storage.gather_frames(obs_id), obs):
                raise AssertionError("an obs stack differs from the frames stored for it")
            if not torch.equal(self.storage.gather_frames(next_id), next_obs):
                raise AssertionError("a next_obs stack differs from the frames stored for it")
        out = self.inner.push(obs_id, action, reward, terminal, done, next_id)
        return TensorDict(
            {
                FRAMES_KEY: torch.cat([out["obs"], out["next_obs"]], dim=1),
                "action": out["action"],
                "reward": out["reward"],
                "discount": out["discount"],
            },
            batch_size=out.batch_size,
        )
