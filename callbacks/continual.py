"""Observe-only callback of continual sequences: evaluate every game of the sequence in training."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L

from ife_platform.evaluation import EvalResult, EvaluationStopped


class SequenceEvaluation(L.Callback):
    """Every ``every`` agent steps, evaluate the online network on every game of the sequence.

    Evaluation happens at the first update at or after each multiple of ``every`` (updates
    only start after ``learning_starts``), except at the end of the task, which the sequence
    runner evaluates itself (a row of the matrix R). Results go to the task's MLflow run as
    ``eval/<game>/return_mean`` (and ``eval/<game>/truncated``, the games a cap ended) with
    the sequence-wide agent step (``offset`` + the task's
    steps) and to ``on_result`` (the runner's learning curves). The evaluation uses a copy of
    the network in eval mode and its own seeded emulators: training is not perturbed.

    A stop signal (``trainer.received_sigterm``) abandons an evaluation at its next step and
    nothing of it is logged, so the task stops within a scheduler's grace period. Nothing
    needs to be kept for the resume: a resumed sequence trains an unfinished task again
    from its start.

    Args:
        every: agent steps between evaluations.
        end: the task's budget (no evaluation at or after it).
        offset: sequence-wide agent steps before this task.
        evaluate: ``(network, should_stop) -> {game: EvalResult}`` (the runner's parallel
            evaluation; ``should_stop`` is asked before every step and True raises
            ``EvaluationStopped``).
        on_result: ``(sequence step, results, seconds)`` sink.
    """

    def __init__(
        self,
        every: int,
        end: int,
        offset: int,
        evaluate: Callable[..., dict[str, EvalResult]],
        on_result: Callable[[int, dict[str, EvalResult], float], None],
    ) -> None:
        self.every = every
        self.end = end
        self.offset = offset
        self.evaluate = evaluate
        self.on_result = on_result
        self.next_at = every

    def _maybe_evaluate(self, trainer: L.Trainer, pl_module: Any) -> None:
        steps = int(pl_module.env_steps)
        if steps < self.next_at or self.next_at >= self.end or trainer.received_sigterm:
            return
        while self.next_at <= steps:
            self.next_at += self.every
        import time

        t0 = time.perf_counter()
        try:
            results = self.evaluate(pl_module.online, should_stop=lambda: trainer.received_sigterm)
        except EvaluationStopped:
            return  # Lightning stops after this hook
        seconds = time.perf_counter() - t0
        step = self.offset + steps
        if trainer.global_rank == 0 and trainer.logger is not None:
            metrics = {f"eval/{g}/return_mean": r.mean_return for g, r in results.items()}
            # games a cap ended (sequence.eval_max_steps cuts long games short)
            metrics.update({f"eval/{g}/truncated": r.num_truncated for g, r in results.items()})
            trainer.logger.log_metrics(metrics, step=step)
        self.on_result(step, results, seconds)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:  # noqa: D102
        self._maybe_evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:  # noqa: D102
        self._maybe_evaluate(trainer, pl_module)
