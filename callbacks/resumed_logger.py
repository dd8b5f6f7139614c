"""The MLflow logger of a resumed run: one value per metric and step."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import MLFlowLogger


class ResumedMLFlowLogger(MLFlowLogger):
    """An ``MLFlowLogger`` that skips values at steps a metric already has.

    A run resumed from a checkpoint at agent step S replays the steps between S and the
    moment the earlier process died; those steps were logged once already (by the process
    that died), so they are not logged again and every metric keeps one value per step.

    Args:
        logged: per metric, the highest step already in the store
            (:func:`ife_platform.runs.logged_through`).
        **kwargs: ``MLFlowLogger``'s arguments.
    """

    def __init__(self, logged: dict[str, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.logged = dict(logged)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:  # noqa: D102
        if step is not None:
            metrics = {k: v for k, v in metrics.items() if step > self.logged.get(k, -1)}
        if metrics:
            super().log_metrics(metrics, step)
