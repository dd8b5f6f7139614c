"""``ife bench``: argument parsing and the sections in order."""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from ife_platform.bench.actors import bench_actors
from ife_platform.bench.common import machine_info, quiet_lightning
from ife_platform.bench.env import bench_env
from ife_platform.bench.explain import bench_explain, bench_explain_agents
from ife_platform.bench.learner import bench_learner, learner_config, platform_learner_rate
from ife_platform.bench.precision import bench_precision
from ife_platform.bench.replay import bench_replay
from ife_platform.bench.report import format_report
from ife_platform.bench.sharing import bench_sharing


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str]) -> int:
    """``ife bench``: run the selected measurements, print tables, optionally write JSON."""
    parser = argparse.ArgumentParser(
        prog="ife bench",
        description="Platform vs framework-free throughput, measured side by side.",
    )
    parser.add_argument(
        "--sections",
        default="env,learner,replay,explain,actors",
        help="comma list of env, learner, replay, explain, actors, sharing, precision "
        "(default: all but sharing and precision, which run for several minutes)",
    )
    parser.add_argument("--quick", action="store_true", help="small budgets (about a minute)")
    parser.add_argument("--game", default="pong")
    parser.add_argument("--num-envs", default="8,64", help="env section: comma list")
    parser.add_argument("--env-rounds", type=int, default=None)
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        help="env section: agent steps per measurement (all envs together)",
    )
    parser.add_argument("--extractors", default="ife,der_cnn", help="learner section: comma list")
    parser.add_argument(
        "--updates",
        type=int,
        default=None,
        help="learner section: updates per measurement (der_cnn runs 4x more)",
    )
    parser.add_argument("--learner-rounds", type=int, default=None)
    parser.add_argument(
        "--precisions",
        default="32-true,bf16-mixed",
        help="learner section: trainer.precision values the platform runs with, side by side "
        "(the bare loop stays fp32); PRECISION+compile adds trainer.compile=true",
    )
    parser.add_argument(
        "--parity-updates",
        type=int,
        default=None,
        help="precision section: updates per run (default 1000, --quick 100)",
    )
    parser.add_argument(
        "--parity-variants",
        default="bf16-mixed",
        help="precision section: comma list of candidates against the fp32 reference, "
        "PRECISION[+compile] (e.g. bf16-mixed,32-true+compile)",
    )
    parser.add_argument(
        "--parity-game",
        default="ms_pacman",
        help="precision section: the game of the fixed replay snapshot",
    )
    parser.add_argument("--learning-starts", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--profile",
        default=None,
        help="learner: write a cProfile dump of one platform run per extractor "
        "to PATH.<extractor>.prof (not timed)",
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    opts = parser.parse_args(argv)

    sections = {s.strip() for s in opts.sections.split(",") if s.strip()}
    known = {"env", "learner", "replay", "explain", "actors", "sharing", "precision"}
    unknown = sections - known
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    env_rounds = opts.env_rounds or (3 if opts.quick else 5)
    frames = opts.frames or (1024 if opts.quick else 3072)
    learner_rounds = opts.learner_rounds or (2 if opts.quick else 3)
    updates = opts.updates or (15 if opts.quick else 40)

    import torch

    quiet_lightning()
    warnings.filterwarnings("ignore", category=FutureWarning)  # torchrl 0.15 notices
    if opts.threads:
        torch.set_num_threads(opts.threads)
    start = time.perf_counter()
    results: dict[str, Any] = {"machine": machine_info(), "argv": list(argv)}
    print(format_report(results).split("\n\nload average at end")[0], flush=True)
    if "env" in sections:
        results["env"] = []
        for n in _ints(opts.num_envs):
            steps = max(16, frames // n)
            results["env"].append(bench_env(opts.game, n, vector_steps=steps, rounds=env_rounds))
            print(f"  env {n} envs done ({time.perf_counter() - start:.0f} s)", flush=True)
    if "learner" in sections:
        results["learner"] = []
        for name in [x for x in opts.extractors.split(",") if x]:
            n_up = updates * (4 if name in ("der_cnn", "nature_cnn") else 1)
            if opts.profile:
                cfg = learner_config(
                    name, game=opts.game, learning_starts=opts.learning_starts, updates=n_up
                )
                platform_learner_rate(cfg, profile=f"{opts.profile}.{name}.prof")
            results["learner"].append(
                bench_learner(
                    name,
                    updates=n_up,
                    rounds=learner_rounds,
                    learning_starts=opts.learning_starts,
                    game=opts.game,
                    precisions=[p for p in opts.precisions.split(",") if p],
                )
            )
            print(f"  learner {name} done ({time.perf_counter() - start:.0f} s)", flush=True)
    if "replay" in sections:
        results["replay"] = bench_replay(game=opts.game)
    if "explain" in sections:
        results["explain"] = bench_explain(
            opts.game, steps=150 if opts.quick else 400, rounds=3 if opts.quick else 5
        )
        results["explain"]["analysis"] = bench_explain_agents(
            opts.game, steps=60 if opts.quick else 200
        )
        print(f"  explain done ({time.perf_counter() - start:.0f} s)", flush=True)
    if "actors" in sections:
        results["actors"] = bench_actors(
            opts.game, batches=6 if opts.quick else 12, rounds=2 if opts.quick else 3
        )
        print(f"  actors done ({time.perf_counter() - start:.0f} s)", flush=True)
    if "sharing" in sections:
        results["sharing"] = []
        for name in [x for x in opts.extractors.split(",") if x]:
            steps = 600 if opts.quick else 1500 if name in ("der_cnn", "nature_cnn") else 700
            results["sharing"].append(
                bench_sharing(
                    name, game=opts.game, steps=steps, learning_starts=min(300, steps // 3)
                )
            )
            print(f"  sharing {name} done ({time.perf_counter() - start:.0f} s)", flush=True)
    if "precision" in sections:
        results["precision"] = []
        n_up = opts.parity_updates or (100 if opts.quick else 1000)
        for name in [x for x in opts.extractors.split(",") if x]:
            results["precision"].append(
                bench_precision(
                    name,
                    game=opts.parity_game,
                    steps=1000 if opts.quick else 3000,
                    updates=n_up,
                    window=min(100, n_up),
                    variants=tuple(v for v in opts.parity_variants.split(",") if v),
                )
            )
            print(f"  precision {name} done ({time.perf_counter() - start:.0f} s)", flush=True)
    results["wall_s"] = time.perf_counter() - start
    results["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print()
    print(format_report(results))
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2, default=str))
        print(f"results written to {opts.json}")
    return 0
