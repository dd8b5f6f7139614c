"""Progress of long work in agent steps: total, percent, rate, ETA and the latest return.

One display for training, continual tasks, evaluation and ``ife explain``. On a terminal it is
a tqdm bar on stderr; anywhere else (a log file, a pipe, a scheduler) it prints a plain line at
most every ``every_s`` seconds and at the end, so logs stay readable:

    train pong: 42,000/100,000 agent steps (42%), 675 steps/s, ETA 1:25, return 12.0

Only observes: callers hand it the position (``update(done)``), it never changes the work.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def duration(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour) of a non-negative number of seconds."""
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Position of ``total`` units of work (agent steps) with rate and ETA.

    Args:
        total: units of the whole work (``train.total_steps``).
        desc: what is done (``train pong``), the line's start.
        initial: units already done before this process (a resumed run): they count in the
            position but not in the rate.
        unit: the unit's name in plain lines.
        stream: where to write (stderr).
        interactive: a tqdm bar (True) or plain lines (False); None: whether ``stream`` is a
            terminal.
        every_s: seconds between plain lines at least.
        clock: seconds (a test passes its own).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        initial: int = 0,
        unit: str = "agent steps",
        stream: TextIO | None = None,
        interactive: bool | None = None,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(int(total), 1)
        self.desc = desc
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        if interactive is None:
            interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s
        self.clock = clock
        self.start_done = self.done = int(initial)
        self.started = self.last_line = clock()
        self.info: dict[str, Any] = {}
        self.closed = False
        self.bar: Any = None
        if interactive:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                initial=self.done,
                desc=desc,
                unit=" steps",
                unit_scale=True,
                dynamic_ncols=True,
                file=self.stream,
                smoothing=0.05,
                mininterval=0.5,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                "[{elapsed}<{remaining}, {rate_fmt}{postfix}]",
            )

    def rate(self) -> float | None:
        """Units per second since this display started (None before any progress)."""
        seconds = self.clock() - self.started
        moved = self.done - self.start_done
        return moved / seconds if moved > 0 and seconds > 0 else None

    def eta(self) -> float | None:
        """Seconds left at the current rate (None while unknown)."""
        rate = self.rate()
        return None if rate is None else max(self.total - self.done, 0) / rate

    def line(self) -> str:
        """The plain line of the current state."""
        pct = 100.0 * min(self.done, self.total) / self.total
        parts = [f"{self.desc}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%)"]
        rate, eta = self.rate(), self.eta()
        if rate is not None and eta is not None:
            parts += [f"{rate:,.1f} steps/s", f"ETA {duration(eta)}"]
        parts += [f"elapsed {duration(self.clock() - self.started)}"]
        parts += [f"{k} {v}" for k, v in self.info.items()]
        return ", ".join(parts)

    def update(self, done: int, **info: Any) -> None:
        """Move to ``done`` units (absolute); ``info`` (``return=12.0``) shows after the rate."""
        if self.closed:
            return
        self.info.update({k: _short(v) for k, v in info.items() if v is not None})
        if self.bar is not None:
            if info:
                self.bar.set_postfix_str(
                    ", ".join(f"{k} {v}" for k, v in self.info.items()), refresh=False
                )
            self.bar.update(int(done) - self.done)
            self.done = int(done)
            return
        self.done = int(done)
        now = self.clock()
        if now - self.last_line >= self.every_s:
            self.last_line = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """End the display: the bar stays, or a final plain line."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        else:
            print(self.line(), file=self.stream, flush=True)


def _short(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


class GameProgress:
    """A :class:`Progress` over evaluation games, fed by the evaluation loop's observer.

    Games end when they end, so the total is the games' step cap (``episodes x cap``): the
    position jumps to the next game's start when a game ends early, and the ETA is an upper
    bound.

    Args:
        desc: what is done (``evaluate pong``).
        episodes: games to play.
        cap: agent steps per game at most.
        kwargs: more :class:`Progress` arguments.
    """

    def __init__(self, desc: str, episodes: int, cap: int, **kwargs: Any) -> None:
        self.episodes, self.cap = int(episodes), max(int(cap), 1)
        self.progress = Progress(self.episodes * self.cap, desc, **kwargs)

    def __call__(self, step: Any) -> None:
        """Observe one step (``step.episode``, ``step.t``: an evaluation ``StepView``)."""
        self.progress.update(
            step.episode * self.cap + step.t + 1, game=f"{step.episode + 1}/{self.episodes}"
        )

    def close(self) -> None:
        """Every game played: the display ends at its total."""
        self.progress.update(self.progress.total)
        self.progress.close()
