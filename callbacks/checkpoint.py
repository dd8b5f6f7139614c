"""Write ``last.ckpt`` at every epoch end (Lightning 2.6 does not, with ``save_top_k=0``)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class EpochEndCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint(save_last=True, save_top_k=0)`` that really saves at each epoch end.

    Lightning 2.6 writes ``last.ckpt`` at an epoch end only right after a top-k save, and with
    ``save_top_k=0`` there is none: a run killed mid-way had no checkpoint, and a resumed run
    fell back to an older end-of-training one (issue 12). This subclass saves ``last.ckpt``
    itself whenever the parent did not save at this global step.
    """

    def __init__(self, dirpath: str) -> None:
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            # Always overwrite last.ckpt: with the counter, a second save in the same folder
            # (CheckpointArtifact at the end of training) wrote last-v1.ckpt and resume picked
            # the stale file.
            enable_version_counter=False,
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        super().on_train_epoch_end(trainer, pl_module)
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
