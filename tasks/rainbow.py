"""Rainbow as a LightningModule: TorchRL collector -> n-step -> prioritized replay -> loss.

The data path, in order (one place each):

1. ``AtariVecEnv`` (ale-py native vector env) steps ``env.num_envs`` games;
2. a TorchRL ``Collector`` (:class:`~ife_platform.collector.VectorStepCollector`) runs the
   :class:`~ife_platform.rainbow.agent.Actor` on it and yields ``[num_envs, T]`` batches;
3. :class:`~ife_platform.rainbow.dedup.FrameNStepAccumulator` turns them into n-step
   transitions (sign-clipped rewards, life loss terminal for learning when the protocol says
   so), writing every new frame once into the replay's frame ring;
4. a TorchRL ``TensorDictPrioritizedReplayBuffer`` over a
   :class:`~ife_platform.rainbow.dedup.FrameStackStorage` stores them (frame references per
   transition; sampled batches rebuild the uint8 ``obs`` / ``next_obs`` stacks);
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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ife_platform.tasks.base import AgentTask, Collected, finished_episodes
from omegaconf import DictConfig
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.collectors import Collector
from torchrl.data import TensorDictPrioritizedReplayBuffer

from ife_platform.collector import VectorStepCollector
from ife_platform.compiled import no_grad_forward
from ife_platform.envs import AtariVecEnv, train_max_episode_frames
from ife_platform.extractors import extractor_kwargs
from ife_platform.extractors.base import mask_entropy
from ife_platform.optim import make_adam
from ife_platform.precision import autocast_dtype
from ife_platform.rainbow.agent import Actor, QNetwork, build_q_network, linear_schedule
from ife_platform.rainbow.dedup import FrameNStepAccumulator, FrameStackStorage, frame_ring_size
from ife_platform.rainbow.losses import categorical_double_q_loss, huber_double_q_loss
from ife_platform.rainbow.replay import importance_weights, priority_quantiles
from ife_platform.rainbow.snapshot import load_replay, save_replay, snapshot_name
from ife_platform.seeding import TORCH_SEED_BITS, fold_seed

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
    grad_clip: float | None  # None: no clipping
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
            grad_clip=None if cfg.optim.grad_clip is None else float(cfg.optim.grad_clip),
            target_update_period=int(a.target_update_period),
            log_every_updates=int(cfg.trainer.log_every_updates),
            epsilon_start=float(a.epsilon_start),
            epsilon_end=float(a.epsilon_end),
            epsilon_decay_steps=int(a.epsilon_decay_steps),
            beta_start=float(r.beta_start),
            beta_end=float(r.beta_end),
            weight_norm=str(r.weight_norm),
        )


class ReplayStream:
    """The training "dataloader": collect, store n-step transitions, sample prioritized batches.

    One iteration is one Lightning epoch of ``steps_per_epoch`` agent steps (or until the
    budget ``total_steps`` is reached). After every collected vector step the stream reports
    what it collected (:class:`~ife_platform.tasks.base.Collected`) to the task, which counts
    it and answers how many updates are now due (:meth:`RainbowTask.on_collected`); the
    stream yields one sampled batch per update.
    """

    def __init__(
        self,
        task: RainbowTask,
        collector: Collector,
        accumulator: FrameNStepAccumulator,
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
            seconds = time.perf_counter() - t0
            episodes = self.store(batch)
            due = task.on_collected(Collected(batch.numel(), seconds, episodes))
            due = due if len(self.replay) else 0
            if not due:  # no batch, so no batch end where Lightning would see a stop signal
                task.stop_if_signalled()
            for _ in range(due):
                task.replay_beta(self.replay)
                yield self.replay.sample()

    def store(self, batch: TensorDict) -> list[tuple[float, int]]:
        """Push one collected vector step through the n-step accumulator into the replay.

        Returns the (raw score, length) of the games that ended in it.
        """
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
        return finished_episodes(batch)


class RainbowTask(AgentTask):
    """Rainbow (DER or Fast-Rainbow profile, any extractor) trained from a TorchRL collector.

    Args:
        cfg: the validated experiment config (``ife_platform.config.compose``). This class is
            the composition root: it turns config groups into explicit constructor arguments.
    """

    counter_names = (*AgentTask.counter_names, "update_credit")

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.k = StepConstants.from_config(cfg)
        self.online = self.build_network()
        self.target = self.build_network()
        self.target.load_state_dict(self.online.state_dict())
        self.target.requires_grad_(False)
        # trainer.compile: the forwards without gradients (acting, double-Q targets) compiled
        self.no_grad_forward = no_grad_forward(bool(cfg.trainer.compile))
        self.actor = Actor(
            self.online,
            epsilon=cfg.agent.epsilon_start,
            seed=cfg.seed,
            forward=self.no_grad_forward,
        )
        self.update_credit = 0.0  # updates owed to collected steps (replay ratio), checkpointed
        self.collect_time = 0.0
        self._stream: ReplayStream | None = None

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

    def on_collected(self, report: Collected) -> int:
        """Count a collected vector step; returns the number of updates now due.

        Updates start with the first agent step after ``learning_starts``; every collected
        step then owes ``updates_per_step`` updates (the replay ratio), paid in whole updates.
        """
        super().on_collected(report)
        self.collect_time += report.seconds
        self.actor.epsilon = self.epsilon()
        if self.env_steps <= self.k.learning_starts:
            return 0
        self.update_credit += report.steps * self.k.updates_per_step
        due = int(self.update_credit)
        self.update_credit -= due
        return due

    # -- data --------------------------------------------------------------------------------
    def build_replay(self, frame_device: str = "cpu") -> TensorDictPrioritizedReplayBuffer:
        """Prioritized replay over a frame-deduplicated storage (each uint8 frame stored once).

        Args:
            frame_device: where the frame ring lives (the GPU check samples from a GPU ring).
        """
        r, e = self.cfg.replay, self.cfg.env
        ring = frame_ring_size(r.capacity, e.num_envs, self.cfg.agent.n_step, e.frame_stack)
        return TensorDictPrioritizedReplayBuffer(
            alpha=r.alpha,
            beta=r.beta_start,
            eps=r.priority_eps,
            priority_key="td_error",
            storage=FrameStackStorage(
                r.capacity,
                frame_stack=e.frame_stack,
                num_envs=e.num_envs,
                ring_size=ring,
                device=frame_device,
                blank_before_life_start=r.blank_before_life_start,
            ),
            batch_size=self.cfg.agent.batch_size,
            generator=torch.Generator().manual_seed(
                fold_seed(self.cfg.seed + 7919 * self.global_rank, TORCH_SEED_BITS)
            ),
        )

    def build_stream(self) -> ReplayStream:
        """Env, collector, n-step accumulator and replay of this rank."""
        e = self.cfg.env
        env = AtariVecEnv(
            e.game,
            e.num_envs,
            seed=self.env_seed(),
            sticky_actions=e.sticky_actions,
            full_action_space=e.full_action_space,
            noop_max=e.noop_max,
            frame_skip=e.frame_skip,
            frame_stack=e.frame_stack,
            max_episode_frames=train_max_episode_frames(e),
            fire_reset=e.fire_reset,
            fire_on_life_loss=e.fire_on_life_loss,
            num_threads=e.num_threads,
        )
        policy = TensorDictModule(self.actor, in_keys=["pixels"], out_keys=["action"])
        collector = VectorStepCollector(
            env,
            policy,
            frames_per_batch=e.num_envs,  # one vector step per batch: act, store, learn
            total_frames=-1,
            trust_policy=True,
            auto_register_policy_transforms=False,  # the actor is stateless: no InitTracker
            **COLLECTOR_KWARGS,
        )
        replay = self.replay or self.build_replay()
        accumulator = FrameNStepAccumulator(
            e.num_envs, self.cfg.agent.n_step, self.cfg.agent.gamma, replay.storage
        )
        return ReplayStream(self, collector, accumulator, replay)

    replay: TensorDictPrioritizedReplayBuffer | None = None

    def seed_extra(self, seed: int) -> None:  # noqa: D102
        self.actor.generator.manual_seed(seed)

    def on_fit_start(self) -> None:  # noqa: D102
        self.seed_everything()
        # Lightning autocasts training_step; the collector's forwards get the same precision.
        if self._trainer is not None:  # (contract tests drive the hooks without a Trainer)
            self.actor.autocast_dtype = autocast_dtype(str(self._trainer.precision))
        self._stream = self.build_stream()
        self.replay = self._stream.replay
        if self._replay_step is not None:
            self._load_replay(self._replay_step)
        elif self._restored_rng:
            log.warning(
                "resuming without a saved replay buffer: it refills from empty "
                "(set replay.save_buffer=true to checkpoint it)"
            )

    def train_dataloader(self) -> Any:  # noqa: D102
        # Lightning accepts any iterable; the stream is built in on_fit_start (module on device).
        return _LazyIterable(self)

    def on_fit_end(self) -> None:  # noqa: D102
        if self._stream is not None:
            self._stream.collector.shutdown()

    # -- learning ----------------------------------------------------------------------------
    def loss(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        """Loss terms of one sampled batch.

        ``loss`` (what is optimised), ``loss_ce`` or ``loss_huber``, ``td_error`` (the new
        priorities), ``q_mean``, ``is_weight_mean`` and, with attention, ``mask_entropy``.
        """
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
            forward = self.no_grad_forward
            online_next = forward(self.online, next_obs) if self.k.double_q else None
            target_next = forward(self.target, next_obs)
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
            terms["mask_entropy"] = mask_entropy(mask)
        return terms

    def training_step(self, batch: TensorDict, batch_idx: int) -> dict[str, torch.Tensor]:  # noqa: D102
        opt = self.optimizers()
        batch = batch.to(self.device)
        terms = self.loss(batch)
        if not self.guarded_step(
            opt, terms["loss"], {"td_error": terms["td_error"]}, self.k.grad_clip
        ):
            return None  # dropped (train.nan_policy=skip_batch): no priorities, no count
        self.updates += 1
        # New priorities from this batch's TD errors (|TD| or the C51 cross-entropy).
        batch.set("td_error", terms["td_error"].detach().float().cpu())
        self.replay.update_tensordict_priority(batch.cpu())
        if self.updates % self.k.target_update_period == 0:
            self.target.load_state_dict(self.online.state_dict())
        if self.should_log():
            # The priorities behind the importance weights (stored p^alpha, whole buffer): a
            # near-zero minimum is what shrank every update under buffer-wide normalisation.
            p_min, p_median, p_max = priority_quantiles(self.replay)
            self.log_progress(
                terms,
                {
                    "epsilon": self.actor.epsilon,
                    "beta": float(self.replay.sampler.beta),
                    "replay_size": float(len(self.replay)),
                    "priority_min": p_min,
                    "priority_median": p_median,
                    "priority_max": p_max,
                },
            )
        # Returned for observers (callbacks' on_train_batch_end); nothing downstream optimises it.
        return {k: v.detach() for k, v in terms.items() if v.ndim == 0}

    def configure_optimizers(self) -> torch.optim.Optimizer:  # noqa: D102
        # Frozen parameters (continual transfer modes) are left out by make_adam.
        return make_adam(self.online.parameters(), self.cfg.optim)

    # -- checkpoints -------------------------------------------------------------------------
    def extra_rng_state(self) -> dict[str, Any]:  # noqa: D102
        return {"actor": self.actor.generator.get_state()}

    def restore_extra_rng(self, rng: dict[str, Any]) -> None:  # noqa: D102
        self.actor.generator.set_state(rng["actor"])

    def extra_checkpoint_state(self) -> dict[str, Any]:  # noqa: D102
        # Written before the checkpoint file itself, so a checkpoint never names a snapshot
        # that is not complete on disk.
        if not self.cfg.replay.save_buffer or self.replay is None or self.checkpoint_dir is None:
            return {}
        save_replay(
            self.replay, self.checkpoint_dir / snapshot_name(self.global_rank, self.env_steps)
        )
        return {"replay_step": self.env_steps}

    def after_checkpoint(self, folder: Path, env_steps: int) -> None:
        """Keep only this rank's replay snapshot of the newest checkpoint (it is large)."""
        keep = snapshot_name(self.global_rank, env_steps)
        for old in folder.glob(f"replay-rank{self.global_rank}-step-*.pt"):
            if old.name != keep:
                old.unlink(missing_ok=True)

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: D102
        self._replay_step = state.get("replay_step")
        if state.get("replay_dir"):
            log.warning(
                "the checkpoint names a replay folder in the old TorchRL format (%s); it is "
                "not loaded (that format unpickles files): the buffer refills from empty",
                state["replay_dir"],
            )

    def _load_replay(self, env_steps: int) -> None:
        """Load this rank's snapshot of the restored checkpoint from the run's own folder.

        The file name comes from the rank and the restored step, never from the checkpoint,
        so a checkpoint cannot point the loader at another folder.
        """
        assert self.replay is not None
        path = None
        if self.checkpoint_dir is not None:
            path = self.checkpoint_dir / snapshot_name(self.global_rank, int(env_steps))
        if path is None or not path.is_file():
            log.warning(
                "no replay snapshot for agent step %d in the run's checkpoint folder (%s): the "
                "buffer refills from empty",
                env_steps,
                self.checkpoint_dir,
            )
            return
        load_replay(self.replay, path)

    _replay_step: int | None = None


class _LazyIterable:
    """Defers to the task's stream, which exists only once fitting has started."""

    def __init__(self, task: RainbowTask) -> None:
        self.task = task

    def __iter__(self) -> Iterator[TensorDict]:
        assert self.task._stream is not None, "on_fit_start builds the stream"
        return iter(self.task._stream)
