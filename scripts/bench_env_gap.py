"""Does work between two vector steps slow ale-py's step itself? (issue 13, env path).

The raw baseline of ``ife bench --sections env`` steps ale-py's vector env in a tight loop.
A collector does some work between steps (the policy, tensordicts, bookkeeping). This times
``step`` alone, interleaved, with no work between steps and with a busy-wait of a given
length between them (a stand-in for the collector's work that touches no emulator data).

    .venv/bin/python scripts/bench_env_gap.py --envs 8 --rounds 9 --gaps 0,20,110,400
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ife_platform.bench.common import make_raw_vector_env


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def step_ms(vec, rng: np.random.Generator, envs: int, steps: int, gap_s: float) -> float:
    """Mean ms inside ``vec.step`` over ``steps`` steps with ``gap_s`` of busy work between."""
    actions = int(vec.single_action_space.n)
    inside = 0.0
    for _ in range(steps):
        action = rng.integers(0, actions, envs)
        t0 = time.perf_counter()
        vec.step(action)
        inside += time.perf_counter() - t0
        if gap_s:
            _busy(gap_s)
    return inside / steps * 1e3


def main() -> None:
    """Print the median step time per gap and its ratio to the no-gap step."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--game", default="pong")
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--gaps", default="0,20,110,400", help="microseconds, comma-separated")
    a = p.parse_args()
    gaps = [int(g) for g in a.gaps.split(",")]
    vec = make_raw_vector_env(a.game, a.envs, seed=0)
    rng = np.random.default_rng(0)
    step_ms(vec, rng, a.envs, a.steps, 0.0)  # warm-up
    samples: dict[int, list[float]] = {g: [] for g in gaps}
    for _ in range(a.rounds):
        for g in gaps:
            samples[g].append(step_ms(vec, rng, a.envs, a.steps, g * 1e-6))
    base = statistics.median(samples[gaps[0]])
    print(f"{a.game}, {a.envs} envs, {a.rounds} interleaved rounds of {a.steps} steps")
    for g in gaps:
        m = statistics.median(samples[g])
        spread = f"{min(samples[g]):.2f}-{max(samples[g]):.2f}"
        print(f"gap {g:4d} us: step {m:.3f} ms (range {spread}), {m / base:.2f}x gap {gaps[0]}")
    vec.close()


if __name__ == "__main__":
    main()
