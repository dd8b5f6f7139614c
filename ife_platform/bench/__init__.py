"""``ife bench``: the platform's throughput against framework-free baselines, side by side.

Three measurements, each run in one process on one machine so that the ratios are fair:

1. **Env steps/s**: ale-py's native ``AtariVectorEnv`` stepped from numpy (the raw emulator
   speed) against the platform's TorchRL ``Collector`` over :class:`~ife_platform.envs.AtariVecEnv`
   (same settings, a random policy wrapped like the task's actor), with the training
   ``frames_per_batch`` (one vector step per batch) and with a larger one.
2. **Learner updates/s**: the real training loop (:class:`~ife_platform.tasks.rainbow.RainbowTask`
   under a Lightning ``Trainer``, past ``learning_starts``, one update per agent step) against
   a bare PyTorch loop with the same network, batch, env, loss and optimiser, but a numpy
   uint8 ring-buffer replay with uniform sampling. Both sides include env stepping, acting,
   replay insertion, sampling and the update.
3. **Replay bytes per transition**: the replay built as ``RainbowTask.build_replay`` does,
   filled through the training data path, measured from its storage tensors (the
   frame-deduplicated storage: transition tensors plus its frame ring).

Measurements of the two sides of a comparison are interleaved (A, B, A, B, ...) and medians
reported, which cancels most of the drift of a shared, noisy machine.

Usage::

    ife bench [--quick] [--sections env,learner,replay] [--json PATH] [...]
    python -m ife_platform.bench --help
"""

from __future__ import annotations

from ife_platform.bench.actors import bench_actors
from ife_platform.bench.command import main
from ife_platform.bench.common import (
    DEDUP_FRAME_BYTES_PER_TRANSITION,
    ENV_RATIO_TARGET,
    LEARNER_RATIO_TARGET,
    PIXEL_BYTES_PER_TRANSITION,
    RandomActor,
    interleave,
    machine_info,
    make_platform_collector,
    make_raw_vector_env,
    median,
)
from ife_platform.bench.env import bench_env
from ife_platform.bench.explain import bench_explain, bench_explain_agents
from ife_platform.bench.learner import (
    BareNStep,
    BareStream,
    UniformReplay,
    bare_learner_rate,
    bench_learner,
    learner_config,
    platform_learner_rate,
)
from ife_platform.bench.precision import bench_precision, compare_runs, run_updates
from ife_platform.bench.replay import bench_replay, storage_bytes
from ife_platform.bench.report import format_report

__all__ = [
    "DEDUP_FRAME_BYTES_PER_TRANSITION",
    "ENV_RATIO_TARGET",
    "LEARNER_RATIO_TARGET",
    "PIXEL_BYTES_PER_TRANSITION",
    "BareNStep",
    "BareStream",
    "RandomActor",
    "UniformReplay",
    "bare_learner_rate",
    "compare_runs",
    "bench_actors",
    "bench_env",
    "bench_explain",
    "bench_explain_agents",
    "bench_learner",
    "bench_precision",
    "bench_replay",
    "format_report",
    "interleave",
    "learner_config",
    "machine_info",
    "main",
    "make_platform_collector",
    "make_raw_vector_env",
    "median",
    "platform_learner_rate",
    "run_updates",
    "storage_bytes",
]
