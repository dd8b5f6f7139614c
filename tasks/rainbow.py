"""Rainbow as a LightningModule: TorchRL collector -> n-step -> prioritized replay -> loss.

The data path, in order (one place each):

1. ``AtariVecEnv`` (ale-py native vector env) steps ``env.num_envs`` games;
2. a TorchRL ``Collector`` runs the :class:`~ife_platform.rainbow.agent.Actor` on it and yields
   ``[num_envs, T]`` batches;
3. :class:`~ife_platform.rainbow.nstep.NStepAccumulator` turns them into n-step transitions
   (sign-clipped rewards, life loss terminal for learning when the protocol says so);
4. a TorchRL ``TensorDictPrioritizedReplayBuffer`` (uint8 observations) stores them;
5. :class:`ReplayStream` is the "dataloader": it interleaves collection and sampling, yielding
   ``updates_per_step`` batches per collected agent step once ``learning_starts`` is reached;
6. :meth:`RainbowTask.training_step` (manual optimisation) computes the loss, steps Adam,
   writes the new priorities back and syncs the target network every
   ``target_update_period`` updates.

With DDP each rank builds its own env (seeded by rank), collector and replay in
``on_fit_start``; every rank yields the same number of batches, so ranks stay in step.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.collectors import Collector
from torchrl.data import TensorDictPrioritizedReplayBuffer

from ife_platform.checkpoint import restore_rng, rng_state
from ife_platform.config import to_container
from ife_platform.envs import AtariVecEnv, atari_spec
from ife_platform.extractors import extractor_kwargs
from ife_platform.optim import make_adam
from ife_platform.rainbow.agent import Actor, QNetwork, build_q_network, linear_schedule
from ife_platform.rainbow.losses import categorical_double_q_loss, huber_double_q_loss
from ife_platform.rainbow.nstep import NStepAccumulator
from ife_platform.rainbow.replay import (
    GatherTensorStorage,
    importance_weights,
    priority_quantiles,
)
from ife_platform.registry import get_agent
from ife_platform.scores import has_reference, human_normalized_score

log = logging.getLogger(__name__)


# The actor moves pixels to the network's device itself and returns CPU actions, so to the
# collector env, policy and storage all live on the CPU: no per-step ``TensorDict.to()``.
# Trajectory ids are not read downstream, and ``ReplayStream._store`` copies what it keeps
# before asking for the next batch, so the collector may reuse its output buffer.
COLLECTOR_KWARGS: dict[str, Any] = {
    "device": "cpu",
    "track_traj_ids": False,
    "return_same_td": True,
}


def build_network(cfg: DictConfig, num_actions: int) -> QNetwork:
    """The Q-network an agent config describes (used by training, evaluation and tests)."""
    m = cfg.model
    return build_q_network(
        m.extractor,
        num_actions,
        extractor_kwargs={"in_channels": cfg.env.frame_stack, **extractor_kwargs(m)},
        hidden=m.hidden,
        dueling=m.dueling,
        noisy=m.noisy,
        noisy_sigma0=m.noisy_sigma0,
        num_atoms=m.num_atoms if cfg.agent.loss == "c51" else 1,
        v_min=m.v_min,
        v_max=m.v_max,
    )


@dataclass(frozen=True)
class StepConstants:
    """Config values read on every agent step or update, copied out of the config once.

    An OmegaConf attribute read costs about 16 us; the hot loop reads about 20 per update,
    which is 2-3 % of a DER-CNN update (docs/benchmarks.md). The config stays the source of
    truth: this is built from it in ``RainbowTask.__init__`` and never edited.
    """

    steps_per_epoch: int
    total_steps: int
    learning_starts: int
    updates_per_step: float
    reward_clip: bool
    life_loss_terminal: bool
    noisy: bool
    double_q: bool
    grad_clip: float
    target_update_period: int
    log_every_updates: int
    epsilon_start: float
    epsilon_end: float
    epsilon_decay_steps: int
    beta_start: float
    beta_end: float
    weight_norm: str

    @classmethod
    def from_config(cls, cfg: DictConfig) -> StepConstants:
        """Read the values from a validated experiment config."""
        a, r = cfg.agent, cfg.replay
        return cls(
            steps_per_epoch=int(cfg.trainer.steps_per_epoch),
            total_steps=int(cfg.train.total_steps),
            learning_starts=int(a.learning_starts),
            updates_per_step=float(a.updates_per_step),
            reward_clip=bool(cfg.env.reward_clip),
            life_loss_terminal=bool(cfg.env.life_loss_terminal),
            noisy=bool(cfg.model.noisy),
            double_q=bool(a.double_q),
            grad_clip=float(cfg.optim.grad_clip),
            target_update_period=int(a.target_update_period),
            log_every_updates=int(cfg.trainer.log_every_updates),
            epsilon_start=float(a.epsilon_start),
            epsilon_end=float(a.epsilon_end),
            epsilon_decay_steps=int(a.epsilon_decay_steps),
            beta_start=float(r.beta_start),
            beta_end=float(r.beta_end),
            weight_norm=str(r.weight_norm),
        )


def env_seed(seed: int, rank: int, restart: int = 0) -> int:
    """Seed of env 0 of a rank: ranks and restarts (resumes) get disjoint seed ranges."""
    return seed * 1_000_003 + rank * 10_007 + restart * 101


class ReplayStream:
    """The training "dataloader": collect, store n-step transitions, sample prioritized batches.

    One iteration is one Lightning epoch of ``steps_per_epoch`` agent steps (or until the
    budget ``total_steps`` is reached). Agent steps count transitions over all envs of the rank.
    Before ``learning_starts`` nothing is yielded; afterwards each collected agent step adds
    ``updates_per_step`` update credits and every whole credit yields one sampled batch.
    """

    def __init__(
        self,
        task: RainbowTask,
        collector: Collector,
        accumulator: NStepAccumulator,
        replay: TensorDictPrioritizedReplayBuffer,
    ) -> None:
        self.task = task
        self.collector = collector
        self.accumulator = accumulator
        self.replay = replay
        self._it: Iterator | None = None

    def __iter__(self) -> Iterator[TensorDict]:
        task, k = self.task, self.task.k
        if self._it is None:
            self._it = iter(self.collector)
        epoch_end = min(
            (task.env_steps // k.steps_per_epoch + 1) * k.steps_per_epoch, k.total_steps
        )
        while task.env_steps < epoch_end:
            t0 = time.perf_counter()
            batch = next(self._it)  # [N, T]
            task.collect_time += time.perf_counter() - t0
            self._store(batch)
            task.env_steps += batch.numel()
            task.actor.epsilon = task.epsilon()
            if task.env_steps <= k.learning_starts or len(self.replay) == 0:
                continue  # updates start with the first agent step after learning_starts
            task.update_credit += batch.numel() * k.updates_per_step
            while task.update_credit >= 1.0:
                task.update_credit -= 1.0
                task.replay_beta(self.replay)
                yield self.replay.sample()

    def _store(self, batch: TensorDict) -> None:
        k = self.task.k
        nxt = batch["next"]
        reward = nxt["reward"].squeeze(-1)
        if k.reward_clip:
            reward = reward.sign()
        terminal = nxt["terminated"].squeeze(-1)
        if k.life_loss_terminal:
            terminal = terminal | nxt["life_lost"].squeeze(-1)
        done = nxt["done"].squeeze(-1)
        ready = self.accumulator.push(
            batch["pixels"], batch["action"], reward, terminal, done, nxt["pixels"]
        )
        if ready.batch_size[0] > 0:  # (TensorDict.numel() is 1 for an empty batch)
            self.replay.extend(ready)
        if done.any():
            returns = nxt["episode_return"].squeeze(-1)[done]
            lengths = nxt["episode_length"].squeeze(-1)[done]
            for ret, length in zip(returns.tolist(), lengths.tolist(), strict=True):
                self.task.record_episode(ret, int(length))


class RainbowTask(L.LightningModule):
    """Rainbow (DER or Fast-Rainbow profile, any extractor) trained from a TorchRL collector.

    Args:
        cfg: the validated experiment config (``ife_platform.config.compose``). This class is
            the composition root: it turns config groups into explicit constructor arguments.
    """

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.k = StepConstants.from_config(cfg)
        spec = atari_spec(cfg.env.game, cfg.env.full_action_space)
        self.num_actions = spec.num_actions
        torch.manual_seed(cfg.seed)  # initial weights: same seed -> same network on every rank
        agent = get_agent(cfg.agent.name)  # the registry's builder (a registered agent's own)
        self.online = agent.build_network(cfg, spec.num_actions)
        self.target = agent.build_network(cfg, spec.num_actions)
        self.target.load_state_dict(self.online.state_dict())
        self.target.requires_grad_(False)
        self.actor = Actor(self.online, epsilon=cfg.agent.epsilon_start, seed=cfg.seed)
        # Counters (checkpointed). Agent steps are per rank.
        self.env_steps = 0
        self.updates = 0
        self.episodes = 0
        self.update_credit = 0.0
        self.restarts = 0
        self.collect_time = 0.0
        self.recent_returns: deque[float] = deque(maxlen=20)
        self._stream: ReplayStream | None = None
        self._last_log: tuple[float, int, int] | None = None
        self._pending_episodes: list[tuple[float, int]] = []
        self.run_id: str | None = None  # MLflow run, stored in checkpoints

    # -- schedules ---------------------------------------------------------------------------
    def epsilon(self) -> float:
        """Exploration rate at the current agent step (linear decay)."""
        k = self.k
        return linear_schedule(
            k.epsilon_start, k.epsilon_end, k.epsilon_decay_steps, self.env_steps
        )

    def replay_beta(self, replay: TensorDictPrioritizedReplayBuffer) -> float:
        """Anneal the importance-sampling exponent beta (Schaul et al. 2016, Algorithm 1).

        Linear from ``beta_start`` at ``learning_starts`` (the first update) to ``beta_end``
        at ``total_steps``, as Kaixhin/Rainbow's ``priority_weight_increase`` does.
        """
        k = self.k
        beta = linear_schedule(
            k.beta_start,
            k.beta_end,
            k.total_steps - k.learning_starts,
            self.env_steps - k.learning_starts,
        )
        replay.sampler.beta = beta
        return beta

    # -- data --------------------------------------------------------------------------------
    def build_replay(self) -> TensorDictPrioritizedReplayBuffer:
        """Prioritized replay over a lazily allocated tensor storage (uint8 pixels stay uint8)."""
        r = self.cfg.replay
        return TensorDictPrioritizedReplayBuffer(
            alpha=r.alpha,
            beta=r.beta_start,
            eps=r.priority_eps,
            priority_key="td_error",
            storage=GatherTensorStorage(r.capacity),
            batch_size=self.cfg.agent.batch_size,
            generator=torch.Generator().manual_seed(self.cfg.seed + 7919 * self.global_rank),
        )

    def build_stream(self) -> ReplayStream:
        """Env, collector, n-step accumulator and replay of this rank."""
        e = self.cfg.env
        env = AtariVecEnv(
            e.game,
            e.num_envs,
            seed=env_seed(self.cfg.seed, self.global_rank, self.restarts),
            sticky_actions=e.sticky_actions,
            full_action_space=e.full_action_space,
            noop_max=e.noop_max,
            frame_skip=e.frame_skip,
            frame_stack=e.frame_stack,
            max_episode_frames=e.max_episode_frames,
            fire_reset=e.fire_reset,
            num_threads=e.num_threads,
        )
        policy = TensorDictModule(self.actor, in_keys=["pixels"], out_keys=["action"])
        collector = Collector(
            env,
            policy,
            frames_per_batch=e.num_envs,  # one vector step per batch: act, store, learn
            total_frames=-1,
            trust_policy=True,
            auto_register_policy_transforms=False,  # the actor is stateless: no InitTracker
            **COLLECTOR_KWARGS,
        )
        accumulator = NStepAccumulator(e.num_envs, self.cfg.agent.n_step, self.cfg.agent.gamma)
        return ReplayStream(self, collector, accumulator, self.replay or self.build_replay())

    replay: TensorDictPrioritizedReplayBuffer | None = None

    def on_fit_start(self) -> None:  # noqa: D102
        seed = self.cfg.seed + 1000 * self.global_rank
        if not self._restored_rng:  # a resumed run continues the RNG streams it saved
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            self.actor.generator.manual_seed(seed)
        self._stream = self.build_stream()
        self.replay = self._stream.replay
        if self._replay_dir is not None:
            folder = Path(self._replay_dir.format(rank=self.global_rank))
            if not folder.is_dir():
                raise FileNotFoundError(f"the checkpoint's replay buffer is missing: {folder}")
            self.replay.loads(folder)
        elif self._restored_rng:
            log.warning(
                "resuming without a saved replay buffer: it refills from empty "
                "(set replay.save_buffer=true to checkpoint it)"
            )

    _restored_rng = False

    def train_dataloader(self) -> Any:  # noqa: D102
        # Lightning accepts any iterable; the stream is built in on_fit_start (module on device).
        return _LazyIterable(self)

    def on_fit_end(self) -> None:  # noqa: D102
        if self._stream is not None:
            self._stream.collector.shutdown()

    def record_episode(self, ret: float, length: int) -> None:
        """Called by the stream for every finished game (raw, unclipped score)."""
        self.episodes += 1
        self.recent_returns.append(ret)
        self._pending_episodes.append((ret, length))

    # -- learning ----------------------------------------------------------------------------
    def _loss(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        obs, next_obs = batch["obs"], batch["next_obs"]
        action = batch["action"].long()
        reward, discount = batch["reward"].float(), batch["discount"].float()
        weights = importance_weights(batch["priority_weight"], self.k.weight_norm)
        if self.k.noisy:
            self.online.reset_noise()
        out = self.online(obs)  # [B, A, K] log-probs or [B, A] Q
        mask = self.online.attention_mask
        with torch.no_grad():
            # The online net selects next actions with the noise of this update (resampling it
            # in place would invalidate the graph above); the target net draws its own noise.
            if self.k.noisy:
                self.target.reset_noise()
            online_next = self.online(next_obs) if self.k.double_q else None
            target_next = self.target(next_obs)
            if online_next is None:
                online_next = target_next
        if self.online.distributional:
            terms = categorical_double_q_loss(
                out.float(),
                action,
                online_next.float(),
                target_next.float(),
                reward,
                discount,
                self.online.support,
                weights,
            )
        else:
            terms = huber_double_q_loss(
                out.float(),
                action,
                online_next.float(),
                target_next.float(),
                reward,
                discount,
                weights,
            )
        terms["is_weight_mean"] = weights.mean()
        if mask is not None:
            m = mask.detach().flatten(1).float()
            terms["mask_entropy"] = -(m * (m + 1e-12).log()).sum(-1).mean()
        return terms

    def training_step(self, batch: TensorDict, batch_idx: int) -> dict[str, torch.Tensor]:  # noqa: D102
        opt = self.optimizers()
        batch = batch.to(self.device)
        terms = self._loss(batch)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(terms["loss"])
        self.clip_gradients(opt, gradient_clip_val=self.k.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        self.updates += 1
        # New priorities from this batch's TD errors (|TD| or the C51 cross-entropy).
        batch.set("td_error", terms["td_error"].detach().float().cpu())
        self.replay.update_tensordict_priority(batch.cpu())
        if self.updates % self.k.target_update_period == 0:
            self.target.load_state_dict(self.online.state_dict())
        if self.updates % self.k.log_every_updates == 0 or self.updates == 1:
            self._log_progress(terms)
        # Returned for observers (callbacks' on_train_batch_end); nothing downstream optimises it.
        return {k: v.detach() for k, v in terms.items() if v.ndim == 0}

    def _log_progress(self, terms: dict[str, torch.Tensor]) -> None:
        now = time.perf_counter()
        if self._last_log is None:
            sps = ups = 0.0
        else:
            t, steps, updates = self._last_log
            sps = (self.env_steps - steps) / max(now - t, 1e-9)
            ups = (self.updates - updates) / max(now - t, 1e-9)
        self._last_log = (now, self.env_steps, self.updates)
        metrics = {k: v.detach().float() for k, v in terms.items() if v.ndim == 0}
        metrics.update(
            env_steps=float(self.env_steps),
            updates=float(self.updates),
            epsilon=self.actor.epsilon,
            beta=float(self.replay.sampler.beta),
            replay_size=float(len(self.replay)),
        )
        # The priorities behind the importance weights (stored p^alpha, whole buffer): a
        # near-zero minimum is what shrank every update under buffer-wide normalisation.
        p_min, p_median, p_max = priority_quantiles(self.replay)
        metrics.update(priority_min=p_min, priority_median=p_median, priority_max=p_max)
        if sps > 0:
            metrics.update(steps_per_s=sps, updates_per_s=ups)
        # Every MLflow metric of the platform uses agent steps as its x-axis (not updates).
        if self.logger is not None and self.global_rank == 0:
            self.logger.log_metrics(
                {f"train/{k}": float(v) for k, v in metrics.items()}, step=self.env_steps
            )
        self.log("sps", sps, prog_bar=True, logger=False, rank_zero_only=True)
        if self.recent_returns:
            self.log("return", float(np.mean(self.recent_returns)), prog_bar=True, logger=False)
        self._flush_episodes()

    def _flush_episodes(self) -> None:
        if not self._pending_episodes or self.logger is None or self.global_rank != 0:
            self._pending_episodes.clear()
            return
        game = self.cfg.env.game
        for ret, length in self._pending_episodes:
            metrics = {"episode/return": ret, "episode/length": float(length)}
            if has_reference(game):
                metrics["episode/hns"] = human_normalized_score(game, ret)
            self.logger.log_metrics(metrics, step=self.env_steps)
        self._pending_episodes.clear()

    def configure_optimizers(self) -> torch.optim.Optimizer:  # noqa: D102
        # Frozen parameters (continual transfer modes) are left out by make_adam.
        return make_adam(self.online.parameters(), self.cfg.optim)

    # -- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:  # noqa: D102
        checkpoint["ife"] = {
            "config": to_container(self.cfg),
            "run_id": self.run_id,
            "num_actions": self.num_actions,
            "counters": {
                "env_steps": self.env_steps,
                "updates": self.updates,
                "episodes": self.episodes,
                "update_credit": self.update_credit,
                "restarts": self.restarts,
            },
            "rng": {**rng_state(), "actor": self.actor.generator.get_state()},
            "recent_returns": list(self.recent_returns),
            "replay_dir": self._dump_replay(),
        }

    def _dump_replay(self) -> str | None:
        """With ``replay.save_buffer``, write this rank's buffer beside the checkpoints.

        Costs ``capacity`` x ~56 KB on disk (the whole storage is written, uint8 obs and next_obs
        plus priorities). Returns the folder name pattern (``{rank}`` filled in per rank).
        """
        ckpt_cb = getattr(self.trainer, "checkpoint_callback", None) if self._trainer else None
        if not self.cfg.replay.save_buffer or self.replay is None or ckpt_cb is None:
            return None
        pattern = str(Path(ckpt_cb.dirpath) / "replay_rank{rank}")
        final = Path(pattern.format(rank=self.global_rank))
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.replay.dumps(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)  # a crash mid-dump never leaves a half-written buffer under the name
        return pattern

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:  # noqa: D102
        state = checkpoint["ife"]
        c = state["counters"]
        self.env_steps, self.updates = int(c["env_steps"]), int(c["updates"])
        self.episodes, self.update_credit = int(c["episodes"]), float(c["update_credit"])
        # Env emulator state is not restorable: games restart, with fresh seeds per restart.
        self.restarts = int(c["restarts"]) + 1
        rng = state["rng"]
        restore_rng(rng)
        self.actor.generator.set_state(rng["actor"])
        self._restored_rng = True
        self.recent_returns.extend(state["recent_returns"])
        self._replay_dir = state.get("replay_dir")

    _replay_dir: str | None = None


class _LazyIterable:
    """Defers to the task's stream, which exists only once fitting has started."""

    def __init__(self, task: RainbowTask) -> None:
        self.task = task

    def __iter__(self) -> Iterator[TensorDict]:
        assert self.task._stream is not None, "on_fit_start builds the stream"
        return iter(self.task._stream)
