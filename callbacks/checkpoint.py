"""Checkpoints of a run: atomic, kept to a number, in MLflow, and taken before a stop.

Layout and atomicity: :mod:`ife_platform.checkpoint`. Resume picks the newest valid one
(:func:`ife_platform.checkpoint.open_run_checkpoint`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ife_platform.checkpoint import atomic_link, atomic_save, local_checkpoints, step_file_name
from ife_platform.runs import NonFiniteError
from ife_platform.tracking import log_artifact_once

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with the write made atomic in the target folder.

    Lightning's own save goes through fsspec, which stages the file in ``TMPDIR`` and moves
    it: across filesystems that move is a copy, and a kill during it left a truncated
    ``last.ckpt`` (issue 12).
    """

    def save_checkpoint(  # noqa: D102
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        atomic_save(checkpoint, path)


class RunCheckpoints(L.Callback):
    """Save at every epoch end, every ``every_steps`` agent steps, at the end and before a stop.

    Each save writes ``step-<agent steps>.ckpt`` (atomically), points ``last.ckpt`` at it,
    deletes all but the newest ``keep`` step files, calls the task's
    ``after_checkpoint(folder, step)`` hook (the replay snapshot keeps only the newest), and
    logs ``last.ckpt`` to the MLflow run under ``checkpoints/``.

    Stops that leave a consistent state are checkpointed too: SIGTERM / SIGUSR1 (Lightning
    stops at a batch end), Ctrl-C, and a non-finite update, which is refused before it is
    applied (the saved state is the last finite one).

    Args:
        dirpath: the run's checkpoint folder.
        every_steps: also save when the agent step count crosses a multiple of this (0: off).
        keep: step-named checkpoints kept.
        upload: log ``last.ckpt`` to the MLflow run after each save.
    """

    def __init__(
        self, dirpath: str | Path, every_steps: int = 0, keep: int = 2, upload: bool = True
    ) -> None:
        self.dirpath = Path(dirpath)
        self.every_steps = every_steps
        self.keep = keep
        self.upload = upload
        self.saved_at: int | None = None  # agent steps of the last save
        self.start_steps: int | None = None  # agent steps when training (re)started

    def progressed(self, task: Any) -> bool:
        """Whether training took agent steps after it (re)started."""
        return (
            self.start_steps is not None and int(getattr(task, "env_steps", 0)) > self.start_steps
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self.start_steps = int(pl_module.env_steps)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:  # noqa: D102
        every, steps = self.every_steps, int(pl_module.env_steps)
        last = self.saved_at if self.saved_at is not None else self.start_steps or 0
        if every > 0 and steps // every > last // every:
            self.save(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:  # noqa: D102
        self.save(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:  # noqa: D102
        self.save(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:  # noqa: D102
        if isinstance(exception, SIGTERMException | KeyboardInterrupt | NonFiniteError):
            self.save(trainer, pl_module)

    def save(self, trainer: L.Trainer, pl_module: Any) -> Path:
        """Checkpoint now (a no-op if this agent step is already saved). Every rank calls it."""
        steps = int(pl_module.env_steps)
        path = self.dirpath / step_file_name(steps)
        if self.saved_at == steps and path.is_file():
            return path
        # Rank 0's step count names the file (ranks step in lockstep under DDP).
        trainer.save_checkpoint(path, weights_only=False)
        self.saved_at = steps
        if trainer.global_rank == 0:
            atomic_link(path, self.dirpath / "last.ckpt")
            for old in local_checkpoints(self.dirpath)[self.keep :]:
                old.unlink(missing_ok=True)
        after = getattr(pl_module, "after_checkpoint", None)
        if after is not None:
            after(self.dirpath, steps)
        if self.upload and trainer.global_rank == 0:
            self._upload(trainer)
        return path

    def _upload(self, trainer: L.Trainer) -> None:
        logger = trainer.logger
        run_id = getattr(logger, "run_id", None)
        if run_id is None:
            return
        try:
            # a hard link into a local store: the checkpoint is on disk once
            log_artifact_once(logger.experiment, run_id, self.dirpath / "last.ckpt", "checkpoints")
        except Exception as err:  # the local copy is what resume reads first
            log.warning("could not log the checkpoint to MLflow (kept locally): %s", err)
