"""Replay reads with and without ``replay.blank_before_life_start`` (docs/benchmarks.md).

    python scripts/bench_blanking.py

One ``FrameStackStorage`` of 20,000 random frames with a life start every ~100, read as the
training step reads it: ``gather_stacks`` of ``obs`` and ``next_obs`` for a batch of 32, both
variants interleaved over 7 rounds of 2,000 samples, 1 torch thread; medians in us per sample.
"""

from __future__ import annotations

import statistics
import time

import torch

from ife_platform.rainbow.dedup import FrameStackStorage

FRAMES, BATCH, SAMPLES, ROUNDS = 20_000, 32, 2000, 7


def filled_storage(blank: bool) -> FrameStackStorage:
    """A one-env storage holding ``FRAMES`` frames, the same ones for both variants."""
    storage = FrameStackStorage(100_000, frame_stack=4, blank_before_life_start=blank)
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (FRAMES, 84, 84), dtype=torch.uint8, generator=g)
    starts = torch.rand(FRAMES, generator=g) < 0.01
    env, protect = torch.zeros(1000, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    for i in range(0, FRAMES, 1000):
        storage.add_frames(env, frames[i : i + 1000], protect, starts[i : i + 1000])
    return storage


def main() -> None:
    """Print the median read time per sample of each variant."""
    torch.set_num_threads(1)
    stores = {False: filled_storage(False), True: filled_storage(True)}
    first = torch.randint(
        0, FRAMES - 30, (SAMPLES, BATCH), generator=torch.Generator().manual_seed(1)
    )
    env = torch.zeros(BATCH, dtype=torch.long)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(ROUNDS):
        for blank, storage in stores.items():
            t0 = time.perf_counter()
            for i in range(SAMPLES):
                storage.gather_stacks(env, first[i])  # obs
                storage.gather_stacks(env, first[i] + 20)  # next_obs, n = 20 steps later
            times[blank].append((time.perf_counter() - t0) / SAMPLES * 1e6)
    for blank, values in times.items():
        print(
            f"blanking {blank}: {statistics.median(values):.1f} us per sample "
            f"(rounds: {', '.join(f'{v:.0f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
