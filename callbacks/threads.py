"""Size the torch threads of a training process to its share of the machine."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ife_platform.threads import MachineShare


class ThreadShare(L.Callback):
    """Keep torch's threads at this process's share of the cores while it trains.

    Joins the machine's registry of training processes at fit start, re-sizes the threads
    every ``every`` batches (another run may have started or finished since) and leaves at
    fit end. It changes no learning computation: only how many threads run it.

    Args:
        share: the machine registry and thread rule (``trainer.threads``).
        every: batches between re-checks.
    """

    def __init__(self, share: MachineShare, every: int = 200) -> None:
        self.share = share
        self.every = every
        self.history: list[int] = []  # thread counts set, in order
        self._batches = 0

    def _apply(self) -> None:
        n = self.share.threads()
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
        if not self.history or self.history[-1] != n:
            self.history.append(n)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self.share.join()
        self._apply()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:  # noqa: D102
        self._batches += 1
        if self._batches % self.every == 0:
            self._apply()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self.share.leave()

    def on_exception(self, trainer: L.Trainer, *args: Any) -> None:  # noqa: D102
        self.share.leave()
