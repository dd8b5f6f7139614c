"""Observe-only callbacks: evaluation during and after training with mask videos, DDP check."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from ife_platform.envs import cap_steps
from ife_platform.evaluation import EvalResult, EvaluationStopped, evaluate
from ife_platform.progress import GameProgress


def _log_result(trainer: L.Trainer, result: EvalResult, step: int) -> None:
    """Log ``eval/*`` at ``step`` and the result's video under ``videos/`` (rank 0's logger)."""
    logger = trainer.logger
    if logger is None:
        return
    logger.log_metrics(result.metrics(), step=step)
    run_id = getattr(logger, "run_id", None)
    if result.video_path is not None and run_id is not None:
        logger.experiment.log_artifact(run_id, str(result.video_path), "videos")


class FinalEvaluation(L.Callback):
    """After training, play evaluation games and log raw scores, HNS and a mask video (rank 0).

    The network is evaluated with noise off (eval mode) and the evaluation epsilon, under the
    evaluation protocol of ``env_kwargs`` (docs/design.md): ``eval/truncated`` counts the games
    a cap ended and ``eval/cap_frames`` is the cap. The mp4 shows the attention mask over the
    raw 210x160 screen, one mask per agent step.

    Args:
        episodes: evaluation games.
        epsilon: evaluation epsilon.
        max_steps: a step cap per game on top of the episode cap of ``env_kwargs`` (None:
            that cap alone, the protocol).
        video: record the first game.
        video_max_steps: steps recorded at most.
        out_dir: where the mp4 is written before it is logged.
        env_kwargs: evaluation protocol (sticky actions, action set, ...).
        seed: evaluation seed.
        mask_scale: the overlay's colour scale (``uniform`` or ``minmax``).
        video_upscale: integer upscaling of the video frames.
        progress: show a progress display of the games (agent steps up to each game's cap).
    """

    def __init__(
        self,
        *,
        episodes: int,
        epsilon: float,
        max_steps: int | None,
        video: bool,
        video_max_steps: int,
        out_dir: Path,
        env_kwargs: dict,
        seed: int,
        mask_scale: str = "uniform",
        video_upscale: int = 3,
        progress: bool = False,
    ) -> None:
        self.episodes = episodes
        self.epsilon = epsilon
        self.max_steps = max_steps
        self.video = video
        self.video_max_steps = video_max_steps
        self.out_dir = Path(out_dir)
        self.env_kwargs = env_kwargs
        self.seed = seed
        self.mask_scale = mask_scale
        self.video_upscale = video_upscale
        self.progress = progress
        self.result: EvalResult | None = None

    def play(
        self,
        pl_module: Any,
        episodes: int,
        video_path: Path | None,
        should_stop: Callable[[], bool] | None = None,
    ) -> EvalResult:
        """Evaluate the online network: ``episodes`` games, the first one to ``video_path``.

        ``should_stop`` is asked before every step; True abandons the evaluation
        (:class:`~ife_platform.evaluation.EvaluationStopped`).
        """
        shown = None
        if self.progress:
            cap = cap_steps(self.env_kwargs["max_episode_frames"], self.env_kwargs["frame_skip"])
            game = pl_module.cfg.env.game
            shown = GameProgress(
                f"evaluate {game} at step {int(pl_module.env_steps):,}",
                episodes,
                min(cap, self.max_steps) if self.max_steps else cap,
            )
        try:
            return evaluate(
                pl_module.online,
                pl_module.cfg.env.game,
                episodes=episodes,
                epsilon=self.epsilon,
                seed=self.seed,
                max_steps=self.max_steps,
                video_path=video_path,
                video_max_steps=self.video_max_steps,
                env_kwargs=self.env_kwargs,
                video_scale=self.mask_scale,
                video_upscale=self.video_upscale,
                progress=shown,
                should_stop=should_stop,
            )
        finally:
            if shown is not None:
                shown.close()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if trainer.global_rank != 0 or self.episodes <= 0:
            return
        video_path = self.out_dir / "videos" / "eval_mask.mp4" if self.video else None
        self.result = self.play(pl_module, self.episodes, video_path)
        _log_result(trainer, self.result, pl_module.env_steps)


def evaluation_points(every: int, total: int, max_points: int) -> list[int]:
    """Agent steps of the periodic evaluations of a ``total``-step run (the end excluded).

    The spacing is ``every``, widened to ``ceil(total / max_points)`` when that is larger, so a
    long run gets at most ``max_points - 1`` evaluations besides the final one. Example:
    ``every=25_000`` of 100k steps gives 25k, 50k, 75k; of 10M steps with ``max_points=10``,
    every 1M steps (1M ... 9M). ``every=0`` gives none.
    """
    if every <= 0 or max_points <= 0:
        return []
    step = max(every, math.ceil(total / max_points))
    return list(range(step, total, step))


def video_points(points: list[int], videos: int) -> set[int]:
    """The ``videos`` evaluation points (of ``points``) that write a video, evenly spread.

    The last point is always among them; ``videos=0`` gives none. Example: 9 points, 3 videos:
    the 1st, 5th and 9th.
    """
    if videos <= 0 or not points:
        return set()
    idx = np.unique(np.round(np.linspace(len(points) - 1, 0, min(videos, len(points)))))
    return {points[int(i)] for i in idx}


class PeriodicEvaluation(L.Callback):
    """Every ``points`` step during training, evaluate the online network and log ``eval/*``.

    Observe-only: :meth:`FinalEvaluation.play` on the online network (eval mode, noise off,
    restored after; its own seeded emulator), at the first batch end at or after each step of
    ``points``. The metrics are the final evaluation's, logged at the agent step reached, so
    ``eval/return_mean`` and the rest are curves whose last point is the final evaluation. At
    the points of ``videos`` the first game is recorded to
    ``videos/eval_mask_step<agent step>.mp4``. Only rank 0 evaluates and logs; a resumed run
    skips the points its checkpoint had passed.

    A stop signal (``trainer.received_sigterm``) abandons an evaluation at its next step, so
    the run checkpoints and exits within the scheduler's grace period rather than after the
    games (one can last 27,000 agent steps); nothing of it is logged. The abandoned points go
    into the checkpoint (:meth:`state_dict`), and the resumed run plays them first, before it
    trains on, with the weights and at the agent step they were due at: its curve is the one
    an uninterrupted run logs.

    Args:
        final: the run's final evaluation (protocol, seed, video settings).
        points: agent steps to evaluate at (:func:`evaluation_points`).
        episodes: games per evaluation point.
        videos: the points that write a video (:func:`video_points`).
    """

    def __init__(
        self, final: FinalEvaluation, points: list[int], episodes: int, videos: set[int]
    ) -> None:
        self.final = final
        self.points = sorted(points)
        self.episodes = episodes
        self.videos = videos
        self.results: list[tuple[int, EvalResult]] = []
        self.unfinished: list[int] = []  # points whose evaluation a stop signal abandoned
        self.unfinished_at = 0  # the agent step that evaluation was due at (its log step)

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"unfinished": list(self.unfinished), "unfinished_at": self.unfinished_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        self.unfinished = [int(p) for p in state_dict.get("unfinished", [])]
        self.unfinished_at = int(state_dict.get("unfinished_at", 0))

    def _due(self, steps: int) -> list[int]:
        """The points ``steps`` has reached that are not done yet (one evaluation plays them)."""
        due = [p for p in self.points if p <= steps]
        self.points = self.points[len(due) :]
        return due

    def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:  # noqa: D102
        # Before the task's own on_fit_start (which may fill the replay buffer) and after the
        # checkpoint restored the counters: a resumed run's passed points are done.
        self._due(int(pl_module.env_steps))

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:  # noqa: D102
        # A resumed run whose stop abandoned an evaluation plays it now, before any update:
        # the weights are the checkpoint's, taken at the batch end the evaluation was due at
        # (the stream may have collected a few steps ahead since: the step logged is the
        # one it was due at, as in an uninterrupted run).
        if self.unfinished:
            self._evaluate(trainer, pl_module, self.unfinished, self.unfinished_at)

    def _maybe_evaluate(self, trainer: L.Trainer, pl_module: Any) -> None:
        steps = int(pl_module.env_steps)
        self._evaluate(trainer, pl_module, self._due(steps), steps)

    def _evaluate(self, trainer: L.Trainer, pl_module: Any, due: list[int], steps: int) -> None:
        """Play the evaluation of the points ``due``, logged at agent step ``steps``."""
        if not due or trainer.global_rank != 0 or self.episodes <= 0:
            return
        # until it ends, a stop's checkpoint records it as abandoned
        self.unfinished, self.unfinished_at = list(due), steps
        if trainer.received_sigterm:
            return  # Lightning stops after this hook; the resumed run evaluates
        video = None
        if self.final.video and self.videos.intersection(due):
            video = self.final.out_dir / "videos" / f"eval_mask_step{steps:09d}.mp4"
        try:
            result = self.final.play(
                pl_module, self.episodes, video, should_stop=lambda: trainer.received_sigterm
            )
        except EvaluationStopped:
            return
        self.unfinished = []
        self.results.append((steps, result))
        _log_result(trainer, result, steps)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:  # noqa: D102
        self._maybe_evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:  # noqa: D102
        self._maybe_evaluate(trainer, pl_module)


def parameter_digest(module: torch.nn.Module) -> int:
    """A 63-bit digest of the trainable parameters (bitwise: any difference changes it).

    Buffers are left out on purpose: noisy-net noise is drawn per rank.
    """
    h = hashlib.sha256()
    for name, tensor in sorted(module.named_parameters()):
        h.update(name.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)  # (1x1 channels-last convs)
        h.update(flat.view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 1


class DDPWeightCheck(L.Callback):
    """At the end of training, verify that every rank holds bitwise-identical online weights.

    Each rank hashes its network; rank 0 logs ``ddp.weights_identical`` and the digests as tags
    and a mismatch raises (ranks that drifted apart would make the run meaningless).
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if trainer.world_size <= 1:
            return
        digest = torch.tensor([parameter_digest(pl_module.online)], dtype=torch.int64)
        digests = pl_module.all_gather(digest.to(pl_module.device)).flatten().cpu().tolist()
        identical = len(set(digests)) == 1
        if trainer.global_rank == 0 and trainer.logger is not None:
            run_id = getattr(trainer.logger, "run_id", None)
            if run_id is not None:
                client = trainer.logger.experiment
                client.set_tag(run_id, "ddp.weights_identical", str(identical).lower())
                client.set_tag(run_id, "ddp.weight_digests", ",".join(map(str, digests)))
        if not identical:
            raise RuntimeError(f"DDP ranks diverged: online-weight digests {digests}")
