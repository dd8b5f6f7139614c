"""Sampling cost of replay.blank_before_life_start: gather_stacks with and without it (docs/benchmarks.md)."""

import statistics
import time

import torch

torch.set_num_threads(1)
from ife_platform.rainbow.dedup import FrameStackStorage


def make(blank):
    st = FrameStackStorage(100_000, frame_stack=4, num_envs=1, blank_before_life_start=blank)
    g = torch.Generator().manual_seed(0)
    n = 20_000
    frames = torch.randint(0, 256, (n, 84, 84), dtype=torch.uint8, generator=g)
    starts = torch.rand(n, generator=g) < 0.01
    for i in range(0, n, 1000):
        st.add_frames(
            torch.zeros(1000, dtype=torch.long),
            frames[i : i + 1000],
            torch.zeros(1, dtype=torch.long),
            starts[i : i + 1000],
        )
    return st


a, b = make(False), make(True)
idx = torch.randint(0, 19_990, (2000, 32), generator=torch.Generator().manual_seed(1))
env = torch.zeros(32, dtype=torch.long)
res = {False: [], True: []}
for r in range(7):
    for blank, st in ((False, a), (True, b)):
        t = time.perf_counter()
        for i in range(2000):
            st.gather_stacks(env, idx[i])
            st.gather_stacks(env, idx[i] + 20)
        res[blank].append((time.perf_counter() - t) / 2000 * 1e6)
for k, v in res.items():
    print(
        "blank",
        k,
        "us per sample (obs+next_obs, batch 32): median %.1f" % statistics.median(v),
        [round(x) for x in v],
    )
