"""Section 5: actor-critic, actor processes against the raw vector env, learner updates/s."""

from __future__ import annotations

import time
from typing import Any

from ife_platform.bench.common import make_raw_vector_env, median


def bench_actors(
    game: str = "pong",
    *,
    actors: int = 2,
    envs_per_actor: int = 4,
    batches: int = 12,
    rounds: int = 2,
    extractor: str = "ife",
) -> dict[str, Any]:
    """Agent steps/s of N actor processes (A3C-LSTM policy acting) vs the raw vector env.

    The raw side steps one ale-py vector env with ``actors * envs_per_actor`` games and random
    actions in this process; the platform side is ``ActorCriticTask``'s MultiAsyncCollector
    (one torch thread per actor) with the untrained IFE-LSTM policy choosing actions. Both
    use the same cores. Then the learner: updates/s of the A3C loss + Adam + weight push on
    the collected rollouts (no Lightning loop).
    """
    import numpy as np
    import torch

    from ife_platform.config import compose
    from ife_platform.tasks.a3c import ActorCriticTask

    cfg = compose(
        [
            "agent=a3c_lstm",
            f"env.game={game}",
            f"model.extractor={extractor}",
            f"env.num_envs={envs_per_actor}",
            f"agent.actors={actors}",
        ]
    )
    task = ActorCriticTask(cfg)
    n = actors * envs_per_actor
    rng = np.random.default_rng(0)
    # What one acting step costs an actor process (one torch thread, envs_per_actor frames).
    from ife_platform.evaluation import torch_threads
    from ife_platform.tasks.a3c import build_acting_model

    acting = build_acting_model(cfg, task.num_actions)
    x = torch.randint(0, 256, (envs_per_actor, 1, 84, 84), dtype=torch.uint8)
    state = acting.initial_state(envs_per_actor)
    first = torch.zeros(envs_per_actor, dtype=torch.bool)
    with torch_threads(1), torch.no_grad():
        acting.step(x, state, first)
        t0 = time.perf_counter()
        for _ in range(20):
            acting.step(x, state, first)
        policy_ms = (time.perf_counter() - t0) / 20 * 1000
    steps = batches * cfg.agent.rollout * envs_per_actor  # agent steps per measurement
    vec = make_raw_vector_env(game, n)
    vec.reset(seed=0)

    def raw() -> float:
        t0 = time.perf_counter()
        for _ in range(steps // n):
            vec.step(rng.integers(0, task.num_actions, n))
        return (steps // n) * n / (time.perf_counter() - t0)

    # Not interleaved: a MultiAsyncCollector's actors keep stepping between batches, so the
    # raw env is measured before the actors start (on the same, otherwise idle, cores).
    raw()
    results = {"raw ale-py vector env": [raw() for _ in range(rounds)]}
    vec.close()
    task._collector = task.build_collector()
    kept: list[Any] = []
    try:
        it = iter(task._collector)
        kept.append(next(it))

        def platform() -> float:
            t0 = time.perf_counter()
            frames = 0
            while frames < steps:
                batch = next(it)
                frames += batch.numel()
                if len(kept) < 4:
                    kept.append(batch)
            return frames / (time.perf_counter() - t0)

        platform()
        results["actor processes"] = [platform() for _ in range(rounds)]
        opt = task.configure_optimizers()
        t0 = time.perf_counter()
        for batch in kept:
            terms = task.loss(batch)
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
            task.updates += 1
            task.push_weights()
        learner = len(kept) / (time.perf_counter() - t0)
    finally:
        task.shutdown_collector()
    raw_rate = median(results["raw ale-py vector env"])
    return {
        "game": game,
        "actors": actors,
        "envs_per_actor": envs_per_actor,
        "extractor": extractor,
        "rounds": rounds,
        "variants": {
            k: {"steps_per_s": median(v), "ratio": median(v) / raw_rate, "samples": v}
            for k, v in results.items()
        },
        "learner_updates_per_s": learner,
        "policy_step_ms": policy_ms,
        "rollout_steps_per_update": cfg.agent.rollout * envs_per_actor,
    }
