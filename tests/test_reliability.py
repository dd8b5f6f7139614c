"""Issue 12: checkpoints that exist, resumes that run no foreign code, runs that never lie.

Every case runs a real training process on a real ALE game (DER CNN, tiny budgets): a real
``kill -9``, real SIGTERM / SIGUSR1, a real crafted replay folder and snapshot, a real
non-finite run.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import TINY, ife_command, run_ife, subprocess_env, tracking_args
from mlflow.tracking import MlflowClient

from ife_platform.checkpoint import (
    CheckpointError,
    atomic_save,
    load_checkpoint,
    local_checkpoints,
    open_run_checkpoint,
)
from ife_platform.config import compose
from ife_platform.experiment import train
from ife_platform.runs import ProcessId, RunInterrupted, current_process, is_alive
from ife_platform.tracking import open_tracking_store

# DER CNN: the cheapest network, so the runs here are seconds.
FAST = ["model.extractor=der_cnn", "tracking.video=false", "tracking.eval_episodes=0"]


# IFE with a huge step and no clipping: non-finite gradients from the second update on.
NAN_PRONE = ["model.extractor=ife", "model.width=1", "optim.lr=1e6", "optim.grad_clip=null"]


def _base(workdir: Path, *extra: str) -> list[str]:
    return ["demo", *TINY, *FAST, *tracking_args(workdir), *extra]


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def _only_run(workdir: Path):
    client = _client(workdir)
    (run,) = client.search_runs([client.get_experiment_by_name("ife").experiment_id])
    return run


def _spawn(workdir: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [*ife_command(), "train", *args],
        cwd=workdir,
        env={**subprocess_env(), "TMPDIR": "/dev/shm"},  # another filesystem (tmpfs)
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run exited early: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError("timed out")


def _learning(workdir: Path) -> bool:
    """Whether the run in ``workdir`` has logged its first update."""
    if not (workdir / "mlflow.db").is_file():
        return False
    # under the store's creation lock: the run's process may be creating the schema now
    client = MlflowClient(open_tracking_store(run_uri(workdir)))
    exp = client.get_experiment_by_name("ife")
    runs = client.search_runs([exp.experiment_id]) if exp is not None else []
    return bool(runs) and "train/updates" in runs[0].data.metrics


# ------------------------------------------------------------------------------------------
# Atomic writes (pure)
# ------------------------------------------------------------------------------------------


def test_atomic_save_keeps_the_old_file_when_the_write_fails(tmp_path: Path) -> None:
    path = tmp_path / "a.ckpt"
    atomic_save({"v": torch.tensor([1.0])}, path)

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"v": Boom()}, path)
    assert torch.load(path, weights_only=True)["v"].item() == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]  # no temporary file left


# ------------------------------------------------------------------------------------------
# kill -9: at most the work since the last checkpoint is lost; the run is marked KILLED
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill9_during_checkpointing_leaves_valid_files_and_resume_logs_each_step_once(
    workdir: Path,
) -> None:
    # A checkpoint every 20 agent steps: the kill lands during or between saves.
    args = _base(
        workdir,
        "train.total_steps=1200",
        "trainer.steps_per_epoch=600",
        "trainer.checkpoint_every=20",
        "trainer.log_every_updates=5",
        "trainer.keep_checkpoints=3",
    )
    proc = _spawn(workdir, args)
    out = workdir / "out"
    _wait_for(lambda: len(list(out.glob("*/checkpoints/step-*.ckpt"))) >= 3, 300, proc)
    # a second process cannot resume a run that is training right now
    live_id = _only_run(workdir).info.run_id
    with pytest.raises(CheckpointError, match="being trained right now"):
        train(compose([*args, f"resume={live_id}"]))
    time.sleep(0.37)  # somewhere in the next saves
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    run = _only_run(workdir)
    assert run.info.status == "RUNNING"  # nobody could mark it
    folder = out / run.info.run_id / "checkpoints"
    # Every file under a checkpoint name loads (temporary files may be left, never read).
    for path in folder.glob("*.ckpt"):
        load_checkpoint(path)
    newest = local_checkpoints(folder)[0]
    restored = int(load_checkpoint(newest)["ife"]["counters"]["env_steps"])
    client = _client(workdir)
    logged = [m.step for m in client.get_metric_history(run.info.run_id, "train/env_steps")]
    # The dead process logged up to its last checkpoint, within one logging interval (5
    # updates): the kill may land between the checkpoint at step s and the next log. Mostly it
    # lands after that log, and the resume below must then not log those steps again.
    assert max(logged) >= restored - 5

    # Resume: the dead run is reaped (KILLED), reopened, and finishes.
    run_ife(workdir, ["train", *args, f"resume={run.info.run_id}"], timeout=600)
    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/env_steps")]
    assert len(steps) == len(set(steps))  # each step logged once, across both processes
    assert max(steps) > max(logged)
    assert load_checkpoint(folder / "last.ckpt")["ife"]["counters"]["env_steps"] == 1200


@pytest.mark.slow
def test_a_run_whose_process_died_is_set_to_killed_by_the_next_start(workdir: Path) -> None:
    proc = _spawn(workdir, _base(workdir, "train.total_steps=100000"))
    _wait_for(lambda: list((workdir / "out").glob("*/checkpoints")) != [], 120, proc)
    dead = _only_run(workdir).info.run_id
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert _client(workdir).get_run(dead).info.status == "RUNNING"
    owner = ProcessId.parse(_client(workdir).get_run(dead).data.tags["ife.process"])
    assert owner is not None and owner.pid == proc.pid and is_alive(owner) is False
    result = train(compose(_base(workdir, "train.total_steps=120")))
    client = _client(workdir)
    assert client.get_run(dead).info.status == "KILLED"
    assert "died" in client.get_run(dead).data.tags["ife.end"]
    assert client.get_run(result.run_id).info.status == "FINISHED"


def test_process_identity_tells_a_live_process_from_a_reused_pid() -> None:
    me = current_process()
    assert is_alive(me) is True
    assert is_alive(ProcessId(me.host, me.boot, me.pid, me.started + 1)) is False  # pid reused
    assert is_alive(ProcessId(me.host, "another-boot", me.pid, me.started)) is False
    assert is_alive(ProcessId("elsewhere", me.boot, me.pid, me.started)) is None
    assert ProcessId.parse(me.tag()) == me
    assert ProcessId.parse("garbage") is None


# ------------------------------------------------------------------------------------------
# Signals: checkpoint first, KILLED, exit 128 + N, resumable
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_preemption_signal_checkpoints_marks_killed_and_exits_non_zero(
    workdir: Path, sig: signal.Signals
) -> None:
    args = _base(workdir, "train.total_steps=100000", "trainer.steps_per_epoch=100000")
    proc = _spawn(workdir, args)
    _wait_for(lambda: _learning(workdir), 180, proc)  # well inside the first (only) epoch
    assert not list((workdir / "out").glob("*/checkpoints/*.ckpt"))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    run = _only_run(workdir)
    assert run.info.status == "KILLED"
    assert f"resume={run.info.run_id}" in err
    path, ckpt = open_run_checkpoint(run.info.run_id, run_uri(workdir), workdir / "out")
    steps = int(ckpt["ife"]["counters"]["env_steps"])
    assert 0 < steps < 100000
    artifacts = [a.path for a in _client(workdir).list_artifacts(run.info.run_id, "checkpoints")]
    assert "checkpoints/last.ckpt" in artifacts
    more = [f"train.total_steps={steps + 60}", f"resume={run.info.run_id}"]
    resumed = train(compose([*args, *more]))
    assert resumed.run_id == run.info.run_id and resumed.task.env_steps == steps + 60
    assert _client(workdir).get_run(run.info.run_id).info.status == "FINISHED"


class _SignalDuringWarmup(L.Callback):
    """Sends this process SIGTERM once the stream has collected ``steps`` agent steps."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.seen: tuple[int, int] | None = None  # (env_steps, updates) when it fired

    def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        def fire() -> None:
            end = time.monotonic() + 120
            while pl_module.env_steps < self.steps and time.monotonic() < end:
                time.sleep(0.01)
            self.seen = (int(pl_module.env_steps), int(pl_module.updates))
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=fire, daemon=True).start()


