"""Shared fixtures: every test that tracks gets its own sqlite MLflow store in a temp dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Tiny budgets for real runs on real ALE games (seconds each on 2 CPU cores).
TINY = [
    "train.total_steps=240",
    "agent.learning_starts=120",
    "trainer.steps_per_epoch=120",
    "replay.capacity=2000",
    "agent.batch_size=8",
    "agent.n_step=3",
    "agent.target_update_period=40",
    "tracking.eval_episodes=1",
    "tracking.eval_max_steps=120",
    "tracking.video_max_steps=40",
    "trainer.progress_bar=false",
]

# Tiny budgets for actor-critic runs (a3c_lstm, s3ta): 2 actor processes with 2 envs each.
TINY_ACTOR_CRITIC = [
    "agent.actors=2",
    "env.num_envs=2",
    "agent.rollout=20",
    "trainer.steps_per_epoch=480",
    "trainer.log_every_updates=2",
    "tracking.eval_episodes=1",
    "tracking.eval_max_steps=60",
    "tracking.video_max_steps=24",
    "trainer.progress_bar=false",
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory with its own sqlite store (and no inherited tracking URI)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("IFE_RUN_ID", raising=False)
    return tmp_path


def tracking_args(workdir: Path) -> list[str]:
    """Overrides that put the MLflow store and outputs inside ``workdir``."""
    return [
        f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
        f"tracking.output_dir={workdir / 'out'}",
    ]


def ife_command() -> list[str]:
    """The installed console script (falls back to ``python -m``)."""
    script = Path(sys.executable).with_name("ife")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ife_platform.cli"]


def subprocess_env() -> dict[str, str]:
    """Environment for CLI subprocesses: no inherited run id or tracking URI."""
    env = dict(os.environ)
    env.pop("IFE_RUN_ID", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_ife(
    workdir: Path, args: list[str], timeout: int = 900, expect: int = 0
) -> subprocess.CompletedProcess:
    """Run the ``ife`` CLI in a subprocess in ``workdir``; fail with its stderr unless it exits
    with ``expect``.

    Actor-critic training spawns actor processes: a fresh interpreter keeps them out of the
    test process.
    """
    proc = subprocess.run(
        [*ife_command(), *args],
        cwd=workdir,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == expect, proc.stderr[-3000:]
    return proc


@pytest.fixture
def roomy_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend this host has 4 TB of free memory, so the replay-memory check of
    ``ife_platform.config.validate`` passes for presets sized for big machines (the Fast-Rainbow
    preset's 2^20-transition replay needs 9.3 GB, more than a busy small host may have free)."""
    from ife_platform import config

    monkeypatch.setattr(config, "available_memory_bytes", lambda: 4 * 10**12)


def episode_end_counts(nxt) -> list[int]:
    """(life losses, game overs, truncations) in the ``next`` data of a collected batch."""
    return [
        int(nxt["life_lost"].sum()),
        int(nxt["terminated"].sum()),
        int((nxt["done"] & ~nxt["terminated"]).sum()),
    ]


def assert_same_batches_until_every_episode_end(
    collector, reference, *, limit: int, extra_keys: frozenset = frozenset(), per_batch=None
) -> None:
    """Collect from both side by side until life losses, game overs and truncations were all
    seen: every key of ``reference``'s batches (and only ``extra_keys`` more) equal, bit for bit.
    """
    import numpy as np
    import torch

    counts = np.zeros(3, dtype=int)
    try:
        for i, (a, b) in enumerate(zip(collector, reference, strict=False)):
            assert i < limit, f"not every kind of episode end seen: {counts}"
            keys = set(b.keys(True, True))
            assert set(a.keys(True, True)) - keys == set(extra_keys)
            assert keys <= set(a.keys(True, True))
            for k in keys:
                assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
                assert torch.equal(a[k], b[k]), (i, k)
            if per_batch is not None:
                per_batch(a, b)
            counts += episode_end_counts(a["next"])
            if counts.min() >= 1 and counts.sum() >= 6:
                break
    finally:
        collector.shutdown()
        reference.shutdown()
    life_losses, game_overs, truncations = counts
    assert life_losses >= 1 and game_overs >= 1 and truncations >= 1


def start_ife_ui(cwd: Path, uri: str) -> tuple[subprocess.Popen, int]:
    """``ife ui`` for store ``uri`` on a free loopback port: (process, port).

    The process runs in its own session (stop it with ``os.killpg(proc.pid, SIGTERM)``) with
    its output as text on ``proc.stdout``.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*ife_command(), "ui", "--port", str(port), f"tracking.uri={uri}"],
        cwd=cwd,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc, port
