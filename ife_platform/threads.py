"""CPU threads of a training process: its share of the cores it may use.

Two ``ife train`` processes on a 2-core machine each ran torch's default thread pool (one
thread per core), whose OpenMP workers busy-wait between parallel regions: each process's
spinning workers took the cores the other's emulators and forwards needed, and a DER-CNN run
started beside two others made 0.5-0.65 agent steps/s instead of about 40 alone (issue 13).
``OMP_WAIT_POLICY=PASSIVE`` stops the spinning but slows a lone learner by 40 % (DER CNN 33 ->
19 updates/s, docs/benchmarks.md), so the fix is the thread count instead: every training
process announces itself (:class:`MachineShare`) and runs ``usable cores // live training
processes`` threads (at least one), re-checked while it trains, or ``trainer.threads``.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from ife_platform.runs import start_ticks


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """CPUs the cgroup quota allows (``cpu.max`` v2, ``cpu.cfs_quota_us`` v1), None if unlimited.

    Args:
        root: the cgroup filesystem (a folder holding ``cpu.max``, or ``cpu/`` for v1).
    """
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup quota (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def training_threads(requested: int, ranks_on_host: int, cores: int | None = None) -> int:
    """Torch threads for one training rank.

    Args:
        requested: ``trainer.threads`` (0: automatic).
        ranks_on_host: training processes sharing this machine (DDP ranks, other runs).
        cores: the usable cores (default :func:`usable_cores`).

    Returns:
        ``requested`` if set, else the usable cores shared evenly by the ranks (at least 1).
    """
    if requested > 0:
        return requested
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(1, ranks_on_host))


# ------------------------------------------------------------------------------------------
# Sharing a machine between runs
# ------------------------------------------------------------------------------------------


def registry_dir() -> Path:
    """Where the training processes of this machine announce themselves (one file each)."""
    return Path(os.environ.get("IFE_THREADS_DIR", Path(tempfile.gettempdir()) / "ife-threads"))


class MachineShare:
    """Announces this training process and counts the live ones, to share the cores evenly.

    Each process writes ``<registry>/<pid>`` holding its start time; a file whose process is
    gone (or whose pid was reused) is ignored and removed. The torch threads of a process are
    ``max(1, usable cores // live training processes)`` unless ``trainer.threads`` fixes them.
    Measured in docs/benchmarks.md: two processes of two threads on two cores collapse to about
    0.2x of one alone each (OpenMP workers spin against each other); with one thread each they
    run at 0.82-0.91x (DER CNN) and 0.57x (IFE).

    Args:
        requested: ``trainer.threads`` (0: automatic).
        cores: usable cores (default :func:`usable_cores`).
        folder: the registry (default :func:`registry_dir`).
    """

    def __init__(self, requested: int = 0, cores: int | None = None, folder: Path | None = None):
        self.requested = requested
        self.cores = usable_cores() if cores is None else cores
        self.folder = registry_dir() if folder is None else folder
        self.pid = os.getpid()
        self._file: Path | None = None

    def join(self) -> None:
        """Announce this process."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = self.folder / str(self.pid)
        self._file.write_text(str(start_ticks(self.pid)))

    def leave(self) -> None:
        """Withdraw the announcement."""
        if self._file is not None:
            self._file.unlink(missing_ok=True)
            self._file = None

    def live(self) -> int:
        """Training processes announced and still running (this one included, if joined)."""
        count = 0
        for entry in self.folder.glob("[0-9]*"):
            started = start_ticks(int(entry.name))
            try:
                announced = entry.read_text()
            except OSError:
                continue
            if started is not None and str(started) == announced:
                count += 1
            else:
                entry.unlink(missing_ok=True)  # a process that died without leaving
        return max(count, 1)

    def threads(self) -> int:
        """Torch threads for this process now.

        ``trainer.threads`` if set, else ``OMP_NUM_THREADS`` if the user set it, else the
        usable cores divided by the live training processes (at least 1).
        """
        requested = self.requested
        fixed = os.environ.get("OMP_NUM_THREADS", "")
        if requested <= 0 and fixed.isdigit():
            requested = int(fixed)
        if requested > 0:
            return requested
        return training_threads(0, self.live(), self.cores)