def test_sigterm_during_the_warmup_stops_promptly_and_checkpoints(workdir: Path) -> None:
    # Lightning looks at its SIGTERM flag only at batch ends, and the warm-up yields no batch:
    # before the stream checked the flag itself, this run collected on to learning_starts and
    # stopped after its first update.
    args = _base(
        workdir,
        "agent.learning_starts=2000",
        "train.total_steps=4000",
        "trainer.steps_per_epoch=4000",
    )
    watch = _SignalDuringWarmup(steps=60)
    with pytest.raises(RunInterrupted) as stop:
        train(compose(args), callbacks=[watch])
    assert stop.value.exit_code == 128 + signal.SIGTERM
    assert watch.seen is not None and watch.seen[0] >= 60 and watch.seen[1] == 0
    run = _only_run(workdir)
    assert run.info.status == "KILLED"
    _, ckpt = open_run_checkpoint(run.info.run_id, run_uri(workdir), workdir / "out")
    counters = ckpt["ife"]["counters"]
    steps = int(counters["env_steps"])
    # stopped within a few collected steps of the signal, long before learning_starts
    assert watch.seen[0] <= steps < watch.seen[0] + 50
    assert int(counters["updates"]) == 0
    more = [f"train.total_steps={steps + 40}", f"resume={run.info.run_id}"]
    resumed = train(compose([*args, *more]))
    assert resumed.task.env_steps == steps + 40 and resumed.task.updates == 0
    assert _client(workdir).get_run(run.info.run_id).info.status == "FINISHED"


