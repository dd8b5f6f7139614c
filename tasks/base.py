"""What every agent's Lightning task shares: counters, seeding, episodes, logging, checkpoints.

An agent's task (``tasks/rainbow.py``, ``tasks/a3c.py``, or a registered agent's own) is an
:class:`AgentTask` that adds its network, its data stream and its loss. The stream reports
what it collected (:class:`Collected`) and the task updates its own counters
(:meth:`AgentTask.on_collected`); nothing else writes them.

Checkpoints carry an ``ife`` section (config, run id, action count, counters, RNG states,
recent returns) that ``ife evaluate``, ``resume=`` and the continual runner read; subclasses add
their own counters and RNG streams through :meth:`AgentTask.counter_names` and
:meth:`AgentTask.extra_rng_state`.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig
from torch import Tensor

from ife_platform.checkpoint import restore_rng, rng_state
from ife_platform.config import to_container
from ife_platform.envs import atari_spec
from ife_platform.registry import get_agent
from ife_platform.runs import NonFiniteError
from ife_platform.scores import has_reference, human_normalized_score
from ife_platform.seeding import ALE_SEED_BITS, NUMPY_SEED_BITS, TORCH_SEED_BITS, fold_seed

log = logging.getLogger(__name__)

#: ``train.nan_policy`` values.
NAN_POLICIES = ("stop", "skip_batch")


@dataclass
class Collected:
    """What a data stream collected since its last report.

    Attributes:
        steps: agent steps, summed over the rank's envs.
        seconds: wall time spent collecting them (0 when not measured).
        episodes: (raw score, length in agent steps) of every game that ended.
    """

    steps: int
    seconds: float = 0.0
    episodes: list[tuple[float, int]] = field(default_factory=list)


def finished_episodes(batch: Any) -> list[tuple[float, int]]:
    """(raw score, length) of the games that end in a collected TorchRL batch.

    The batch is the env's rollout: ``("next", "done")``, ``("next", "episode_return")`` and
    ``("next", "episode_length")`` with a trailing singleton dimension (``AtariVecEnv``).
    """
    nxt = batch["next"]
    done = nxt["done"].squeeze(-1)
    if not done.any():
        return []
    returns = nxt["episode_return"].squeeze(-1)[done].tolist()
    lengths = nxt["episode_length"].squeeze(-1)[done].tolist()
    return [(float(r), int(n)) for r, n in zip(returns, lengths, strict=True)]


class AgentTask(L.LightningModule):
    """Base LightningModule of every agent (manual optimisation).

    Subclasses build ``self.online`` (the network that acts and is evaluated), implement
    ``loss(batch) -> dict`` (``loss`` plus named ``loss_*`` and diagnostic terms) and
    ``training_step``, and feed :meth:`on_collected` from their data stream.

    Args:
        cfg: the validated config (``ife_platform.config.compose``).
    """

    #: Counters saved in checkpoints and restored on resume (subclasses extend).
    counter_names: Sequence[str] = ("env_steps", "updates", "episodes", "restarts", "skipped")

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.agent_spec = get_agent(cfg.agent.name)
        self.num_actions = atari_spec(cfg.env.game, cfg.env.full_action_space).num_actions
        torch.manual_seed(fold_seed(cfg.seed, TORCH_SEED_BITS))  # same network on every rank
        self.env_steps = 0  # agent steps of this rank (all its envs)
        self.updates = 0
        self.episodes = 0
        self.restarts = 0  # resumes so far: games restart with fresh seeds after each
        self.skipped = 0  # non-finite updates dropped (train.nan_policy=skip_batch)
        self.checkpoint_dir: Path | None = None  # the run's checkpoint folder (set by train)
        self.recent_returns: deque[float] = deque(maxlen=20)
        self.run_id: str | None = None  # MLflow run, stored in checkpoints
        self._pending_episodes: list[tuple[float, int]] = []
        self._last_log: tuple[float, int, int] | None = None
        self._restored_rng = False

    def build_network(self) -> torch.nn.Module:
        """A fresh network of this agent (the registry's builder)."""
        return self.agent_spec.build_network(self.cfg, self.num_actions)

    # -- seeding -----------------------------------------------------------------------------
    def seed_everything(self) -> int:
        """Seed torch, numpy and random per rank, unless a checkpoint restored their states.

        Returns the rank's seed (``seed + 1000 * rank``); each library gets it folded into the
        range it accepts (:mod:`ife_platform.seeding`), ``seed_extra`` torch's.
        """
        seed = int(self.cfg.seed) + 1000 * self.global_rank
        if not self._restored_rng:  # a resumed run continues the RNG streams it saved
            torch.manual_seed(fold_seed(seed, TORCH_SEED_BITS))
            np.random.seed(fold_seed(seed, NUMPY_SEED_BITS))
            random.seed(seed)
            self.seed_extra(fold_seed(seed, TORCH_SEED_BITS))
        return seed

    def seed_extra(self, seed: int) -> None:
        """Seed the subclass's own generators (for example the actor's)."""

    def env_seed(self) -> int:
        """Seed of env 0 of this rank: ranks and restarts get disjoint seed ranges (31 bits)."""
        seed = int(self.cfg.seed) * 1_000_003 + self.global_rank * 10_007 + self.restarts * 101
        return fold_seed(seed, ALE_SEED_BITS)

    # -- collection --------------------------------------------------------------------------
    def on_collected(self, report: Collected) -> int:
        """Count what the stream collected (agent steps, finished games).

        Returns the number of updates now due; the base learns from every batch it is
        given (0 extra), an off-policy task answers from its replay ratio.
        """
        self.env_steps += report.steps
        for ret, length in report.episodes:
            self.episodes += 1
            self.recent_returns.append(ret)
            self._pending_episodes.append((ret, length))
        return 0

    def stop_if_signalled(self) -> None:
        """Stop now if a stop signal came, for streams that collect without yielding a batch.

        Lightning reads its SIGTERM flag (``trainer.received_sigterm``; SIGUSR1 arrives as a
        SIGTERM, :class:`ife_platform.runs.SignalWatch`) only at batch ends, so a stream in
        its warm-up (``agent.learning_starts``: 1,600 agent steps in the DER profile, 100,000
        transitions in the Fast one) would collect on for minutes after a scheduler's
        SIGTERM. Raising Lightning's ``SIGTERMException`` here takes the same path as a stop
        at a batch end: checkpoint, run marked KILLED, exit 128 + signal.

        Single-process runs only: under DDP the ranks agree on a stop at a batch end
        (Lightning broadcasts rank 0's flag there), and one rank leaving alone during the
        warm-up would leave the others waiting in their first gradient all-reduce.
        """
        trainer = self._trainer
        if trainer is not None and trainer.world_size == 1 and trainer.received_sigterm:
            raise SIGTERMException

    # -- updates -----------------------------------------------------------------------------
    def guarded_step(
        self,
        opt: Any,
        loss: Tensor,
        watched: dict[str, Tensor],
        grad_clip: float | None,
    ) -> bool:
        """Backward, clip, check for non-finite values, then step (``train.nan_policy``).

        The loss, the gradient norm (the one clipping computes) and every ``watched``
        tensor (for example the new priorities) are checked with one host sync before the
        optimiser step, so a non-finite update is never applied. Under DDP the gradients are
        all-reduced before the check, so every rank decides alike. With ``16-mixed``
        precision the gradient check is left to the loss scaler, which skips overflowing
        steps itself (bf16 has no scaler: its gradients are checked).

        Returns:
            True if the update was applied; False if it was dropped (``skip_batch``).

        Raises:
            NonFiniteError: with ``stop`` (the default), naming the step and the terms.
        """
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        checked = {"loss": loss.detach(), **{k: v.detach() for k, v in watched.items()}}
        if str(self.trainer.precision) in ("16-mixed", "16"):  # the scaler's precisions
            if grad_clip is not None:  # Lightning unscales the gradients before clipping
                self.clip_gradients(
                    opt, gradient_clip_val=grad_clip, gradient_clip_algorithm="norm"
                )
        else:
            # No scaler: clip here (Lightning's bf16 plugin refuses to clip for a fused
            # optimiser, a rule meant for fp16's unscaling). The norm before clipping is finite
            # exactly when the clipped gradients are, so one norm serves both.
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            if params and grad_clip is not None:
                checked["gradients"] = torch.nn.utils.clip_grad_norm_(params, grad_clip)
            elif params:
                norms = torch._foreach_norm([p.grad for p in params])
                checked["gradients"] = torch.linalg.vector_norm(torch.stack(norms))
        finite = torch.stack([torch.isfinite(v).all() for v in checked.values()]).tolist()
        if all(finite):
            opt.step()
            return True
        bad = [name for name, ok in zip(checked, finite, strict=True) if not ok]
        opt.zero_grad(set_to_none=True)
        if self.cfg.train.nan_policy == "stop":
            raise NonFiniteError(self.env_steps, self.updates + 1, bad)
        self.skipped += 1
        every = self.cfg.trainer.log_every_updates
        if self.skipped == 1 or self.skipped % every == 0:  # updates may never log again
            if self.logger is not None and self.global_rank == 0:
                self.logger.log_metrics({"train/skipped_updates": self.skipped}, self.env_steps)
        if self.skipped == 1 or self.skipped % 100 == 0:
            log.warning(
                "non-finite %s at agent step %d: update dropped (%d so far)",
                ", ".join(bad),
                self.env_steps,
                self.skipped,
            )
        return False

    # -- logging -----------------------------------------------------------------------------
    def log_progress(self, terms: dict[str, Tensor], extra: dict[str, float] | None = None) -> None:
        """Log the scalar loss terms, counters, rates and finished games to MLflow.

        Every metric's x-axis is agent steps (``train/*`` and ``episode/*``); the progress
        bar gets ``sps`` and the mean of the last 20 games.
        """
        now = time.perf_counter()
        metrics = {k: float(v.detach()) for k, v in terms.items() if v.ndim == 0}
        if self._last_log is not None:
            t, steps, updates = self._last_log
            metrics["steps_per_s"] = (self.env_steps - steps) / max(now - t, 1e-9)
            metrics["updates_per_s"] = (self.updates - updates) / max(now - t, 1e-9)
        self._last_log = (now, self.env_steps, self.updates)
        metrics.update(env_steps=float(self.env_steps), updates=float(self.updates))
        metrics.update(extra or {})
        if self.logger is not None and self.global_rank == 0:
            self.logger.log_metrics({f"train/{k}": v for k, v in metrics.items()}, self.env_steps)
            game = self.cfg.env.game
            for ret, length in self._pending_episodes:
                episode = {"episode/return": ret, "episode/length": float(length)}
                if has_reference(game):
                    episode["episode/hns"] = human_normalized_score(game, ret)
                self.logger.log_metrics(episode, step=self.env_steps)
        self._pending_episodes.clear()
        self.log("sps", metrics.get("steps_per_s", 0.0), prog_bar=True, logger=False)
        if self.recent_returns:
            self.log("return", float(np.mean(self.recent_returns)), prog_bar=True, logger=False)

    def should_log(self) -> bool:
        """Whether this update logs (the first one and every ``log_every_updates``)."""
        return self.updates == 1 or self.updates % self.cfg.trainer.log_every_updates == 0

    # -- checkpoints -------------------------------------------------------------------------
    def extra_rng_state(self) -> dict[str, Any]:
        """RNG states of the subclass's own generators, saved with the global ones."""
        return {}

    def restore_extra_rng(self, rng: dict[str, Any]) -> None:
        """Restore what :meth:`extra_rng_state` saved."""

    def extra_checkpoint_state(self) -> dict[str, Any]:
        """More entries of the checkpoint's ``ife`` section (for example a replay folder)."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:  # noqa: D102
        checkpoint["ife"] = {
            "config": to_container(self.cfg),
            "run_id": self.run_id,
            "num_actions": self.num_actions,
            "counters": {name: getattr(self, name) for name in self.counter_names},
            "rng": {**rng_state(), **self.extra_rng_state()},
            "recent_returns": list(self.recent_returns),
            **self.extra_checkpoint_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:  # noqa: D102
        state = checkpoint["ife"]
        for name in self.counter_names:  # counters added later default to their start value
            value = state["counters"].get(name, getattr(self, name))
            setattr(self, name, type(getattr(self, name))(value))
        # Emulator state is not restorable: games in flight restart, with fresh seeds.
        self.restarts += 1
        restore_rng(state["rng"])
        self.restore_extra_rng(state["rng"])
        self._restored_rng = True
        self.recent_returns.extend(state["recent_returns"])
        self.load_extra_state(state)

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Read what :meth:`extra_checkpoint_state` wrote."""
