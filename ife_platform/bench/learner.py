"""Section 2: learner updates/s, ``RainbowTask`` under Lightning against a bare PyTorch loop."""

from __future__ import annotations

import tempfile
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from ife_platform.bench.common import (
    interleave,
    make_raw_vector_env,
    median,
    quiet_lightning,
    variant_overrides,
)
from ife_platform.seeding import TORCH_SEED_BITS, fold_seed


def learner_config(
    extractor: str = "ife",
    *,
    game: str = "pong",
    learning_starts: int = 200,
    updates: int = 40,
    capacity: int = 10_000,
    extra: Sequence[str] = (),
):
    """The DER-profile config the learner benchmark trains (IFE width 2, batch 32, 1 env)."""
    from ife_platform.config import compose

    total = learning_starts + updates
    return compose(
        [
            "agent=rainbow_der",
            "env=atari100k",
            f"env.game={game}",
            "env.num_envs=1",
            f"model.extractor={extractor}",
            "model.width=2",
            "agent.batch_size=32",
            "agent.updates_per_step=1.0",
            f"agent.learning_starts={learning_starts}",
            f"replay.capacity={capacity}",
            f"train.total_steps={total}",
            f"trainer.steps_per_epoch={total}",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "trainer.strategy=auto",
            "trainer.precision=32-true",
            "trainer.progress_bar=false",
            *extra,
        ]
    )


def platform_learner_rate(cfg, *, warmup: int = 3, profile: str | None = None) -> float:
    """Updates/s of ``RainbowTask`` under a Lightning ``Trainer`` (as ``ife train``, no MLflow).

    The clock runs from the end of update ``warmup`` to the end of the last update; in
    between, Lightning pulls each batch from the task's stream (collect one agent step,
    n-step, replay insert, prioritized sample) and runs ``training_step``.

    Args:
        cfg: a config from :func:`learner_config`.
        warmup: updates excluded from the timing (first-call allocations).
        profile: if set, write a cProfile dump of the timed ``fit`` to this path.
    """
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from ife_platform.experiment import total_epochs, trainer_kwargs
    from ife_platform.tasks.rainbow import RainbowTask

    quiet_lightning()
    marks: list[tuple[float, int]] = []

    class Clock(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: D102
            marks.append((time.perf_counter(), pl_module.updates))

    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            max_epochs=total_epochs(cfg),
            logger=False,
            callbacks=[Clock()],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,
            default_root_dir=tmp,
            **trainer_kwargs(cfg),
        )
        task = RainbowTask(cfg)
        if profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
            trainer.fit(task)
            prof.disable()
            prof.dump_stats(profile)
        else:
            trainer.fit(task)
    if len(marks) <= warmup + 1:
        raise RuntimeError(f"only {len(marks)} updates ran; raise the number of updates")
    (t0, u0), (t1, u1) = marks[warmup], marks[-1]
    return (u1 - u0) / (t1 - t0)


