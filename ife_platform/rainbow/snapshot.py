"""Replay-buffer snapshots that load without unpickling anything (``replay.save_buffer``).

TorchRL's ``ReplayBuffer.dumps`` / ``loads`` round-trip a prefetch queue through ``pickle``
(``prefetch.pkl``), so loading a folder someone else wrote can run their code (issue 12). A
snapshot here is one ``torch.save`` file of plain tensors and numbers, loaded with
``weights_only=True``: the storage's tensors and length (version 2: the frame ring of
:class:`~ife_platform.rainbow.dedup.FrameStackStorage`, its cursors and the per-transition
frame references, about 1/6 of version 1's two stacks per transition), the writer's cursor, the
sampler's priorities (the segment trees' leaves; the trees themselves are C++ objects) and the
sampling generator's state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ife_platform.checkpoint import CheckpointError, atomic_save

#: Bumped when the layout changes; older snapshots are refused with a clear message.
#: 1: stacked obs / next_obs per transition; 2: per-env frame ring + frame references (issue 13).
SNAPSHOT_VERSION = 2


def snapshot_name(rank: int, env_steps: int) -> str:
    """File name of rank ``rank``'s snapshot taken with the checkpoint at ``env_steps``."""
    return f"replay-rank{rank}-step-{env_steps:09d}.pt"


def replay_state(buffer: Any) -> dict[str, Any]:
    """The buffer's state as tensors and numbers (storage, writer, priorities, generator)."""
    n = len(buffer)
    idx = np.arange(n)
    sampler = buffer._sampler
    rng = buffer._rng
    return {
        "version": SNAPSHOT_VERSION,
        "len": n,
        "storage": buffer._storage.state_dict() if n else None,
        "writer": buffer._writer.state_dict(),
        "priorities": {
            "sum": torch.as_tensor(np.asarray(sampler._sum_tree[idx])) if n else None,
            "min": torch.as_tensor(np.asarray(sampler._min_tree[idx])) if n else None,
            "max": sampler._max_priority,
            "alpha": float(sampler._alpha),
            "beta": float(sampler._beta),
            "eps": float(sampler._eps),
        },
        "rng": rng.get_state() if rng is not None else None,
    }


def save_replay(buffer: Any, path: str | Path) -> None:
    """Write :func:`replay_state` atomically to ``path``."""
    atomic_save(replay_state(buffer), path)


def load_replay(buffer: Any, path: str | Path) -> None:
    """Fill an empty buffer (same capacity and layout) from a snapshot file.

    Raises:
        CheckpointError: unreadable file, another layout, or a buffer of another capacity.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read the replay snapshot {path}: {err}") from err
    if not isinstance(state, dict) or "version" not in state:
        raise CheckpointError(f"{path} is not a replay snapshot of this platform")
    if state["version"] != SNAPSHOT_VERSION:
        raise CheckpointError(
            f"{path} is a replay snapshot of layout version {state['version']}; this platform "
            f"reads version {SNAPSHOT_VERSION} (frame-deduplicated replay) only: resume without "
            "it (the replay refills from empty) or with the platform version that wrote it"
        )
    n, sampler = int(state["len"]), buffer._sampler
    if n > sampler._max_capacity:
        raise CheckpointError(
            f"{path} holds {n} transitions; replay.capacity={sampler._max_capacity} is smaller"
        )
    if n == 0:
        return
    stored = state["storage"]["_storage"]
    capacity = next(v.shape[0] for v in stored.values() if isinstance(v, torch.Tensor))
    if capacity != buffer._storage.max_size:
        raise CheckpointError(
            f"{path} was saved with replay.capacity={capacity}, this run has "
            f"{buffer._storage.max_size}"
        )
    try:
        buffer._storage.load_state_dict(state["storage"])
    except (KeyError, ValueError) as err:  # another frame stack / env count, or no frame ring
        raise CheckpointError(f"{path} does not fit this run's replay: {err}") from err
    buffer._writer.load_state_dict(state["writer"])
    idx = np.arange(n)
    p = state["priorities"]
    sampler._sum_tree[idx] = p["sum"].numpy()
    sampler._min_tree[idx] = p["min"].numpy()
    sampler._max_priority = p["max"]
    sampler._alpha, sampler._beta, sampler._eps = p["alpha"], p["beta"], p["eps"]
    if state["rng"] is not None and buffer._rng is not None:
        buffer._rng.set_state(state["rng"])
