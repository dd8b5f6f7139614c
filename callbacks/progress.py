"""The training progress display: agent steps against the budget, rate, ETA, latest return."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import numpy as np

from ife_platform.progress import Progress


class StepProgress(L.Callback):
    """Show a run's agent steps against ``train.total_steps`` (rank 0 only).

    Replaces Lightning's bar, which counts batches of an epoch of unknown length. Reads the
    task's counters (``env_steps``, ``updates``, ``recent_returns``) after every batch and
    changes nothing. On a terminal it is a bar; elsewhere a plain line every ``every_s``
    seconds (:class:`ife_platform.progress.Progress`).

    Args:
        desc: what the line starts with (``train pong``).
        every_s: seconds between plain lines off a terminal.
        stream: where to write (stderr).
    """

    def __init__(self, desc: str, every_s: float = 30.0, stream: Any = None) -> None:
        self.desc = desc
        self.every_s = every_s
        self.stream = stream
        self.progress: Progress | None = None
        self._last = -float("inf")

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:  # noqa: D102
        if trainer.global_rank == 0:
            self.progress = Progress(
                int(pl_module.cfg.train.total_steps),
                self.desc,
                initial=int(pl_module.env_steps),
                every_s=self.every_s,
                stream=self.stream,
            )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:  # noqa: D102
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self._last < 0.25:  # the training step's hot path: refresh 4 times a second
            return
        self._last = now
        returns = pl_module.recent_returns
        self.progress.update(
            int(pl_module.env_steps),
            updates=f"{int(pl_module.updates):,}",
            **{"return": float(returns[-1]) if returns else None},
            mean20=float(np.mean(returns)) if returns else None,
        )

    def _close(self, pl_module: Any) -> None:
        if self.progress is not None:
            self.progress.update(int(pl_module.env_steps))
            self.progress.close()
            self.progress = None

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:  # noqa: D102
        self._close(pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:  # noqa: D102
        self._close(pl_module)
