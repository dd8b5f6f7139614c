"""Actor-critic agents (A3C-LSTM, S3TA) as a LightningModule fed by TorchRL's async collector.

The data path, in order (one place each):

1. ``agent.actors`` actor processes (``torchrl.collectors.MultiAsyncCollector``), each with its
   own :class:`~ife_platform.envs.AtariVecEnv` of ``env.num_envs`` games (one 84x84 gray frame
   per step, seeded by actor) and its own copy of the policy, :class:`RecurrentActor`. The
   actor carries the LSTM state of each of its envs across rollouts and resets it where the
   env flags ``is_init`` (the first observation of a game) and, with
   ``env.life_loss_terminal``, ``life_lost`` (the first observation of a new life). It
   writes the state it acted from and the version of its weights into every step.
2. Each actor delivers ``[num_envs, rollout]`` batches (20-step rollouts), first come first
   served. :class:`ActorCriticTask.training_step` re-runs the network over the rollout from
   the stored initial state (the same resets, :func:`rollout_flags`), computes GAE
   (Schulman et al. 2016) and the A3C loss (Mnih et al. 2016), steps Adam once and pushes
   the new weights to the actors (``update_policy_weights_``, shared memory). Policy lag =
   learner version - the version that acted, logged per batch.

The protocol follows the reference A3C-LSTM (shared/reference/agent-profiles.md; the presets
``configs/agent/a3c_lstm.yaml`` and ``s3ta.yaml``): a lost life ends the return (no bootstrap
across it) and zeroes the LSTM state, the next step presses FIRE in games with FIRE (that
step's action is the env's, not the policy's, and stays out of the policy-gradient and
entropy terms), and one env per actor makes one optimiser step per actor rollout of 20 agent
steps, the reference's update rate.

How this differs from lock-free Hogwild A3C: there, every worker computes gradients on its
own rollout and applies them to shared parameters without locks, so updates interleave and
may overwrite each other. Here actors only act; one learner computes every gradient and owns
the optimiser (shared-statistics Adam is then simply Adam), which is deterministic given the
batches, works with Lightning's loop, checkpointing, DDP and GPUs, and makes the staleness of
the acting policy explicit and measured instead of implicit. The price is that actors act
with weights up to a few updates old (the logged lag), as in A3C itself and in IMPALA-style
actor-learner setups, without IMPALA's V-trace correction.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from ife_platform.tasks.base import AgentTask, Collected, finished_episodes
from omegaconf import DictConfig
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

from ife_platform.a3c.losses import actor_critic_loss, gae
from ife_platform.a3c.supervision import ActorSupervisor, install_error_report
from ife_platform.config import to_container
from ife_platform.envs import AtariVecEnv, fire_index, train_max_episode_frames
from ife_platform.extractors.base import mask_entropy
from ife_platform.optim import make_adam
from ife_platform.registry import get_agent


def build_a3c_lstm(cfg: DictConfig, num_actions: int) -> nn.Module:
    """A3C-LSTM's network: ``cfg.model.extractor`` -> LSTM -> policy and value layers."""
    from ife_platform.a3c.model import build_actor_critic
    from ife_platform.extractors import extractor_kwargs

    return build_actor_critic(
        cfg.model.extractor,
        num_actions,
        extractor_kwargs=extractor_kwargs(cfg.model),
        hidden=cfg.agent.lstm_hidden,
    )


def build_s3ta(cfg: DictConfig, num_actions: int) -> nn.Module:
    """S3TA's network (its own vision core; ``model.extractor`` is ``s3ta``)."""
    from ife_platform.a3c.s3ta import build_s3ta as build

    return build(num_actions, hidden_size=cfg.agent.lstm_hidden)


def build_model(cfg: DictConfig, num_actions: int) -> nn.Module:
    """The actor-critic network of ``cfg.agent.name``, by its registry entry."""
    return get_agent(cfg.agent.name).build_network(cfg, num_actions)


def acting_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights with every parametrization (spectral norm) evaluated into a weight.

    Parametrized modules cannot be pickled into spawned actor processes, so actors hold a
    copy built without spectral norm; this gives it the learner's *effective* weights
    (``W / sigma`` with the current power-iteration vectors, as in an eval-mode forward;
    no power iteration runs here).
    """
    from torch.nn.utils import parametrize

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = {k: v for k, v in model.state_dict().items() if ".parametrizations." not in k}
            for name, module in model.named_modules():
                if parametrize.is_parametrized(module):
                    for pname in module.parametrizations:
                        prefix = f"{name}." if name else ""
                        out[f"{prefix}{pname}"] = getattr(module, pname).detach().clone()
    finally:
        model.train(was_training)
    return out


def build_acting_model(cfg: DictConfig, num_actions: int) -> nn.Module:
    """The actors' copy: the same network without parametrizations (see acting_state_dict)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.merge(cfg, {"model": {"spectral_norm": False}})
    return build_model(plain, num_actions)


