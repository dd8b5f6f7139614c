"""Section 3: replay bytes per transition, measured from the storage tensors."""

from __future__ import annotations

from typing import Any

from ife_platform.bench.common import (
    DEDUP_FRAME_BYTES_PER_TRANSITION,
    PIXEL_BYTES_PER_TRANSITION,
)
from ife_platform.bench.learner import learner_config


def storage_bytes(replay) -> dict[str, Any]:
    """Bytes of a TorchRL replay's tensor storage: per key and per transition slot.

    Sums ``element_size * numel`` over every stored tensor and divides by the capacity. For a
    :class:`~ife_platform.rainbow.dedup.FrameStackStorage` the frame ring (``frame_ring``, the
    unique 84x84 frames) and its reference serials (``frame_ring_ref``) are counted as well.
    """
    store = replay.storage
    data = store._storage  # the [capacity, ...] TensorDict LazyTensorStorage allocated
    if data is None:
        raise ValueError("the storage is still empty (LazyTensorStorage allocates on extend)")
    capacity = int(store.max_size)
    tensors = {
        "/".join(k) if isinstance(k, tuple) else k: v
        for k, v in data.items(include_nested=True, leaves_only=True)
    }
    frames, ref = getattr(store, "frames", None), getattr(store, "_ref", None)
    if frames is not None and ref is not None:
        tensors["frame_ring"], tensors["frame_ring_ref"] = frames, ref
    per_key = {k: int(v.element_size() * v.numel()) for k, v in tensors.items()}
    dtypes = {k: str(v.dtype).replace("torch.", "") for k, v in tensors.items()}
    total = sum(per_key.values())
    return {
        "capacity": capacity,
        "total_bytes": total,
        "bytes_per_transition": total / capacity,
        "per_key_bytes_per_transition": {k: v / capacity for k, v in per_key.items()},
        "dtypes": dtypes,
    }


def bench_replay(
    *, transitions: int = 300, capacity: int = 1_000, game: str = "pong", extractor: str = "der_cnn"
) -> dict[str, Any]:
    """Fill the replay through the training data path and measure its bytes per transition.

    ``frame_bytes_per_transition`` (the ring of unique frames) is read against the issue-13
    target of 1.25 frames per transition (``limit_bytes``); ``overhead_bytes`` is everything
    else per slot (frame references, scalars, reference serials).

    Builds a :class:`RainbowTask` (DER profile), its stream (env, collector, n-step
    accumulator, replay: ``build_stream`` / ``build_replay``), collects ``transitions`` agent
    steps and stores them exactly as ``ReplayStream`` does.
    """
    from ife_platform.tasks.rainbow import RainbowTask

    cfg = learner_config(
        extractor,
        game=game,
        learning_starts=transitions,
        updates=1,
        capacity=capacity,
        extra=("agent.n_step=3",),
    )
    task = RainbowTask(cfg)
    stream = task.build_stream()
    it = iter(stream.collector)
    try:
        for _ in range(transitions):
            stream.store(next(it))
    finally:
        stream.collector.shutdown()
    out = storage_bytes(stream.replay)
    per_key = out["per_key_bytes_per_transition"]
    frame_bytes = per_key.get("frame_ring", 0.0)
    out.update(
        stored=len(stream.replay),
        frame_bytes_per_transition=frame_bytes,
        limit_bytes=DEDUP_FRAME_BYTES_PER_TRANSITION,
        overhead_bytes=out["bytes_per_transition"] - frame_bytes,
        within_limit=frame_bytes <= DEDUP_FRAME_BYTES_PER_TRANSITION,
        stacked_bytes_per_transition=PIXEL_BYTES_PER_TRANSITION,
    )
    return out