class _SignalDuringEvaluation(L.Callback):
    """Sends this process SIGTERM a moment after a periodic evaluation has begun."""

    def __init__(self) -> None:
        self.fired_at: int | None = None  # env_steps when it fired

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        def fire() -> None:
            end = time.monotonic() + 180
            # the evaluation puts the online network in eval mode; training keeps it in train
            while pl_module.online.training and time.monotonic() < end:
                time.sleep(0.005)
            time.sleep(0.2)  # well inside the evaluation's 1,500 steps
            self.fired_at = int(pl_module.env_steps)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=fire, daemon=True).start()


def test_sigterm_during_a_periodic_evaluation_stops_it_and_the_resumed_run_replays_it(
    workdir: Path,
) -> None:
    # Before, the evaluation played its games to the end (up to 27,000 agent steps each in
    # the protocol) after the signal, logged them, and only then stopped.
    evaluating = [
        "tracking.eval_every=120",  # one point: 120 (of 240)
        "tracking.eval_every_episodes=1",
        "tracking.eval_max_steps=1500",  # an untrained Breakout agent plays to this cap
        "trainer.checkpoint_every=120",  # a checkpoint at the same batch end as the point
    ]
    stopped, straight = workdir / "stopped", workdir / "straight"
    args = _base(stopped, *evaluating)
    watch = _SignalDuringEvaluation()
    with pytest.raises(RunInterrupted) as stop:
        train(compose(args), callbacks=[watch])
    assert stop.value.exit_code == 128 + signal.SIGTERM and watch.fired_at is not None
    run = _only_run(stopped)
    assert run.info.status == "KILLED"
    client = _client(stopped)
    assert client.get_metric_history(run.info.run_id, "eval/return_mean") == []  # abandoned
    _, ckpt = open_run_checkpoint(run.info.run_id, run_uri(stopped), stopped / "out")
    steps = int(ckpt["ife"]["counters"]["env_steps"])
    assert 120 <= steps == watch.fired_at < 240
    (state,) = [v for k, v in ckpt["callbacks"].items() if "PeriodicEvaluation" in k]
    assert state == {"unfinished": [120], "unfinished_at": steps}
    resumed = train(compose([*args, f"resume={run.info.run_id}"]))
    assert resumed.task.env_steps == 240
    # The resumed run played the abandoned evaluation first, from the checkpoint's weights at
    # its agent step: what an uninterrupted run of the same seed logs.
    reference = train(compose(_base(straight, *evaluating)))
    for key in ("eval/return_mean", "eval/length_mean"):
        got = [(m.step, m.value) for m in client.get_metric_history(resumed.run_id, key)]
        want = [
            (m.step, m.value) for m in _client(straight).get_metric_history(reference.run_id, key)
        ]
        assert got == want and len(got) == 1 and got[0][0] == steps, (key, got, want)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def run_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


# ------------------------------------------------------------------------------------------
# Resume picks the newest valid checkpoint: local, else the MLflow copy
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_skips_a_truncated_checkpoint_and_falls_back_to_the_artifact(
    workdir: Path,
) -> None:
    result = train(compose(_base(workdir, "train.total_steps=360")))
    folder = result.checkpoint_dir
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["last.ckpt", "step-000000240.ckpt", "step-000000360.ckpt"]
    # 1. The local checkpoints are gone (outputs/ deleted or moved): the MLflow artifact is
    #    read. In a local store it is the same file on disk (a hard link), still there.
    away = folder.with_name("moved")
    folder.rename(away)
    path, ckpt = open_run_checkpoint(result.run_id, run_uri(workdir), workdir / "out")
    assert "downloaded" in str(path) and ckpt["ife"]["counters"]["env_steps"] == 360
    away.rename(folder)
    # 2. The newest is truncated in place: last.ckpt and the artifact are that same file (one
    #    copy on disk), so the next older step file is the one that loads.
    newest = folder / "step-000000360.ckpt"
    assert newest.stat().st_nlink == 3  # step file, last.ckpt, the artifact
    os.truncate(newest, newest.stat().st_size // 3)
    path, ckpt = open_run_checkpoint(result.run_id, run_uri(workdir), workdir / "out")
    assert path.name == "step-000000240.ckpt" and ckpt["ife"]["counters"]["env_steps"] == 240
    for p in folder.iterdir():
        p.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="has no valid checkpoint"):
        open_run_checkpoint(result.run_id, run_uri(workdir), workdir / "out")


