"""An actor process that dies stops the learner within seconds, with its error (issue 12, item 8).

Real processes throughout: plain spawned processes for the supervisor, the real A3C actor
processes for the task, and a real ``ife train`` whose actor is killed with SIGKILL. Every
wait is bounded (thread joins, subprocess timeouts), so a regression fails instead of hanging.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ife_platform.a3c.supervision import ActorError, ActorSupervisor, install_error_report

# -- targets of spawned processes (module level: spawn pickles them by name) -----------------


def _raise_after(error_dir: str, delay: float) -> None:
    install_error_report(error_dir)
    time.sleep(delay)
    raise ValueError("injected actor failure")


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _start(target: Any, *args: Any) -> Any:
    proc = mp.get_context("spawn").Process(target=target, args=args)
    proc.start()
    return proc


def _bounded(fn: Any, limit: float) -> tuple[BaseException | None, float]:
    """Run ``fn`` in a thread; (what it raised, seconds); fails the test after ``limit`` s."""
    box: dict[str, BaseException] = {}

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e

    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still waiting after {limit} s: the learner would hang"
    return box.get("error"), time.monotonic() - start


# -- the supervisor with plain processes ------------------------------------------------------


def test_an_actor_exception_stops_a_blocked_wait_with_its_traceback(tmp_path: Path) -> None:
    procs = [_start(_sleep, 60.0), _start(_raise_after, str(tmp_path), 0.5)]
    sup = ActorSupervisor(procs, tmp_path)
    try:
        never = threading.Event()  # a wait no actor will ever answer (TorchRL's ack wait)
        error, seconds = _bounded(lambda: sup.call("waiting for rollouts", never.wait), 30)
        assert isinstance(error, ActorError), error
        assert seconds < 15
        text = str(error)
        assert "1 of 2 actor processes died while waiting for rollouts" in text
        assert f"actor 1 (pid {procs[1].pid}) exited with code 1" in text
        assert "ValueError: injected actor failure" in text  # the actor's own traceback
        assert "actor 0" not in text
    finally:
        sup.stop()
    assert not any(p.is_alive() for p in procs)


def test_a_killed_actor_is_named_with_its_signal(tmp_path: Path) -> None:
    procs = [_start(_sleep, 60.0), _start(_sleep, 60.0)]
    sup = ActorSupervisor(procs, tmp_path)
    try:
        assert sup.call("seeding the actors", lambda x: x + 1, 41) == 42  # alive: passes
        os.kill(procs[0].pid, signal.SIGKILL)
        error, seconds = _bounded(lambda: sup.call("pushing weights", threading.Event().wait), 30)
        assert isinstance(error, ActorError) and seconds < 15
        assert f"actor 0 (pid {procs[0].pid}) was killed by SIGKILL (exit code -9)." in str(error)
        with pytest.raises(ActorError):  # and every later wait fails at once
            sup.check()
    finally:
        sup.stop()


def test_stalls_and_the_learners_own_errors(tmp_path: Path) -> None:
    procs = [_start(_sleep, 60.0)]
    sup = ActorSupervisor(procs, tmp_path, stall_timeout_s=0.5, grace_s=0.2)
    try:
        error, _ = _bounded(lambda: sup.call("waiting for rollouts", threading.Event().wait), 30)
        assert isinstance(error, ActorError) and "although all are alive" in str(error)

        def learner_bug() -> None:
            raise KeyError("not the actors' fault")

        with pytest.raises(KeyError):  # actors alive: the original error, not an ActorError
            sup.call("pushing weights", learner_bug)
    finally:
        sup.stop()
    assert not procs[0].is_alive()


# -- the real A3C actors ----------------------------------------------------------------------


def _failing_env(cfg_env: dict[str, Any], seed: int, error_dir: str | None = None) -> Any:
    """An actor env that raises on its 5th step (in the actor process)."""
    from ife_platform.envs import AtariVecEnv

    class FailingEnv(AtariVecEnv):
        steps = 0

        def _step_and_maybe_reset(self, tensordict: Any) -> Any:
            FailingEnv.steps += 1
            if FailingEnv.steps >= 5:
                raise RuntimeError("injected env failure in an actor")
            return super()._step_and_maybe_reset(tensordict)

    if error_dir is not None:
        install_error_report(error_dir)
    return FailingEnv(cfg_env["game"], cfg_env["num_envs"], seed=seed, frame_stack=1)


def test_a3c_learner_stops_with_the_error_of_a_failing_actor() -> None:
    from ife_platform.tasks.a3c import ActorCriticTask, _Rollouts

    from ife_platform.config import compose

    class FailingTask(ActorCriticTask):
        actor_env_factory = staticmethod(_failing_env)

    cfg = compose(["agent=a3c_lstm", "model.width=1", "env.num_envs=2", "agent.actors=2"])
    task = FailingTask(cfg)
    task._collector = task.build_collector()
    procs = list(task._collector.procs)
    try:
        task.push_weights()

        def learn() -> None:
            for _ in _Rollouts(task):  # as the training loop: rollouts, then weight pushes
                task.updates += 1
                task.push_weights()

        error, seconds = _bounded(learn, 60)
        assert isinstance(error, ActorError), error
        assert seconds < 30
        text = str(error)
        assert "exited with code 1" in text
        assert "RuntimeError: injected env failure in an actor" in text
    finally:
        error, seconds = _bounded(task.shutdown_collector, 30)
        assert error is None and seconds < 15
    assert not any(p.is_alive() for p in procs if not p._closed)


# -- end to end: `ife train`, one actor killed with SIGKILL -------------------------------------


def _children(pid: int) -> list[int]:
    """Pids of the direct children of ``pid`` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _actor_pids(pid: int) -> list[int]:
    pids = []
    for child in _children(pid):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:  # the actor processes, not multiprocessing's resource tracker
            pids.append(child)
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_ife_train_fails_within_seconds_when_an_actor_is_killed(workdir: Path) -> None:
    from conftest import TINY_ACTOR_CRITIC, ife_command, subprocess_env, tracking_args
    from mlflow.tracking import MlflowClient

    args = [
        "train",
        "agent=a3c_lstm",
        "env.game=pong",
        "model.width=1",
        *TINY_ACTOR_CRITIC,
        *tracking_args(workdir),
        "train.total_steps=10000000",  # it never finishes by itself
    ]
    proc = subprocess.Popen(
        [*ife_command(), *args],
        cwd=workdir,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
        deadline = time.monotonic() + 240
        learning = False
        while time.monotonic() < deadline and proc.poll() is None and not learning:
            time.sleep(1.0)
            try:
                exp = client.get_experiment_by_name("ife")
                runs = client.search_runs([exp.experiment_id]) if exp else []
            except Exception:  # noqa: BLE001 - the store is being created
                continue
            learning = bool(runs) and "train/loss" in runs[0].data.metrics
        assert learning, "the run did not start learning"
        actors = _actor_pids(proc.pid)
        assert len(actors) == 2, actors
        os.kill(actors[1], signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = proc.communicate(timeout=60)
        seconds = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    tail = stderr[-3000:]
    assert proc.returncode != 0, tail
    assert seconds < 30, (seconds, tail)  # measured: 4.4 s, shutdown and MLflow included
    assert "ActorError" in stderr, tail
    assert f"(pid {actors[1]}) was killed by SIGKILL (exit code -9)" in stderr
    (run,) = client.search_runs([client.get_experiment_by_name("ife").experiment_id])
    assert run.info.status == "FAILED"
    time.sleep(0.5)
    assert not [p for p in actors if Path(f"/proc/{p}").exists()], "actors left running"