class UniformReplay:
    """A plain numpy ring buffer of n-step transitions (uint8 frames), uniform sampling."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], seed: int = 0) -> None:
        import numpy as np

        self.capacity = capacity
        self.obs = np.zeros((capacity, *obs_shape), dtype=np.uint8)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=np.uint8)
        self.action = np.zeros(capacity, dtype=np.int64)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.discount = np.zeros(capacity, dtype=np.float32)
        self.size = 0
        self.pos = 0
        self.rng = np.random.default_rng(seed)

    def add(self, obs, action: int, reward: float, discount: float, next_obs) -> None:
        """Store one transition, overwriting the oldest when full."""
        i = self.pos
        self.obs[i] = obs
        self.next_obs[i] = next_obs
        self.action[i], self.reward[i], self.discount[i] = action, reward, discount
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> dict[str, Any]:
        """A uniform batch as torch tensors (frames stay uint8)."""
        import torch

        idx = self.rng.integers(0, self.size, batch_size)
        return {
            "obs": torch.from_numpy(self.obs[idx]),
            "next_obs": torch.from_numpy(self.next_obs[idx]),
            "action": torch.from_numpy(self.action[idx]),
            "reward": torch.from_numpy(self.reward[idx]),
            "discount": torch.from_numpy(self.discount[idx]),
        }


class BareNStep:
    """Minimal single-env n-step windows for the bare loop (cut at terminals and resets)."""

    def __init__(self, n: int, gamma: float) -> None:
        self.n, self.gamma = n, gamma
        self.window: deque[tuple[Any, int, float]] = deque()

    def push(self, obs, action: int, reward: float, terminal: bool, done: bool, next_obs):
        """Add a step; return the (obs, action, G, discount, next_obs) transitions now ready."""
        self.window.append((obs, action, reward))
        out = []
        if terminal or done:  # flush every open window: no bootstrap after a terminal
            while self.window:
                out.append(self._emit(next_obs, 0.0 if terminal else None))
        elif len(self.window) == self.n:
            out.append(self._emit(next_obs, None))
        return out

    def _emit(self, next_obs, discount: float | None):
        g = sum(self.gamma**k * r for k, (_, _, r) in enumerate(self.window))
        m = len(self.window)
        obs, action, _ = self.window.popleft()
        return obs, action, g, self.gamma**m if discount is None else discount, next_obs


class BareStream:
    """One raw ale-py env stepped from numpy, its steps turned into n-step transitions.

    The data path of the framework-free loops (:func:`bare_learner_rate`, the precision
    snapshot): sign-clipped rewards and life loss as a learning terminal when the config says
    so, the stored successor of a game's last step is its ``final_obs``.
    """

    def __init__(self, cfg: Any, seed: int = 0) -> None:
        a, e = cfg.agent, cfg.env
        self.reward_clip, self.life_loss_terminal = bool(e.reward_clip), bool(e.life_loss_terminal)
        self.vec = make_raw_vector_env(e.game, 1, seed=seed)
        self.nstep = BareNStep(a.n_step, a.gamma)
        self.obs, info = self.vec.reset(seed=seed)
        self.lives = info["lives"].copy()
        self.num_actions = int(self.vec.single_action_space.n)

    def step(self, action: int) -> list[tuple[Any, int, float, float, Any]]:
        """Act; return the (obs, action, G, discount, next_obs) transitions now ready."""
        import numpy as np

        next_obs, reward, terminated, truncated, info = self.vec.step(
            np.array([action], dtype=np.int64)
        )
        done = bool(terminated[0] or truncated[0])
        stored_next = info["final_obs"] if done else next_obs
        life_lost = bool(info["lives"][0] < self.lives[0]) and not done
        self.lives = info["lives"].copy()
        r = float(np.sign(reward[0])) if self.reward_clip else float(reward[0])
        terminal = bool(terminated[0]) or (self.life_loss_terminal and life_lost)
        ready = self.nstep.push(self.obs[0], action, r, terminal, done, stored_next[0])
        self.obs = next_obs
        return ready

    def close(self) -> None:
        """Close the emulators."""
        self.vec.close()


def bare_learner_rate(cfg, *, warmup: int = 3, seed: int = 0) -> float:
    """Updates/s of a framework-free loop: same network, batch, env, loss, Adam, grad clip.

    Native ``AtariVectorEnv`` with one env, acting with the online network (fresh noise per
    step, like the task's actor), n-step windows, a numpy uint8 ring-buffer replay with uniform
    sampling, the C51 (or Huber) double-Q loss, Adam and gradient-norm clipping; target sync
    every ``target_update_period`` updates. The clock runs like in
    :func:`platform_learner_rate`: from the end of update ``warmup`` to the end of the last.
    """
    import torch

    from ife_platform.envs import atari_spec
    from ife_platform.optim import make_adam
    from ife_platform.rainbow.losses import categorical_double_q_loss, huber_double_q_loss
    from ife_platform.tasks.rainbow import build_network

    a, e = cfg.agent, cfg.env
    spec = atari_spec(e.game, e.full_action_space)
    torch.manual_seed(fold_seed(cfg.seed, TORCH_SEED_BITS))
    online = build_network(cfg, spec.num_actions)
    target = build_network(cfg, spec.num_actions)
    target.load_state_dict(online.state_dict())
    target.requires_grad_(False)
    online.train()
    target.train()
    opt = make_adam(online.parameters(), cfg.optim)  # the platform's optimiser
    replay = UniformReplay(cfg.replay.capacity, (e.frame_stack, 84, 84), seed=seed)
    stream = BareStream(cfg, seed=seed)
    updates, steps, marks = 0, 0, []
    n_updates = cfg.train.total_steps - a.learning_starts
    weights = torch.ones(a.batch_size)
    try:
        while updates < n_updates:
            with torch.no_grad():
                if cfg.model.noisy:
                    online.reset_noise()
                action = int(online.q_values(torch.from_numpy(stream.obs)).argmax(-1)[0])
            for t in stream.step(action):
                replay.add(*t)
            steps += 1
            if steps <= a.learning_starts or replay.size == 0:
                continue
            b = replay.sample(a.batch_size)
            if cfg.model.noisy:
                online.reset_noise()
            out = online(b["obs"])
            with torch.no_grad():
                if cfg.model.noisy:
                    target.reset_noise()
                online_next = online(b["next_obs"])
                target_next = target(b["next_obs"])
            if online.distributional:
                terms = categorical_double_q_loss(
                    out,
                    b["action"],
                    online_next,
                    target_next,
                    b["reward"],
                    b["discount"],
                    online.support,
                    weights,
                )
            else:
                terms = huber_double_q_loss(
                    out,
                    b["action"],
                    online_next,
                    target_next,
                    b["reward"],
                    b["discount"],
                    weights,
                )
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if cfg.optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(online.parameters(), cfg.optim.grad_clip)
            opt.step()
            updates += 1
            if updates % a.target_update_period == 0:
                target.load_state_dict(online.state_dict())
            marks.append((time.perf_counter(), updates))
    finally:
        stream.close()
    (t0, u0), (t1, u1) = marks[warmup], marks[-1]
    return (u1 - u0) / (t1 - t0)


def bench_learner(
    extractor: str = "ife",
    *,
    updates: int = 40,
    rounds: int = 3,
    learning_starts: int = 200,
    warmup: int = 3,
    game: str = "pong",
    precisions: Sequence[str] = ("32-true",),
) -> dict[str, Any]:
    """Platform vs bare-loop updates/s for one extractor, interleaved, medians.

    The bare loop runs in fp32; the platform runs once per entry of ``precisions`` (Lightning
    names, resolved for this CPU as ``ife train`` does; ``+compile`` adds
    ``trainer.compile=true``, :func:`~ife_platform.bench.common.variant_overrides`).
    ``ratio`` is the fp32 platform against the bare loop; every other precision gets
    ``speedup``, its rate over the fp32 platform's.
    """
    from ife_platform.precision import resolve_precision

    cfgs = {
        p: learner_config(
            extractor,
            game=game,
            learning_starts=learning_starts,
            updates=updates,
            extra=variant_overrides(p),
        )
        for p in dict.fromkeys(("32-true", *precisions))
    }
    label = "platform (RainbowTask + Lightning)"
    variants = {
        (label if p == "32-true" else f"{label}, {p}"): (
            lambda cfg=cfg: platform_learner_rate(cfg, warmup=warmup)
        )
        for p, cfg in cfgs.items()
    }
    variants["bare PyTorch loop"] = lambda: bare_learner_rate(cfgs["32-true"], warmup=warmup)
    results = interleave(variants, rounds)
    platform_rate = median(results[label])
    bare_rate = median(results["bare PyTorch loop"])
    out: dict[str, Any] = {
        "extractor": extractor,
        "game": game,
        "updates_per_sample": updates,
        "learning_starts": learning_starts,
        "rounds": rounds,
        "platform_updates_per_s": platform_rate,
        "bare_updates_per_s": bare_rate,
        "ratio": platform_rate / bare_rate,
        "precisions": {},
        "samples": results,
    }
    for p in cfgs:
        if p == "32-true":
            continue
        rate = median(results[f"{label}, {p}"])
        out["precisions"][p] = {
            "resolved": resolve_precision(p.split("+")[0], "cpu"),
            "platform_updates_per_s": rate,
            "speedup": rate / platform_rate,
        }
    return out
