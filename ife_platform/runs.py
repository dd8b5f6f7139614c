"""The life of a training run: who owns it, how it ends, and what its exit status says.

* Every run records the process that owns it (``ife.process`` tag: host, boot id, pid and the
  pid's start time). A run left ``RUNNING`` by a process that no longer exists (``kill -9``,
  a crashed node) is set to ``KILLED`` the next time a run starts on the same host
  (:func:`reap_dead_runs`); runs owned by other hosts are left alone.
* A run stopped by a signal (SIGTERM from a scheduler, SIGUSR1 before a preemption, SIGINT)
  saves a checkpoint, is marked ``KILLED`` and raises :class:`RunInterrupted`; the CLI exits
  with ``128 + signal`` so a scheduler knows it did not finish and can requeue it with
  ``resume=RUN_ID`` (:class:`SignalWatch`).
* A non-finite loss, gradient or priority raises :class:`NonFiniteError` (``train.nan_policy``).
* A resumed run whose metric history already reaches past the restored step logs nothing at
  those steps again (:func:`logged_through`, used by
  :class:`~ife_platform.callbacks.resumed_logger.ResumedMLFlowLogger`): each metric keeps one
  value per step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: MLflow tag naming the process that owns a RUNNING run.
PROCESS_TAG = "ife.process"


class NonFiniteError(RuntimeError):
    """A loss term, gradient or priority that is NaN or infinite (``train.nan_policy=stop``).

    Attributes:
        step: the agent step (of this rank) at which it was found.
        update: the update that produced it.
        terms: the names of the non-finite quantities.
    """

    def __init__(self, step: int, update: int, terms: list[str]) -> None:
        self.step, self.update, self.terms = step, update, terms
        super().__init__(
            f"non-finite {', '.join(terms)} at agent step {step} (update {update}); the update "
            "was not applied and the last finite state is checkpointed. Lower optim.lr, set "
            "optim.grad_clip, or train.nan_policy=skip_batch to drop such updates."
        )


class SignalStop(BaseException):
    """Raised by :class:`SignalWatch` for a stop signal that arrives outside ``trainer.fit``."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class RunInterrupted(RuntimeError):
    """A run stopped by a signal before its budget; it checkpointed and can be resumed.

    Attributes:
        run_id: the MLflow run (``resume=RUN_ID`` continues it).
        signum: the signal that stopped it.
    """

    def __init__(self, run_id: str, signum: int) -> None:
        self.run_id, self.signum = run_id, signum
        name = signal.Signals(signum).name
        super().__init__(
            f"run {run_id} stopped by {name} before its budget; its checkpoint is saved: "
            f"continue with resume={run_id}"
        )

    @property
    def exit_code(self) -> int:
        """The shell convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


# ------------------------------------------------------------------------------------------
# Process identity
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessId:
    """A process, told apart from a later one that reuses its pid (start time, boot id)."""

    host: str
    boot: str
    pid: int
    started: int  # start time in clock ticks since boot (/proc/<pid>/stat field 22)

    def tag(self) -> str:
        """The ``ife.process`` tag value."""
        return f"{self.host}|{self.boot}|{self.pid}|{self.started}"

    @classmethod
    def parse(cls, text: str) -> ProcessId | None:
        """The identity in a tag value (None for a malformed one)."""
        parts = text.split("|")
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]))


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` (clock ticks since boot), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return int(stat.rsplit(")", 1)[1].split()[19])


def current_process() -> ProcessId:
    """This process's identity."""
    pid = os.getpid()
    return ProcessId(socket.gethostname(), _boot_id(), pid, start_ticks(pid) or 0)


def is_alive(owner: ProcessId) -> bool | None:
    """Whether the process still runs: True / False on this host, None for another host."""
    here = current_process()
    if owner.host != here.host:
        return None
    if owner.boot != here.boot:
        return False  # the machine rebooted since
    return start_ticks(owner.pid) == owner.started


def reap_dead_runs(client: Any) -> list[str]:
    """Set RUNNING runs whose owning process on this host is gone to KILLED.

    Runs of other hosts, and runs without an ``ife.process`` tag, are left as they are.
    Returns the ids of the runs it changed.
    """
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    if not exp_ids:
        return []
    reaped = []
    for run in client.search_runs(exp_ids, filter_string="attributes.status = 'RUNNING'"):
        owner = ProcessId.parse(run.data.tags.get(PROCESS_TAG, ""))
        if owner is None or is_alive(owner) is not False:
            continue
        client.set_tag(run.info.run_id, "ife.end", f"process {owner.pid} died (found later)")
        client.set_terminated(run.info.run_id, status="KILLED")
        reaped.append(run.info.run_id)
        log.warning("run %s was RUNNING but its process is gone: set to KILLED", run.info.run_id)
    return reaped


# ------------------------------------------------------------------------------------------
# Signals
# ------------------------------------------------------------------------------------------


class SignalWatch:
    """Records the first stop signal a training process gets and routes it to Lightning.

    Lightning stops at the next batch end on SIGTERM (``trainer.received_sigterm``); SIGUSR1
    (the warning a scheduler sends before preempting) is turned into a SIGTERM to this
    process so both take that path. SIGINT keeps Python's behaviour (KeyboardInterrupt).
    The previous handlers are restored on exit. Only the main thread can install handlers;
    elsewhere this does nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        if signum == signal.SIGUSR1:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if signum == signal.SIGTERM and signal.getsignal(signal.SIGTERM) == self._handler:
            # Lightning's handler is not installed (before or after fitting): stop here.
            raise SignalStop(signum)
        previous = self._previous.get(signum)
        if callable(previous):
            previous(signum, frame)
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[SignalWatch]:
        """Install the handlers for the duration of the block."""
        try:
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handler)
        except ValueError:  # not the main thread
            self._previous.clear()
        try:
            yield self
        finally:
            for number, handler in self._previous.items():
                signal.signal(number, handler)
            self._previous.clear()


# ------------------------------------------------------------------------------------------
# Metrics of resumed runs
# ------------------------------------------------------------------------------------------


def logged_through(client: Any, run_id: str) -> dict[str, int]:
    """The highest step each metric of a run has been logged at."""
    run = client.get_run(run_id)
    return {
        key: max((m.step for m in client.get_metric_history(run_id, key)), default=-1)
        for key in run.data.metrics
    }
