"""Observe-only callbacks: final evaluation with a mask video, and the DDP weight check."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import torch

from ife_platform.evaluation import evaluate


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
    ) -> None:
        self.episodes = episodes
        self.epsilon = epsilon
        self.max_steps = max_steps
        self.video = video
        self.video_max_steps = video_max_steps
        self.out_dir = Path(out_dir)
        self.env_kwargs = env_kwargs
        self.seed = seed
        self.result = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if trainer.global_rank != 0 or self.episodes <= 0:
            return
        video_path = self.out_dir / "videos" / "eval_mask.mp4" if self.video else None
        self.result = evaluate(
            pl_module.online,
            pl_module.cfg.env.game,
            episodes=self.episodes,
            epsilon=self.epsilon,
            seed=self.seed,
            max_steps=self.max_steps,
            video_path=video_path,
            video_max_steps=self.video_max_steps,
            env_kwargs=self.env_kwargs,
        )
        logger = trainer.logger
        if logger is None:
            return
        logger.log_metrics(self.result.metrics(), step=pl_module.env_steps)
        run_id = getattr(logger, "run_id", None)
        if self.result.video_path is not None and run_id is not None:
            logger.experiment.log_artifact(run_id, str(self.result.video_path), "videos")


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
