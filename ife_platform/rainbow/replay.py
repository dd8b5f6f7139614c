"""Replay storage for uint8 frames.

TorchRL's ``LazyTensorStorage`` gathers a sampled batch with advanced indexing (``t[idx]``),
which for uint8 frame tensors is about 10x slower than ``t.index_select(0, idx)``
(0.27 ms vs 0.02 ms per key for 32 84x84x4 frames, docs/benchmarks.md), and writes a batch
through ``TensorDict.__setitem__``, which costs about 0.9 ms for a handful of scalars (a third
of a DER-CNN agent step's bookkeeping). The subclass below reads a 1-D batch of indices with
``index_select`` and writes a flat batch leaf by leaf; ``dumps``/``loads`` and every other
form go through TorchRL unchanged, and stored and sampled data are bit-identical.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, is_tensor_collection
from torchrl.data import LazyTensorStorage


class GatherTensorStorage(LazyTensorStorage):
    """``LazyTensorStorage`` whose batched reads use ``index_select`` and writes go by leaf."""

    def set(self, cursor: Any, data: Any, *, set_cursor: bool = True) -> None:  # noqa: D102
        stored = self._storage
        if (
            isinstance(cursor, torch.Tensor)
            and cursor.ndim == 1
            and self.initialized
            and type(stored) is TensorDict
            and type(data) is TensorDict
            and self._storage_keys is None
            and data.batch_size == cursor.shape
        ):
            keys = list(stored.keys())
            leaves = [stored.get(k) for k in keys]
            if data.keys() == stored.keys() and all(
                isinstance(t, torch.Tensor) for t in leaves
            ):  # flat and the same keys: what the replay writes every step
                if set_cursor:
                    self._set_last_cursor(cursor)
                    self._get_new_len(data, cursor)
                for key, leaf in zip(keys, leaves, strict=True):
                    leaf[cursor] = data.get(key)
                self._bump_mutation_revision()
                return
        super().set(cursor, data, set_cursor=set_cursor)

    def get(self, index: Any) -> Any:  # noqa: D102
        if (
            isinstance(index, torch.Tensor)
            and index.ndim == 1
            and index.dtype == torch.long
            and self.initialized
            and is_tensor_collection(self._storage)
        ):
            return self._storage.apply(
                lambda t: t.index_select(0, index.to(t.device)), batch_size=index.shape
            )
        return super().get(index)


#: Bytes of one 84x84 uint8 frame.
FRAME_BYTES = 84 * 84

#: What one stored transition holds besides its frames (the keys
#: ``FrameNStepAccumulator.push`` returns, plus the ``index`` TorchRL's buffer adds), in bytes:
#: ``action`` int64, ``reward`` float32, ``discount`` float32, ``index`` int64. The frame refs
#: (``frames``: :data:`FRAME_REFS_BYTES`) come on top: :func:`replay_bytes`.
SCALAR_BYTES = {"action": 8, "reward": 4, "discount": 4, "index": 8}

#: A transition's frame references: env, first frame of ``obs``, first frame of ``next_obs``.
FRAME_REFS_BYTES = 3 * 8

#: Per frame-ring row besides the frame: the int64 serial of the newest transition using it.
FRAME_REF_BYTES = 8
#: Bytes per ring row of its life start id, with ``replay.blank_before_life_start``.
FRAME_LIFE_BYTES = 8

#: TorchRL's ``PrioritizedSampler`` keeps a float32 sum tree and a float32 min tree, each
#: with up to 2 nodes per slot: at most 16 bytes per slot besides the storage.
SAMPLER_BYTES = 16


def frame_ring_size(capacity: int, num_envs: int, n_step: int, frame_stack: int) -> int:
    """Frame rows the replay's ring holds for ``capacity`` transitions (all envs together).

    ``capacity`` frames (one new frame per transition) plus ``capacity // 4`` of room for the
    reset stack of every episode, the ``frame_stack - 1`` mirror rows per env and the frames of
    the last ``n_step + frame_stack`` vector steps that open windows still need (for small
    replays at least twice that lookahead): 1.25 frames per transition.

    Args:
        capacity: ``replay.capacity`` (transitions).
        num_envs: ``env.num_envs``.
        n_step: ``agent.n_step``.
        frame_stack: ``env.frame_stack``.

    Returns:
        Ring rows; :class:`~ife_platform.rainbow.dedup.FrameStackStorage` rounds them down to
        a multiple of ``num_envs`` (one block per env).
    """
    lookahead = 2 * num_envs * (n_step + 2 * frame_stack)
    return capacity + max(capacity // 4, lookahead)


def frame_ring_rows(capacity: int, num_envs: int, n_step: int, frame_stack: int) -> int:
    """Rows ``FrameStackStorage`` allocates for :func:`frame_ring_size` (whole env blocks)."""
    total = frame_ring_size(capacity, num_envs, n_step, frame_stack)
    env_rows = max(total // num_envs - (frame_stack - 1), frame_stack)
    return num_envs * (env_rows + frame_stack - 1)


def replay_bytes(
    capacity: int,
    frame_stack: int,
    num_envs: int,
    n_step: int,
    blank_before_life_start: bool = False,
) -> int:
    """Host bytes the Rainbow replay of one rank takes when full (storage plus priority trees).

    The storage (:class:`~ife_platform.rainbow.dedup.FrameStackStorage`, filled by
    :class:`~ife_platform.rainbow.dedup.FrameNStepAccumulator`) keeps every frame once in a
    ring of :func:`frame_ring_rows` rows, each with an int64 reference serial; per transition
    it keeps its frame references (``frames``: env and the first frame of ``obs`` and of
    ``next_obs``, 3 int64) and the scalars of :data:`SCALAR_BYTES`; the sampler adds
    :data:`SAMPLER_BYTES` per transition. ``tests/test_replay.py`` checks this against a real
    buffer, so the number follows the storage.

    Args:
        capacity: ``replay.capacity``.
        frame_stack: ``env.frame_stack``.
        num_envs: ``env.num_envs``.
        n_step: ``agent.n_step``.
        blank_before_life_start: ``replay.blank_before_life_start`` (the ring then also keeps
            an int64 life start per row).

    Returns:
        Bytes: about 8,894 per transition for a large capacity (8,904 with blanking).
    """
    rows = frame_ring_rows(capacity, num_envs, n_step, frame_stack)
    per_slot = FRAME_REFS_BYTES + sum(SCALAR_BYTES.values()) + SAMPLER_BYTES
    per_row = FRAME_BYTES + FRAME_REF_BYTES + (FRAME_LIFE_BYTES if blank_before_life_start else 0)
    return rows * per_row + capacity * per_slot


def replay_bytes_per_transition(
    frame_stack: int, capacity: int = 1 << 20, num_envs: int = 64, n_step: int = 3
) -> float:
    """:func:`replay_bytes` divided by the capacity (defaults: the Fast profile's replay).

    Returns:
        Bytes per transition slot: 8,894 for 4 stacked frames and the defaults (the
        frame-duplicating layout before issue 13 took 56,488).
    """
    return replay_bytes(capacity, frame_stack, num_envs, n_step) / capacity


def estimate_replay_bytes(cfg: Any, capacity: int | None = None) -> int:
    """Host memory the replay buffers of one machine take when full.

    Every rank on the host (``trainer.devices``) fills its own buffer of ``replay.capacity``
    slots; the estimate counts the frame ring and the slots in full (they are allocated on
    the first write).

    Args:
        cfg: A Rainbow-family experiment config (``replay.capacity``, ``env.frame_stack``,
            ``env.num_envs``, ``agent.n_step``, ``replay.blank_before_life_start``,
            ``trainer.devices``).
        capacity: slots per rank instead of ``replay.capacity`` (the config's memory check
            searches for the largest capacity that fits with it).

    Returns:
        Bytes, summed over the host's ranks.
    """
    per_rank = replay_bytes(
        int(cfg.replay.capacity if capacity is None else capacity),
        int(cfg.env.frame_stack),
        int(cfg.env.num_envs),
        int(cfg.agent.n_step),
        bool(cfg.replay.get("blank_before_life_start", False)),
    )
    return per_rank * int(cfg.trainer.devices)


#: How importance-sampling weights are normalised (``replay.weight_norm``).
WEIGHT_NORMS = ("batch", "buffer")


def importance_weights(buffer_weights: torch.Tensor, norm: str) -> torch.Tensor:
    """Prioritized-replay importance-sampling weights, normalised by the batch or the buffer.

    Schaul et al. 2016 (Algorithm 1, line 10): w_j = (N * P(j))^-beta / max_i w_i, with
    P(j) = p_j / sum_k p_k and p the stored priorities (already raised to alpha). The paper
    leaves open which set the max runs over; the two forms differ by a factor common to the
    batch:

    - ``"buffer"``: TorchRL's ``PrioritizedSampler`` normalises by the smallest priority in
      the whole buffer, w_j = (p_j / p_min_buffer)^-beta (the ``buffer_weights`` it returns).
      One near-zero priority anywhere (a single-atom C51 target can have a cross-entropy near
      0) then shrinks every update of the run (issue 10: a mean weight of 0.006 by 100k steps).
    - ``"batch"``: the max over the sampled batch, w_j = (p_j / min_{i in batch} p_i)^-beta,
      so the batch's largest weight is exactly 1. This is what the DER references compute
      (Kaixhin/Rainbow ``memory.py``: ``weights / weights.max()``; Dopamine's Rainbow agent
      divides by the batch max as well).

    Since ``buffer_weights`` are (p_j / p_min_buffer)^-beta, dividing them by their batch max
    gives the batch form exactly: the p_min_buffer factors cancel.

    Args:
        buffer_weights: TorchRL's ``priority_weight`` of a sampled batch, ``[B]``.
        norm: ``"batch"`` or ``"buffer"``.

    Returns:
        The weights to multiply per-sample losses with, ``[B]`` float32.
    """
    w = buffer_weights.float()
    if norm == "batch":
        return w / w.max()
    if norm == "buffer":
        return w
    raise ValueError(f"weight norm must be one of {WEIGHT_NORMS}, got {norm!r}")


def priority_quantiles(replay: Any) -> tuple[float, float, float]:
    """(min, median, max) of the sampling priorities p^alpha of every stored transition.

    Reads TorchRL's sum tree (``PrioritizedSampler._sum_tree``, the only place the stored
    priorities live); costs about 3 ms per 100k transitions, so it is meant for logging.
    """
    n = len(replay)
    if n == 0:
        return (float("nan"),) * 3
    values = torch.as_tensor(replay.sampler._sum_tree[torch.arange(n)])
    return float(values.min()), float(values.median()), float(values.max())
