"""Section 1: env steps/s, the platform's TorchRL collector against the raw ale-py vector env."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ife_platform.bench.common import (
    interleave,
    make_platform_collector,
    make_raw_vector_env,
    median,
)


def bench_env(
    game: str = "pong",
    num_envs: int = 8,
    *,
    vector_steps: int = 256,
    rounds: int = 5,
    big_batch_steps: int = 16,
    compare_defaults: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Env steps/s of the raw vector env and of the platform's collector, interleaved.

    Args:
        game: ale-py ROM id.
        num_envs: emulators stepped together.
        vector_steps: vector steps per measurement (a multiple of ``big_batch_steps``).
        rounds: interleaved measurements per variant; medians are reported.
        big_batch_steps: vector steps per batch of the "larger frames_per_batch" variant.
        compare_defaults: also measure the training batch size with TorchRL's own rollout
            (``Collector`` instead of ``VectorStepCollector``, same options) and with its
            default collector options (without ``tasks.rainbow.COLLECTOR_KWARGS``).
        seed: seed of the emulators and of the random actions.

    Returns:
        ``{"num_envs", "variants": {name: {"steps_per_s", "samples", "ratio"}}, ...}`` where
        ratio is the median rate over the raw env's median rate.
    """
    import numpy as np

    from ife_platform.envs import AtariVecEnv

    vector_steps = max(big_batch_steps, vector_steps - vector_steps % big_batch_steps)
    vec = make_raw_vector_env(game, num_envs, seed=seed)
    num_actions = int(vec.single_action_space.n)
    rng = np.random.default_rng(seed)

    def raw() -> float:
        t0 = time.perf_counter()
        for _ in range(vector_steps):
            vec.step(rng.integers(0, num_actions, num_envs))
        return vector_steps * num_envs / (time.perf_counter() - t0)

    # name: (vector steps per batch, TorchRL's rollout, TorchRL's default options)
    variants: dict[str, tuple[int, bool, bool]] = {
        f"platform fpb={num_envs} (training)": (1, False, False),
        f"platform fpb={num_envs * big_batch_steps}": (big_batch_steps, False, False),
    }
    if compare_defaults:
        variants[f"platform fpb={num_envs}, TorchRL rollout"] = (1, True, False)
        variants[f"platform fpb={num_envs}, TorchRL default collector"] = (1, True, True)
    samplers: dict[str, Callable[[], float]] = {"raw ale-py vector env": raw}
    closers: list[Callable[[], None]] = [vec.close]
    for name, (steps_per_batch, rollout, defaults) in variants.items():
        env = AtariVecEnv(game, num_envs, seed=seed)
        collector = make_platform_collector(
            env,
            num_envs * steps_per_batch,
            torchrl_rollout=rollout,
            torchrl_defaults=defaults,
            seed=seed,
        )
        it = iter(collector)
        next(it)  # allocate buffers, first reset

        def sample(it=it, steps_per_batch=steps_per_batch) -> float:
            t0 = time.perf_counter()
            frames = 0
            for _ in range(vector_steps // steps_per_batch):
                frames += next(it).numel()
            return frames / (time.perf_counter() - t0)

        samplers[name] = sample
        closers.append(collector.shutdown)
    for sample in samplers.values():  # warm-up, not recorded
        sample()
    try:
        results = interleave(samplers, rounds)
    finally:
        for close in closers:
            close()
    raw_rate = median(results["raw ale-py vector env"])
    return {
        "game": game,
        "num_envs": num_envs,
        "vector_steps_per_sample": vector_steps,
        "rounds": rounds,
        "variants": {
            name: {
                "steps_per_s": median(values),
                "ratio": median(values) / raw_rate,
                "samples": values,
            }
            for name, values in results.items()
        },
    }