class RecurrentActor(nn.Module):
    """The acting copy of the policy inside an actor process.

    Keeps one recurrent state per env of its actor (plain tensors, not synchronised with the
    learner), resets it where ``is_init`` is set (and, with ``reset_on_life_loss``, where
    ``life_lost`` marks the first observation of a new life), samples actions from the
    policy, and writes the state it acted from (``state_0..k``) and its weights' ``version``
    (a buffer that the learner's weight push updates with the weights).

    Args:
        model: the acting network (``initial_state``, ``step``).
        reset_on_life_loss: zero the state after a lost life too (``env.life_loss_terminal``,
            the reference A3C-LSTM); the policy then reads ``life_lost`` as a third input.
    """

    def __init__(self, model: nn.Module, *, reset_on_life_loss: bool = False) -> None:
        super().__init__()
        self.model = model
        self.reset_on_life_loss = reset_on_life_loss
        self.register_buffer("version", torch.zeros((), dtype=torch.int64))
        self._state: tuple[torch.Tensor, ...] | None = None

    @property
    def in_keys(self) -> list[str]:
        """The tensordict keys :meth:`forward` reads, in order."""
        return ["pixels", "is_init"] + (["life_lost"] if self.reset_on_life_loss else [])

    @torch.no_grad()
    def forward(
        self,
        pixels: torch.Tensor,
        is_init: torch.Tensor,
        life_lost: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Actions for ``pixels [N, 1, 84, 84]``; returns (action, version, *state before)."""
        n = pixels.shape[0]
        if self._state is None or self._state[0].shape[0] != n:
            self._state = self.model.initial_state(n, pixels.device)
        before = self._state
        first = is_init.reshape(n)
        if self.reset_on_life_loss and life_lost is not None:
            first = first | life_lost.reshape(n)
        logits, _, self._state = self.model.step(pixels, before, first)
        action = torch.multinomial(torch.softmax(logits.float(), -1), 1).squeeze(-1)
        return (action, self.version.expand(n).clone(), *before)


def rollout_flags(
    tb: TensorDict, *, life_loss_terminal: bool, fire_forced: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where a rollout's sequences start and end, and which actions the policy sampled.

    The reference A3C-LSTM (shared/reference/agent-profiles.md) wraps every game in an
    episodic-life wrapper and a fire-reset wrapper: a lost life is ``done`` for learning (no
    bootstrap across it), the LSTM state is zeroed for the next step, and FIRE is pressed in
    games with FIRE; the game itself goes on and scores are whole games.

    Args:
        tb: a time-major rollout ``[T, B]`` as the actors deliver it (root ``is_init`` and
            ``life_lost``, ``next`` ``done`` and ``life_lost``).
        life_loss_terminal: a lost life ends the return and starts a new LSTM sequence.
        fire_forced: the env pressed FIRE at the step after a lost life
            (``env.fire_on_life_loss`` in a game with FIRE).

    Returns:
        ``(first, done, sampled)``, each bool ``[T, B]``: the state is zeroed before step t;
        the return ends after step t; step t's action was sampled by the policy (False where
        the env forced FIRE).
    """
    first = tb["is_init"].squeeze(-1)
    done = tb["next", "done"].squeeze(-1)
    after_loss = tb["life_lost"].squeeze(-1)  # obs[t] is the first of a new life
    if life_loss_terminal:
        first = first | after_loss
        done = done | tb["next", "life_lost"].squeeze(-1)
    sampled = ~after_loss if fire_forced else torch.ones_like(first)
    return first, done, sampled


def make_actor_env(cfg_env: dict[str, Any], seed: int, error_dir: str | None = None) -> AtariVecEnv:
    """Env factory of one actor process (module level: it is pickled into spawned workers).

    Runs in the actor process, first thing: with ``error_dir`` it makes the process write the
    traceback that ends it there, for the learner's error (:mod:`ife_platform.a3c.supervision`).
    """
    if error_dir is not None:
        install_error_report(error_dir)
    return AtariVecEnv(
        cfg_env["game"],
        cfg_env["num_envs"],
        seed=seed,
        sticky_actions=cfg_env["sticky_actions"],
        full_action_space=cfg_env["full_action_space"],
        noop_max=cfg_env["noop_max"],
        frame_skip=cfg_env["frame_skip"],
        frame_stack=cfg_env["frame_stack"],
        max_episode_frames=train_max_episode_frames(cfg_env),
        fire_reset=cfg_env["fire_reset"],
        fire_on_life_loss=cfg_env["fire_on_life_loss"],
        num_threads=1,
    )


class ActorCriticTask(AgentTask):
    """A3C-LSTM or S3TA trained from asynchronous actor processes (see the module docstring).

    An actor process that dies stops the learner within seconds with an
    :class:`~ife_platform.a3c.supervision.ActorError` naming the actor, its exit code or
    signal and its traceback: every wait on the actors goes through an
    :class:`~ife_platform.a3c.supervision.ActorSupervisor`, and the actors are stopped when
    fit ends, fails, or the interpreter exits.

    Args:
        cfg: the validated config (``agent=a3c_lstm`` or ``agent=s3ta``).
    """

    #: The actors' env factory, ``(cfg_env, seed, error_dir) -> env``; a module-level function
    #: (it is pickled into the spawned actor processes).
    actor_env_factory = staticmethod(make_actor_env)
    #: Seconds a wait on the actors may last with every actor alive (a stall) before failing.
    actor_stall_timeout_s = 600.0

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        self.model = self.build_network()
        self._collector: Any = None
        self._supervisor: ActorSupervisor | None = None
        self._error_dir: str | None = None
        # The actors' policy template lives outside the module tree: it must not be
        # checkpointed, moved to the learner's device or counted as learner parameters.
        self._acting: dict[str, nn.Module] = {}
        self.last_lag: tuple[float, float] = (0.0, 0.0)
        e = cfg.env
        #: The actors' env presses FIRE after a lost life (the policy did not choose it).
        self.fire_forced = bool(e.fire_on_life_loss) and (
            fire_index(e.game, e.full_action_space) is not None
        )

    # The evaluation code and callbacks look for the network that acts greedily.
    @property
    def online(self) -> nn.Module:
        """The trained network (evaluation, videos, checkpoints' consumers)."""
        return self.model

    # -- data --------------------------------------------------------------------------------
    def build_collector(self) -> Any:
        """The actor processes: TorchRL's MultiAsyncCollector over one env per actor."""
        from torchrl.collectors import MultiAsyncCollector

        a, e = self.cfg.agent, self.cfg.env
        cfg_env = to_container(e)
        base = self.env_seed()  # 31 bits: also np.random.seed's range in the TorchRL workers
        self._error_dir = tempfile.mkdtemp(prefix="ife-actors-")
        makers = [
            functools.partial(self.actor_env_factory, cfg_env, base + 997 * i, self._error_dir)
            for i in range(a.actors)
        ]
        actor = RecurrentActor(
            build_acting_model(self.cfg, self.num_actions),
            reset_on_life_loss=bool(e.life_loss_terminal),
        )
        n_state = len(self.model.initial_state(1))
        policy = TensorDictModule(
            actor,
            in_keys=actor.in_keys,
            out_keys=["action", "policy_version", *[f"state_{i}" for i in range(n_state)]],
        )
        # MultiAsyncCollector sets this process's torch threads to (threads - actors), at least
        # 1, and never restores them: shutdown_collector() does.
        self._threads_before = torch.get_num_threads()
        collector = MultiAsyncCollector(
            makers,
            policy,
            frames_per_batch=e.num_envs * a.rollout,
            total_frames=-1,
            trust_policy=True,
            auto_register_policy_transforms=False,
            num_sub_threads=1,  # one torch thread per actor process: no oversubscription
            device="cpu",
        )
        self._supervisor = ActorSupervisor(
            collector.procs, self._error_dir, stall_timeout_s=self.actor_stall_timeout_s
        )
        try:
            # Worker i > 0 gets TorchRL's hash of worker i - 1's seed (< 2**32); AtariVecEnv
            # folds every seed into ale-py's 31 bits.
            self._supervisor.call("seeding the actors", collector.set_seed, base)
        except BaseException:
            self._collector = collector
            self.shutdown_collector()
            raise
        self._acting = {"actor": actor, "policy": policy}
        return collector

    def on_fit_start(self) -> None:  # noqa: D102
        self.seed_everything()
        self._collector = self.build_collector()
        self.push_weights()

    def on_fit_end(self) -> None:  # noqa: D102
        self.shutdown_collector()

    def configure_callbacks(self) -> list[L.Callback]:  # noqa: D102
        return [_StopActorsOnException()]

    def shutdown_collector(self) -> None:
        """Stop the actor processes (bounded, also with dead ones); restore torch's threads."""
        collector, self._collector = self._collector, None
        if collector is not None:
            try:
                collector.shutdown(timeout=5.0, raise_on_error=False)
            finally:
                torch.set_num_threads(self._threads_before)
        if self._supervisor is not None:
            self._supervisor.stop()
            self._supervisor = None
        if self._error_dir is not None:
            shutil.rmtree(self._error_dir, ignore_errors=True)
            self._error_dir = None

    def actors(self) -> ActorSupervisor:
        """The supervisor of the running actor processes (after :meth:`build_collector`)."""
        assert self._supervisor is not None, "build_collector first"
        return self._supervisor

    _threads_before = 1

    def train_dataloader(self) -> Any:  # noqa: D102
        return _Rollouts(self)

    def push_weights(self) -> None:
        """Copy the learner's weights and version into the actors (shared memory)."""
        assert self._acting and self._collector is not None, "build_collector first"
        actor = self._acting["actor"]
        with torch.no_grad():
            weights = acting_state_dict(self.model)
            target = actor.model.state_dict()
            if weights.keys() != target.keys():
                raise RuntimeError(f"actor/learner weights differ: {set(weights) ^ set(target)}")
            for key, dst in target.items():
                dst.copy_(weights[key].cpu())
            actor.version.fill_(self.updates)
        self.actors().call(
            "pushing weights to the actors",
            self._collector.update_policy_weights_,
            TensorDict.from_module(self._acting["policy"]),
        )

    # -- learning ----------------------------------------------------------------------------
    def loss(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        """Loss terms of one batch of rollouts ``[N envs, T steps]``.

        ``loss`` (what is optimised), ``loss_policy``, ``loss_value``, ``entropy``, the
        policy lag of the acting weights and, with attention, ``mask_entropy``.
        """
        a, e = self.cfg.agent, self.cfg.env
        tb = batch.transpose(0, 1)  # [T, N]: the rollout axis first
        obs = tb["pixels"]
        first, done, sampled = rollout_flags(
            tb, life_loss_terminal=bool(e.life_loss_terminal), fire_forced=self.fire_forced
        )
        n_state = len([k for k in batch.keys() if str(k).startswith("state_")])
        state0 = tuple(batch[f"state_{i}"][:, 0] for i in range(n_state))
        logits, values, final = self.model(obs, state0, first)
        mask = self.model.attention_mask
        nxt = tb["next"]
        reward = nxt["reward"].squeeze(-1).float()
        if e.reward_clip:
            reward = reward.clamp(-1.0, 1.0)
        with torch.no_grad():
            # V of the observation after the rollout, from the state the rollout ends in.
            _, bootstrap, _ = self.model.step(nxt["pixels"][-1], final, torch.zeros_like(done[-1]))
            advantages, returns = gae(
                reward, values.detach(), bootstrap, done.float(), a.gamma, a.gae_lambda
            )
        terms = actor_critic_loss(
            logits,
            values,
            tb["action"],
            advantages,
            returns,
            entropy_coef=a.entropy_coef,
            value_coef=a.value_coef,
            sampled=sampled,
        )
        if mask is not None:
            terms["mask_entropy"] = mask_entropy(mask)
        version = batch["policy_version"].float()
        terms["policy_lag_mean"] = self.updates - version.mean()
        terms["policy_lag_max"] = self.updates - version.min()
        return terms

    def training_step(self, batch: TensorDict, batch_idx: int) -> dict[str, torch.Tensor]:  # noqa: D102
        opt = self.optimizers()
        batch = batch.to(self.device)
        terms = self.loss(batch)
        clip = self.cfg.optim.grad_clip  # null: no clipping
        if not self.guarded_step(opt, terms["loss"], {}, None if clip is None else float(clip)):
            return None  # dropped (train.nan_policy=skip_batch); the actors keep their weights
        self.updates += 1
        self.push_weights()
        self.last_lag = (float(terms["policy_lag_mean"]), float(terms["policy_lag_max"]))
        if self.should_log():
            self.log_progress(terms)
        return {k: v.detach() for k, v in terms.items() if v.ndim == 0}

    def configure_optimizers(self) -> torch.optim.Optimizer:  # noqa: D102
        return make_adam(self.model.parameters(), self.cfg.optim)


class _Rollouts:
    """The training "dataloader": one Lightning epoch of rollouts from the actors."""

    def __init__(self, task: ActorCriticTask) -> None:
        self.task = task
        self._it: Iterator | None = None

    def __iter__(self) -> Iterator[TensorDict]:
        task, t = self.task, self.task.cfg.trainer
        assert task._collector is not None, "on_fit_start builds the collector"
        if self._it is None:
            self._it = iter(task._collector)
        end = min(
            (task.env_steps // t.steps_per_epoch + 1) * t.steps_per_epoch,
            task.cfg.train.total_steps,
        )
        while task.env_steps < end:
            # [N envs, T steps] of one actor; a dead actor raises ActorError here
            batch = task.actors().call("waiting for rollouts", next, self._it)
            task.on_collected(Collected(batch.numel(), episodes=finished_episodes(batch)))
            yield batch


class _StopActorsOnException(L.Callback):
    """Stops the actor processes when fit fails (Lightning skips ``on_fit_end`` then)."""

    def on_exception(  # noqa: D102
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(pl_module, ActorCriticTask):
            pl_module.shutdown_collector()
