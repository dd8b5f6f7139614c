"""``replay.sample()`` time: stacked storage (before issue 13) against the frame-deduplicated one.

Both prioritized buffers are filled with the same synthetic stream (``--envs`` envs, random
84x84 frames, ale-py-like stacks, an episode end now and then; push + extend timed per vector
step, interleaved, over the second half of the fill when the rings wrap), then sampled in
interleaved rounds (old, new, old, new, ...) with the same generator seed; medians are printed.

    .venv/bin/python scripts/bench_replay_sample.py [--capacity 20000] [--rounds 200]
        [--threads 1] [--envs 4]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchrl.data import TensorDictPrioritizedReplayBuffer

from ife_platform.rainbow.dedup import FrameNStepAccumulator, FrameStackStorage, frame_ring_size
from ife_platform.rainbow.nstep import NStepAccumulator
from ife_platform.rainbow.replay import GatherTensorStorage


def _buffer(storage, batch: int) -> TensorDictPrioritizedReplayBuffer:
    return TensorDictPrioritizedReplayBuffer(
        alpha=0.5,
        beta=0.4,
        priority_key="td_error",
        storage=storage,
        batch_size=batch,
        generator=torch.Generator().manual_seed(0),
    )


def main() -> None:
    """Fill both buffers, time ``sample()`` for batch 32 and 512, print medians (ms)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--capacity", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--envs", type=int, default=4)
    opts = p.parse_args()
    torch.set_num_threads(opts.threads)
    n_env, n, stack, cap = opts.envs, 3, 4, opts.capacity
    old_st = GatherTensorStorage(cap)
    new_st = FrameStackStorage(
        cap, frame_stack=stack, num_envs=n_env, ring_size=frame_ring_size(cap, n_env, n, 4)
    )
    old_acc, new_acc = (
        NStepAccumulator(n_env, n, 0.99),
        FrameNStepAccumulator(n_env, n, 0.99, new_st),
    )
    old_rb, new_rb = _buffer(old_st, 32), _buffer(new_st, 32)
    g = torch.Generator().manual_seed(1)
    stacks = torch.zeros(n_env, stack, 84, 84, dtype=torch.uint8)
    stacks[:, -1] = torch.randint(0, 256, (n_env, 84, 84), dtype=torch.uint8, generator=g)
    store_times: dict[str, list[float]] = {"stacked": [], "dedup": []}
    steps = 2 * (cap // n_env) + 10  # the second half runs on full, wrapping rings
    for step in range(steps):
        frame = torch.randint(0, 256, (n_env, 1, 84, 84), dtype=torch.uint8, generator=g)
        nxt = torch.cat([stacks[:, 1:], frame], 1)
        done = torch.rand(n_env, generator=g) < 0.005
        args = (
            stacks[:, None],
            torch.randint(0, 4, (n_env, 1), generator=g),
            torch.rand(n_env, 1, generator=g),
            done[:, None],
            done[:, None],
            nxt[:, None],
        )
        paths = [("stacked", old_acc, old_rb), ("dedup", new_acc, new_rb)]
        for name, acc, rb in paths if step % 2 else paths[::-1]:  # push + extend, interleaved
            t0 = time.perf_counter()
            ready = acc.push(*args)
            if ready.batch_size[0]:
                rb.extend(ready)
            if step >= steps // 2:
                store_times[name].append(time.perf_counter() - t0)
        stacks = nxt.clone()
        if done.any():
            stacks[done] = 0
            stacks[done, -1] = torch.randint(
                0, 256, (int(done.sum()), 84, 84), dtype=torch.uint8, generator=g
            )
    print(f"capacity {cap}, stored {len(old_st)}, envs {n_env}, threads {opts.threads}")
    med = {k: statistics.median(v) * 1e3 for k, v in store_times.items()}
    print(
        f"push + extend per vector step: stacked {med['stacked']:.3f} ms, "
        f"dedup {med['dedup']:.3f} ms (dedup / stacked {med['dedup'] / med['stacked']:.2f})"
    )
    for size in (32, 512):
        times: dict[str, list[float]] = {"stacked": [], "dedup": []}
        for _ in range(opts.rounds):
            for name, rb in (("stacked", old_rb), ("dedup", new_rb)):
                t0 = time.perf_counter()
                rb.sample(size)
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(
            f"batch {size:4d}: stacked {med['stacked']:.3f} ms, dedup {med['dedup']:.3f} ms "
            f"(dedup / stacked {med['dedup'] / med['stacked']:.2f})"
        )


if __name__ == "__main__":
    main()
