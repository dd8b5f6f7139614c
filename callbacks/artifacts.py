"""Observe-only callback: put the final checkpoint into the MLflow run as an artifact."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class CheckpointArtifact(L.Callback):
    """At the end of training, save ``last.ckpt`` and log it under ``checkpoints/`` (rank 0).

    Local checkpoints (one per epoch, ``last.ckpt``) are written by Lightning's
    ``ModelCheckpoint``; this logs the final one so the run is self-contained in MLflow.
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        ckpt = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        if ckpt is None or ckpt.dirpath is None:
            return
        path = Path(ckpt.dirpath) / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # collective: every rank calls it
        logger = trainer.logger
        run_id = getattr(logger, "run_id", None)
        if trainer.global_rank == 0 and run_id is not None and path.is_file():
            logger.experiment.log_artifact(run_id, str(path), "checkpoints")
