"""Issue 13: a training process runs its share of the cores (affinity, cgroup quota, peers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ife_platform.threads import MachineShare, cgroup_cpu_limit, training_threads, usable_cores


def test_cgroup_quota_v2_and_v1(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 0.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert cgroup_cpu_limit(v1) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_training_threads_by_hand() -> None:
    assert training_threads(3, ranks_on_host=2, cores=2) == 3  # trainer.threads wins
    assert training_threads(0, ranks_on_host=1, cores=2) == 2
    assert training_threads(0, ranks_on_host=2, cores=2) == 1
    assert training_threads(0, ranks_on_host=3, cores=2) == 1  # never 0
    assert training_threads(0, ranks_on_host=2, cores=16) == 8
    assert 1 <= usable_cores()


_PEER = """
import sys, time
from pathlib import Path
from ife_platform.threads import MachineShare
MachineShare(folder=Path(sys.argv[1])).join()
print("joined", flush=True)
time.sleep(120)
"""


def test_machine_share_counts_live_training_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    me = MachineShare(cores=4, folder=tmp_path)
    me.join()
    assert me.live() == 1 and me.threads() == 4
    peer = subprocess.Popen(
        [sys.executable, "-c", _PEER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert peer.stdout.readline().strip() == "joined"
        assert me.live() == 2 and me.threads() == 2
        assert MachineShare(requested=3, cores=4, folder=tmp_path).threads() == 3
        peer.send_signal(signal.SIGKILL)  # dies without leaving: its file is stale
        peer.wait(10)
        assert me.live() == 1 and me.threads() == 4
        assert not (tmp_path / str(peer.pid)).exists()  # the stale entry was removed
    finally:
        peer.kill()
    (tmp_path / "999999999").write_text("123")  # no such pid
    assert me.live() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice wins over the share
    assert me.threads() == 1
    me.leave()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_training_run_takes_its_share_beside_another(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import TINY, tracking_args
    from ife_platform.callbacks.threads import ThreadShare

    from ife_platform.config import compose
    from ife_platform.experiment import train

    registry = workdir / "registry"
    monkeypatch.setenv("IFE_THREADS_DIR", str(registry))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    peer = subprocess.Popen(
        [sys.executable, "-c", _PEER, str(registry)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert peer.stdout.readline().strip() == "joined"
        args = ["demo", *TINY, "model.extractor=der_cnn", *tracking_args(workdir)]
        result = train(compose([*args, "tracking.video=false", "tracking.eval_episodes=0"]))
    finally:
        peer.kill()
    (share,) = [c for c in result.trainer.callbacks if isinstance(c, ThreadShare)]
    assert share.history[0] == max(1, usable_cores() // 2)
    assert not (registry / str(os.getpid())).exists()  # left at fit end