# ------------------------------------------------------------------------------------------
# Resume never unpickles: crafted replay folder and snapshot
# ------------------------------------------------------------------------------------------


class _Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_resume_runs_no_code_from_a_crafted_replay_folder_or_snapshot(workdir: Path) -> None:
    args = _base(workdir, "replay.save_buffer=true", "seed=3")
    result = train(compose(args))
    folder, marker = result.checkpoint_dir, workdir / "pwned"
    assert [p.name for p in folder.glob("replay-*")] == ["replay-rank0-step-000000240.pt"]
    original = torch.load(folder / "last.ckpt", weights_only=True)
    assert original["ife"]["replay_step"] == 240
    # 1. The checkpoint names a TorchRL replay folder whose prefetch.pkl runs code.
    crafted = workdir / "crafted_replay"
    crafted.mkdir()
    (crafted / "prefetch.pkl").write_bytes(pickle.dumps(_Touch(marker)))
    crafted_ckpt = {**original, "ife": {**original["ife"], "replay_dir": str(crafted)}}
    crafted_ckpt["ife"].pop("replay_step")
    atomic_save(crafted_ckpt, workdir / "crafted.ckpt")
    train(compose([*args, "train.total_steps=360", f"resume={workdir / 'crafted.ckpt'}"]))
    assert not marker.exists()
    # 2. The run's own snapshot replaced by a pickle that runs code: refused, nothing runs.
    with open(folder / "replay-rank0-step-000000240.pt", "wb") as f:
        pickle.dump({"version": 1, "len": _Touch(marker)}, f)
    atomic_save(original, workdir / "at240.ckpt")  # names replay_step=240, nothing else
    with pytest.raises(CheckpointError, match="replay snapshot"):
        train(compose([*args, "train.total_steps=480", f"resume={workdir / 'at240.ckpt'}"]))
    assert not marker.exists()
    # the finished run stays FINISHED: the failed resume took no step
    assert _client(workdir).get_run(result.run_id).info.status == "FINISHED"


# ------------------------------------------------------------------------------------------
# Non-finite updates
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_failed_with_a_finite_checkpoint(workdir: Path) -> None:
    # (the reproduction: IFE, a huge step and no clipping)
    args = _base(workdir, *NAN_PRONE, "train.total_steps=600")
    proc = run_ife(workdir, ["train", *args], timeout=600, expect=1)
    assert "non-finite" in proc.stderr and "agent step" in proc.stderr
    run = _only_run(workdir)
    assert run.info.status == "FAILED"
    assert run.data.tags["ife.nonfinite"]
    _, ckpt = open_run_checkpoint(run.info.run_id, run_uri(workdir), workdir / "out")
    tensors = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    assert tensors and all(torch.isfinite(v).all() for v in tensors)
    assert "eval/return_mean" not in run.data.metrics  # no score reported for a broken agent


@pytest.mark.slow
def test_non_finite_updates_are_dropped_with_skip_batch(workdir: Path) -> None:
    args = _base(workdir, *NAN_PRONE, "train.nan_policy=skip_batch", "trainer.log_every_updates=5")
    result = train(compose(args))
    task = result.task
    assert task.skipped > 0 and task.updates + task.skipped == 120
    assert all(torch.isfinite(p).all() for p in task.online.parameters())
    run = _client(workdir).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["train/skipped_updates"] > 0


# ------------------------------------------------------------------------------------------
# A failed resume keeps the run's status; failures before fit are marked FAILED
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_failed_resume_keeps_a_finished_run_finished(workdir: Path) -> None:
    args = ["demo", *TINY, "model.extractor=ife", "model.width=2", *FAST[1:]]
    args += tracking_args(workdir)
    result = train(compose(args))
    with pytest.raises(RuntimeError):  # the weights do not fit a width-1 network
        train(compose([*args, "model.width=1", f"resume={result.run_id}"]))
    run = _client(workdir).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert "size mismatch" in run.data.tags["ife.failed_resume"]


def test_failure_between_run_creation_and_fit_marks_the_run_failed(workdir: Path) -> None:
    def broken_setup(task) -> None:
        raise ValueError("broken setup")

    with pytest.raises(ValueError, match="broken setup"):
        train(compose(_base(workdir)), setup=broken_setup)
    run = _only_run(workdir)
    assert run.info.status == "FAILED"
    assert "broken setup" in run.data.tags["ife.end"]


def test_run_interrupted_exit_code_is_128_plus_the_signal() -> None:
    assert RunInterrupted("0" * 32, signal.SIGTERM).exit_code == 143
    assert RunInterrupted("0" * 32, signal.SIGUSR1).exit_code == 128 + signal.SIGUSR1
