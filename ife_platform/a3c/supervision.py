"""Actor processes that fail stop the learner, with their error, within seconds.

An actor process can die from an exception (its traceback goes to its stderr and it exits
with code 1) or from a signal (``kill -9``, the OOM killer). TorchRL's multi-process collector
notices a dead worker only in some of its waits: the weight push waits for an acknowledgement
from every worker with no timeout, so a dead actor used to make the learner wait forever,
and the surviving actors (non-daemonic processes) kept the interpreter from exiting even after
an error. Here:

- :func:`install_error_report` (called in each actor process, by its env factory) writes the
  traceback of the exception that ends the process to ``<error_dir>/<pid>.txt``;
- :class:`ActorSupervisor` runs every learner-side wait on the actors
  (:meth:`~ActorSupervisor.call`) in a helper thread and checks the actors' liveness every
  ``poll_s`` seconds meanwhile; a dead actor turns into an :class:`ActorError` that names the
  actor, its pid and exit code (or signal) and carries its traceback when it wrote one;
- :meth:`ActorSupervisor.stop` terminates, then kills, whatever actor is left, and also runs
  at interpreter exit, before :mod:`multiprocessing` joins its children.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["ActorError", "ActorSupervisor", "install_error_report"]

T = TypeVar("T")

_REPORT_INSTALLED: set[str] = set()


class ActorError(RuntimeError):
    """An actor process died (or stopped answering); the learner stops with this error."""


def install_error_report(error_dir: str | os.PathLike[str]) -> None:
    """In an actor process: write the traceback that ends the process to ``<error_dir>/<pid>.txt``.

    Registers a :mod:`multiprocessing` finalizer, which runs while the process exits, also
    when the process's target raised: it then sees the exception (``sys.exc_info()`` inside the
    ``finally`` of ``Process._bootstrap``). Idempotent per process and directory.

    Args:
        error_dir: a directory the learner reads (it exists).
    """
    from multiprocessing import util

    key = f"{os.getpid()}:{error_dir}"
    if key in _REPORT_INSTALLED:
        return
    _REPORT_INSTALLED.add(key)
    util.Finalize(None, _write_error_report, args=(str(error_dir),), exitpriority=100)


def _write_error_report(error_dir: str) -> None:
    etype, value, tb = sys.exc_info()
    if value is None:
        return
    path = Path(error_dir) / f"{os.getpid()}.txt"
    try:
        if not path.exists():  # the first error is the cause
            path.write_text("".join(traceback.format_exception(etype, value, tb)))
    except OSError:
        pass  # the learner still reports the exit code


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name} (exit code {code})"
    return f"exited with code {code}"


class ActorSupervisor:
    """Liveness checks and bounded waits around a set of actor processes.

    Args:
        procs: the actor processes (``multiprocessing.Process``), actor ``i`` at index ``i``.
        error_dir: where the actors' :func:`install_error_report` writes.
        poll_s: how often a wait checks the actors.
        stall_timeout_s: a wait with every actor alive fails after this long.
        grace_s: after an error from the collector, how long to wait for a dying actor's
            exit code before deciding that no actor died.
    """

    def __init__(
        self,
        procs: Sequence[Any],
        error_dir: str | os.PathLike[str],
        *,
        poll_s: float = 0.2,
        stall_timeout_s: float = 600.0,
        grace_s: float = 3.0,
    ) -> None:
        self.procs = list(procs)
        self.pids = [p.pid for p in self.procs]
        self.error_dir = Path(error_dir)
        self.poll_s = poll_s
        self.stall_timeout_s = stall_timeout_s
        self.grace_s = grace_s
        self._exit_codes: dict[int, int] = {}  # seen before anyone closed the process
        _register_for_exit(self)

    # -- state -------------------------------------------------------------------------------
    def exit_code(self, i: int) -> int | None:
        """Actor ``i``'s exit code (None while it runs); remembered once seen."""
        if i in self._exit_codes:
            return self._exit_codes[i]
        try:
            code = self.procs[i].exitcode
        except ValueError:  # closed by the collector after it stopped the process
            return None
        if code is not None:
            self._exit_codes[i] = code
        return code

    def dead(self) -> list[int]:
        """Indices of the actors that have exited (in any way)."""
        return [i for i in range(len(self.procs)) if self.exit_code(i) is not None]

    def error_text(self, i: int) -> str | None:
        """The traceback actor ``i`` wrote before exiting, if it wrote one."""
        path = self.error_dir / f"{self.pids[i]}.txt"
        try:
            return path.read_text().strip() or None
        except OSError:
            return None

    def describe(self, dead: Sequence[int]) -> str:
        """One paragraph per dead actor: index, pid, exit code or signal, its traceback."""
        parts = []
        for i in dead:
            line = f"actor {i} (pid {self.pids[i]}) {_describe_exit(self.exit_code(i))}"
            text = self.error_text(i)
            parts.append(f"{line}; its error:\n{text}" if text else f"{line}.")
        return "\n".join(parts)

    def failure(self, what: str, dead: Sequence[int]) -> ActorError:
        """The error the learner stops with after ``dead`` actors exited during ``what``."""
        return ActorError(
            f"{len(dead)} of {len(self.procs)} actor processes died while {what}; "
            f"the learner stops.\n{self.describe(dead)}"
        )

    def check(self, what: str = "training") -> None:
        """Raise :class:`ActorError` if any actor has exited."""
        dead = self.dead()
        if dead:
            raise self.failure(what, dead)

    # -- waits -------------------------------------------------------------------------------
    def call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, but stopped by an actor that dies meanwhile or by a stall.

        ``fn`` runs in a daemon thread while this thread checks the actors every ``poll_s``
        seconds: if one has exited, :class:`ActorError` is raised here (the helper thread may
        stay blocked on the dead actor; it holds nothing the learner needs). If ``fn`` raises
        and an actor has died (waiting up to ``grace_s`` for its exit code), the error is an
        :class:`ActorError` from ``fn``'s exception; otherwise ``fn``'s exception as is.

        Args:
            what: what the learner is doing, for the message ("collecting rollouts").
            fn: the blocking call on the collector.
            *args: its arguments.

        Returns:
            What ``fn`` returns.
        """
        self.check(what)
        box: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["value"] = fn(*args)
            except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
                box["error"] = e
            finally:
                done.set()

        helper = threading.Thread(target=run, name=f"ife-actors: {what}", daemon=True)
        helper.start()
        start = time.monotonic()
        while not done.wait(self.poll_s):
            self.check(what)
            if time.monotonic() - start > self.stall_timeout_s:
                raise ActorError(
                    f"no answer from the {len(self.procs)} actor processes in "
                    f"{self.stall_timeout_s:.0f} s while {what}, although all are alive; "
                    "the learner stops."
                )
        if "error" not in box:
            return box["value"]
        error = box["error"]
        deadline = time.monotonic() + self.grace_s
        while not (dead := self.dead()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if dead:
            raise self.failure(what, dead) from error
        raise error

    # -- cleanup -----------------------------------------------------------------------------
    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate, then kill, the actors still running; join them (bounded)."""
        alive = []
        for p in self.procs:
            try:
                if p.is_alive():
                    p.terminate()
                    alive.append(p)
            except (ValueError, OSError):  # closed, or already gone
                continue
        deadline = time.monotonic() + timeout_s
        for p in alive:
            try:
                p.join(max(deadline - time.monotonic(), 0.0))
                if p.is_alive():
                    p.kill()
                    p.join(1.0)
            except (ValueError, OSError):
                continue


_SUPERVISORS: weakref.WeakSet[ActorSupervisor] = weakref.WeakSet()
_EXIT_HOOK = False


def _register_for_exit(supervisor: ActorSupervisor) -> None:
    """Stop every supervisor's actors at exit, before multiprocessing joins its children.

    ``atexit`` runs its functions last-registered first; this one is registered once the first
    actors exist, so after :mod:`multiprocessing` registered its own join.
    """
    global _EXIT_HOOK
    _SUPERVISORS.add(supervisor)
    if not _EXIT_HOOK:
        atexit.register(_stop_all)
        _EXIT_HOOK = True


def _stop_all() -> None:
    for supervisor in list(_SUPERVISORS):
        supervisor.stop(timeout_s=2.0)
