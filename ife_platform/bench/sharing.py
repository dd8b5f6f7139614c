"""Two training runs on one machine: does each get its share (issue 13)?

Real ``ife train`` processes (DER profile, one env), each with its own MLflow store in a
temporary folder: one alone, then two started together, with the automatic thread share
(``trainer.threads=0``) and with a fixed thread count (``trainer.threads=N``, what every run
used before: torch's default of one thread per core). The rate of a run is the mean of its
logged ``train/steps_per_s`` once learning has started (agent steps per second while acting
and learning, one update per step).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _command() -> list[str]:
    script = Path(sys.executable).with_name("ife")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ife_platform.cli"]


def _run_args(
    extractor: str, game: str, steps: int, learning_starts: int, threads: int, folder: Path
) -> list[str]:
    return [
        "train",
        "agent=rainbow_der",
        f"model.extractor={extractor}",
        f"env.game={game}",
        f"train.total_steps={steps}",
        f"agent.learning_starts={learning_starts}",
        f"trainer.steps_per_epoch={steps}",
        "trainer.log_every_updates=50",
        "trainer.progress_bar=false",
        f"trainer.threads={threads}",
        "replay.capacity=10000",
        "tracking.eval_episodes=0",
        "tracking.video=false",
        f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",
        f"tracking.output_dir={folder / 'out'}",
    ]


def _learning_rate(folder: Path, learning_starts: int) -> float:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ife").experiment_id])
    history = client.get_metric_history(run.info.run_id, "train/steps_per_s")
    # the first log after learning starts spans the warm-up: leave it out
    rates = [m.value for m in sorted(history, key=lambda m: m.step) if m.step > learning_starts]
    rates = rates[1:] or rates
    return sum(rates) / len(rates) if rates else float("nan")


def _together(n: int, args_of: Any, learning_starts: int) -> list[float]:
    """Start ``n`` runs at once; their learning-phase rates."""
    with tempfile.TemporaryDirectory() as tmp:
        folders = [Path(tmp) / f"run{i}" for i in range(n)]
        procs = []
        for folder in folders:
            folder.mkdir()
            procs.append(
                subprocess.Popen(
                    [*_command(), *args_of(folder)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"},
                )
            )
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"ife train failed: {err[-2000:]}")
        return [_learning_rate(folder, learning_starts) for folder in folders]


def bench_sharing(
    extractor: str,
    *,
    game: str = "pong",
    steps: int = 1500,
    learning_starts: int = 300,
    fixed_threads: int | None = None,
) -> dict[str, Any]:
    """Agent steps/s of one run alone and of each of two started together.

    Args:
        extractor: ``model.extractor`` of the runs.
        game: the ALE game.
        steps: agent steps per run.
        learning_starts: agent steps before the first update.
        fixed_threads: the fixed thread count compared with the automatic share (default: the
            machine's usable cores, torch's default).

    Returns:
        alone / pair rates (agent steps/s) for ``auto`` and ``fixed``, and each pair run's
        ratio to the alone rate of the same mode.
    """
    from ife_platform.threads import usable_cores

    fixed = fixed_threads or usable_cores()
    out: dict[str, Any] = {"extractor": extractor, "game": game, "steps": steps, "fixed": fixed}
    start = time.perf_counter()
    for mode, threads in (("auto", 0), ("fixed", fixed)):

        def args_of(folder: Path, threads: int = threads) -> list[str]:
            return _run_args(extractor, game, steps, learning_starts, threads, folder)

        (alone,) = _together(1, args_of, learning_starts)
        pair = _together(2, args_of, learning_starts)
        out[mode] = {
            "threads": threads,
            "alone": alone,
            "pair": pair,
            "ratios": [p / alone for p in pair],
        }
    out["wall_s"] = time.perf_counter() - start
    return out
