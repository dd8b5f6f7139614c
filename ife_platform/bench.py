"""``ife bench``: the platform's throughput against framework-free baselines, side by side.

Three measurements, each run in one process on one machine so that the ratios are fair:

1. **Env steps/s**: ale-py's native ``AtariVectorEnv`` stepped from numpy (the raw emulator
   speed) against the platform's TorchRL ``Collector`` over :class:`~ife_platform.envs.AtariVecEnv`
   (same settings, a random policy wrapped like the task's actor), with the training
   ``frames_per_batch`` (one vector step per batch) and with a larger one.
2. **Learner updates/s**: the real training loop (:class:`~ife_platform.tasks.rainbow.RainbowTask`
   under a Lightning ``Trainer``, past ``learning_starts``, one update per agent step) against
   a bare PyTorch loop with the same network, batch, env, loss and optimiser, but a numpy
   uint8 ring-buffer replay with uniform sampling. Both sides include env stepping, acting,
   replay insertion, sampling and the update.
3. **Replay bytes per transition**: the replay built as ``RainbowTask.build_replay`` does,
   filled through the training data path, measured from its storage tensors.

Measurements of the two sides of a comparison are interleaved (A, B, A, B, ...) and medians
reported, which cancels most of the drift of a shared, noisy machine.

Usage::

    ife bench [--quick] [--sections env,learner,replay] [--json PATH] [...]
    python -m ife_platform.bench --help
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: uint8 obs + next_obs of one transition, [4, 84, 84] each: the replay's floor.
PIXEL_BYTES_PER_TRANSITION = 2 * 4 * 84 * 84

ENV_RATIO_TARGET = 0.8
LEARNER_RATIO_TARGET = 0.9


# --------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """CPU model, cores, library versions, torch threads and the load average now."""
    import ale_py
    import lightning
    import tensordict
    import torch
    import torchrl

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchrl": torchrl.__version__,
        "tensordict": tensordict.__version__,
        "ale_py": ale_py.__version__,
        "lightning": lightning.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_parallel_backend": "OpenMP"
        if "OpenMP" in torch.__config__.parallel_info()
        else "other",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp spins)"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def interleave(samplers: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Call every sampler once per round, in turn; returns each sampler's list of results."""
    out: dict[str, list[float]] = {name: [] for name in samplers}
    for _ in range(rounds):
        for name, sample in samplers.items():
            out[name].append(float(sample()))
    return out


def make_raw_vector_env(game: str, num_envs: int, *, seed: int = 0, num_threads: int = 0):
    """ale-py's ``AtariVectorEnv`` with exactly the settings :class:`AtariVecEnv` uses."""
    from ale_py.vector_env import AtariVectorEnv

    from ife_platform.envs import OBS_SIZE

    vec = AtariVectorEnv(
        game,
        num_envs,
        num_threads=num_threads,
        max_num_frames_per_episode=108_000,
        repeat_action_probability=0.0,
        full_action_space=False,
        autoreset_mode="SameStep",
        img_height=OBS_SIZE,
        img_width=OBS_SIZE,
        grayscale=True,
        stack_num=4,
        frameskip=4,
        maxpool=True,
        noop_max=30,
        episodic_life=False,
        life_loss_info=False,
        reward_clipping=False,
        use_fire_reset=False,
    )
    vec.reset(seed=seed)
    return vec


class RandomActor:
    """A stand-in for the task's :class:`~ife_platform.rainbow.agent.Actor`: pixels -> actions.

    Same call signature (uint8 ``pixels [N, ...]`` in, int64 ``action [N]`` out), uniform
    random actions from its own generator, no network.
    """

    def __init__(self, num_actions: int, seed: int = 0) -> None:
        import torch

        self.num_actions = num_actions
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, pixels):
        """Random actions ``[N]`` for ``pixels [N, C, H, W]``."""
        import torch

        return torch.randint(self.num_actions, (pixels.shape[0],), generator=self.generator)


def make_platform_collector(
    env, frames_per_batch: int, *, torchrl_defaults: bool = False, seed: int = 0
):
    """A ``Collector`` over ``env`` built like ``RainbowTask.build_stream`` (random policy).

    ``torchrl_defaults=True`` leaves out the task's :data:`tasks.rainbow.COLLECTOR_KWARGS`
    (CPU device, no trajectory ids, reused output buffer), to measure what they save.
    """
    from tensordict.nn import TensorDictModule
    from torchrl.collectors import Collector

    from ife_platform.tasks.rainbow import COLLECTOR_KWARGS

    policy = TensorDictModule(
        RandomActor(env.num_actions, seed), in_keys=["pixels"], out_keys=["action"]
    )
    return Collector(
        env,
        policy,
        frames_per_batch=frames_per_batch,
        total_frames=-1,
        trust_policy=True,
        auto_register_policy_transforms=False,
        **({} if torchrl_defaults else COLLECTOR_KWARGS),
    )


# --------------------------------------------------------------------------------------------
# 1. Env throughput
# --------------------------------------------------------------------------------------------


def bench_env(
    game: str = "pong",
    num_envs: int = 8,
    *,
    vector_steps: int = 256,
    rounds: int = 5,
    big_batch_steps: int = 16,
    compare_defaults: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Env steps/s of the raw vector env and of the platform's collector, interleaved.

    Args:
        game: ale-py ROM id.
        num_envs: emulators stepped together.
        vector_steps: vector steps per measurement (a multiple of ``big_batch_steps``).
        rounds: interleaved measurements per variant; medians are reported.
        big_batch_steps: vector steps per batch of the "larger frames_per_batch" variant.
        compare_defaults: also measure the training batch size with TorchRL's default
            collector options (without ``tasks.rainbow.COLLECTOR_KWARGS``).
        seed: seed of the emulators and of the random actions.

    Returns:
        ``{"num_envs", "variants": {name: {"steps_per_s", "samples", "ratio"}}, ...}`` where
        ratio is the median rate over the raw env's median rate.
    """
    import numpy as np

    from ife_platform.envs import AtariVecEnv

    vector_steps = max(big_batch_steps, vector_steps - vector_steps % big_batch_steps)
    vec = make_raw_vector_env(game, num_envs, seed=seed)
    num_actions = int(vec.single_action_space.n)
    rng = np.random.default_rng(seed)

    def raw() -> float:
        t0 = time.perf_counter()
        for _ in range(vector_steps):
            vec.step(rng.integers(0, num_actions, num_envs))
        return vector_steps * num_envs / (time.perf_counter() - t0)

    variants: dict[str, tuple[int, bool]] = {
        f"platform fpb={num_envs} (training)": (1, False),
        f"platform fpb={num_envs * big_batch_steps}": (big_batch_steps, False),
    }
    if compare_defaults:
        variants[f"platform fpb={num_envs}, TorchRL default collector"] = (1, True)
    samplers: dict[str, Callable[[], float]] = {"raw ale-py vector env": raw}
    closers: list[Callable[[], None]] = [vec.close]
    for name, (steps_per_batch, defaults) in variants.items():
        env = AtariVecEnv(game, num_envs, seed=seed)
        collector = make_platform_collector(
            env, num_envs * steps_per_batch, torchrl_defaults=defaults, seed=seed
        )
        it = iter(collector)
        next(it)  # allocate buffers, first reset

        def sample(it=it, steps_per_batch=steps_per_batch) -> float:
            t0 = time.perf_counter()
            frames = 0
            for _ in range(vector_steps // steps_per_batch):
                frames += next(it).numel()
            return frames / (time.perf_counter() - t0)

        samplers[name] = sample
        closers.append(collector.shutdown)
    for sample in samplers.values():  # warm-up, not recorded
        sample()
    try:
        results = interleave(samplers, rounds)
    finally:
        for close in closers:
            close()
    raw_rate = _median(results["raw ale-py vector env"])
    return {
        "game": game,
        "num_envs": num_envs,
        "vector_steps_per_sample": vector_steps,
        "rounds": rounds,
        "variants": {
            name: {
                "steps_per_s": _median(values),
                "ratio": _median(values) / raw_rate,
                "samples": values,
            }
            for name, values in results.items()
        },
    }


# --------------------------------------------------------------------------------------------
# 2. Learner throughput
# --------------------------------------------------------------------------------------------


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


def _quiet_lightning() -> None:
    import logging
    import warnings

    for name in (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "pytorch_lightning",
        "torchrl",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")


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

    _quiet_lightning()
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


class _NStep:
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


def bare_learner_rate(cfg, *, warmup: int = 3, seed: int = 0) -> float:
    """Updates/s of a framework-free loop: same network, batch, env, loss, Adam, grad clip.

    Native ``AtariVectorEnv`` with one env, acting with the online network (fresh noise per
    step, like the task's actor), n-step windows, a numpy uint8 ring-buffer replay with uniform
    sampling, the C51 (or Huber) double-Q loss, Adam and gradient-norm clipping; target sync
    every ``target_update_period`` updates. The clock runs like in
    :func:`platform_learner_rate`: from the end of update ``warmup`` to the end of the last.
    """
    import numpy as np
    import torch

    from ife_platform.envs import atari_spec
    from ife_platform.optim import make_adam
    from ife_platform.rainbow.losses import categorical_double_q_loss, huber_double_q_loss
    from ife_platform.tasks.rainbow import build_network

    a, e = cfg.agent, cfg.env
    spec = atari_spec(e.game, e.full_action_space)
    torch.manual_seed(cfg.seed)
    online = build_network(cfg, spec.num_actions)
    target = build_network(cfg, spec.num_actions)
    target.load_state_dict(online.state_dict())
    target.requires_grad_(False)
    online.train()
    target.train()
    opt = make_adam(online.parameters(), cfg.optim)  # the platform's optimiser
    replay = UniformReplay(cfg.replay.capacity, (e.frame_stack, 84, 84), seed=seed)
    nstep = _NStep(a.n_step, a.gamma)
    vec = make_raw_vector_env(e.game, 1, seed=seed)
    obs, info = vec.reset(seed=seed)
    lives = info["lives"].copy()
    updates, steps, marks = 0, 0, []
    n_updates = cfg.train.total_steps - a.learning_starts
    weights = torch.ones(a.batch_size)
    try:
        while updates < n_updates:
            with torch.no_grad():
                if cfg.model.noisy:
                    online.reset_noise()
                action = int(online.q_values(torch.from_numpy(obs)).argmax(-1)[0])
            next_obs, reward, terminated, truncated, info = vec.step(
                np.array([action], dtype=np.int64)
            )
            done = bool(terminated[0] or truncated[0])
            stored_next = info["final_obs"] if done else next_obs
            life_lost = bool(info["lives"][0] < lives[0]) and not done
            lives = info["lives"].copy()
            r = float(np.sign(reward[0])) if e.reward_clip else float(reward[0])
            terminal = bool(terminated[0]) or (e.life_loss_terminal and life_lost)
            for t in nstep.push(obs[0], action, r, terminal, done, stored_next[0]):
                replay.add(*t)
            obs = next_obs
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
            torch.nn.utils.clip_grad_norm_(online.parameters(), cfg.optim.grad_clip)
            opt.step()
            updates += 1
            if updates % a.target_update_period == 0:
                target.load_state_dict(online.state_dict())
            marks.append((time.perf_counter(), updates))
    finally:
        vec.close()
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
) -> dict[str, Any]:
    """Platform vs bare-loop updates/s for one extractor, interleaved, medians."""
    cfg = learner_config(extractor, game=game, learning_starts=learning_starts, updates=updates)
    results = interleave(
        {
            "platform (RainbowTask + Lightning)": lambda: platform_learner_rate(cfg, warmup=warmup),
            "bare PyTorch loop": lambda: bare_learner_rate(cfg, warmup=warmup),
        },
        rounds,
    )
    platform_rate = _median(results["platform (RainbowTask + Lightning)"])
    bare_rate = _median(results["bare PyTorch loop"])
    return {
        "extractor": extractor,
        "game": game,
        "updates_per_sample": updates,
        "learning_starts": learning_starts,
        "rounds": rounds,
        "platform_updates_per_s": platform_rate,
        "bare_updates_per_s": bare_rate,
        "ratio": platform_rate / bare_rate,
        "samples": results,
    }


# --------------------------------------------------------------------------------------------
# 3. Replay memory
# --------------------------------------------------------------------------------------------


def storage_bytes(replay) -> dict[str, Any]:
    """Bytes of a TorchRL replay's tensor storage: per key and per transition slot.

    Sums ``element_size * numel`` over every stored tensor and divides by the capacity.
    """
    store = replay.storage
    data = store._storage  # the [capacity, ...] TensorDict LazyTensorStorage allocated
    if data is None:
        raise ValueError("the storage is still empty (LazyTensorStorage allocates on extend)")
    capacity = int(store.max_size)
    per_key = {
        "/".join(k) if isinstance(k, tuple) else k: int(v.element_size() * v.numel())
        for k, v in data.items(include_nested=True, leaves_only=True)
    }
    dtypes = {
        "/".join(k) if isinstance(k, tuple) else k: str(v.dtype).replace("torch.", "")
        for k, v in data.items(include_nested=True, leaves_only=True)
    }
    total = sum(per_key.values())
    return {
        "capacity": capacity,
        "total_bytes": total,
        "bytes_per_transition": total / capacity,
        "per_key_bytes_per_transition": {k: v / capacity for k, v in per_key.items()},
        "dtypes": dtypes,
    }


def bench_replay(
    *, transitions: int = 300, capacity: int = 1_000, game: str = "pong", extractor: str = "der_cnn"
) -> dict[str, Any]:
    """Fill the replay through the training data path and measure its bytes per transition.

    Builds a :class:`RainbowTask` (DER profile), its stream (env, collector, n-step
    accumulator, replay: ``build_stream`` / ``build_replay``), collects ``transitions`` agent
    steps and stores them exactly as ``ReplayStream`` does.
    """
    from ife_platform.tasks.rainbow import RainbowTask

    cfg = learner_config(
        extractor,
        game=game,
        learning_starts=transitions,
        updates=1,
        capacity=capacity,
        extra=("agent.n_step=3",),
    )
    task = RainbowTask(cfg)
    stream = task.build_stream()
    it = iter(stream.collector)
    try:
        for _ in range(transitions):
            stream._store(next(it))
    finally:
        stream.collector.shutdown()
    out = storage_bytes(stream.replay)
    out.update(
        stored=len(stream.replay),
        limit_bytes=PIXEL_BYTES_PER_TRANSITION,
        overhead_bytes=out["bytes_per_transition"] - PIXEL_BYTES_PER_TRANSITION,
        within_limit=out["bytes_per_transition"] <= PIXEL_BYTES_PER_TRANSITION + 64,
    )
    return out


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


def format_report(results: dict[str, Any]) -> str:
    """Plain-text tables of everything measured."""
    lines: list[str] = []
    m = results["machine"]
    lines += [
        "== machine",
        f"cpu: {m['cpu_model']} ({m['usable_cpus']} usable of {m['logical_cpus']} logical)",
        f"python {m['python']}, torch {m['torch']} ({m['torch_threads']} threads, "
        f"{m['torch_parallel_backend']}, OMP_WAIT_POLICY {m['omp_wait_policy']}), "
        f"torchrl {m['torchrl']}, tensordict {m['tensordict']}, ale-py {m['ale_py']}, "
        f"lightning {m['lightning']}",
        f"load average at start: {m['load_average']}",
    ]
    for env in results.get("env", []):
        lines += [
            "",
            f"== env steps/s, {env['game']}, {env['num_envs']} envs "
            f"(median of {env['rounds']}, {env['vector_steps_per_sample']} vector steps each; "
            f"target ratio >= {ENV_RATIO_TARGET})",
        ]
        for name, v in env["variants"].items():
            lines.append(f"  {name:40s} {_fmt_rate(v['steps_per_s']):>8s}  ratio {v['ratio']:.2f}")
    for lr in results.get("learner", []):
        lines += [
            "",
            f"== learner updates/s, {lr['extractor']} (DER profile, batch 32, 1 env; median of "
            f"{lr['rounds']}, {lr['updates_per_sample']} updates each; target ratio >= "
            f"{LEARNER_RATIO_TARGET})",
            f"  {'platform (RainbowTask + Lightning)':40s} "
            f"{_fmt_rate(lr['platform_updates_per_s']):>8s}",
            f"  {'bare PyTorch loop':40s} {_fmt_rate(lr['bare_updates_per_s']):>8s}",
            f"  {'ratio':40s} {lr['ratio']:8.2f}",
        ]
    ac = results.get("actors")
    if ac:
        lines += [
            "",
            f"== actor processes, {ac['game']}, {ac['actors']} actors x {ac['envs_per_actor']} "
            f"envs, {ac['extractor']}-LSTM policy acting (median of {ac['rounds']})",
        ]
        for name, v in ac["variants"].items():
            lines.append(f"  {name:40s} {_fmt_rate(v['steps_per_s']):>8s}  ratio {v['ratio']:.2f}")
        lines.append(
            f"  {'policy step, 1 thread, ' + str(ac['envs_per_actor']) + ' envs':40s} "
            f"{ac['policy_step_ms']:8.2f} ms"
        )
        lines.append(
            f"  {'learner updates/s':40s} {ac['learner_updates_per_s']:8.2f}"
            f"  ({ac['rollout_steps_per_update']} agent steps per update)"
        )
    ex = results.get("explain")
    if ex:
        lines += [
            "",
            f"== ife explain, {ex['game']}, {ex['extractor']} (median of {ex['rounds']}, "
            f"{ex['steps']} agent steps each; target: recording overhead <= 10 %)",
        ]
        for name, v in ex["variants"].items():
            lines.append(
                f"  {name:40s} {_fmt_rate(v['steps_per_s']):>8s} steps/s"
                f"  overhead {100 * v['overhead']:5.1f} %"
            )
        for name, v in ex["saliency"].items():
            lines.append(
                f"  {'saliency ' + name:40s} {v['frames_per_s']:8.2f} frames/s"
                f"  ({v['forwards_per_s']:.0f} forwards/s)"
            )
        an = ex.get("analysis")
        if an:
            lines.append(
                f"  analysis of one {an['steps']}-step game (defaults, no video): "
                "record s, analyse s, state KiB/step"
            )
            for name, v in an["agents"].items():
                lines.append(
                    f"  {'  ' + name:40s} {v['record_s']:8.2f} {v['analyse_s']:8.2f} "
                    f"{v['state_bytes_per_step'] / 1024:8.1f}"
                )
    rep = results.get("replay")
    if rep:
        lines += [
            "",
            f"== replay bytes per transition (capacity {rep['capacity']}, {rep['stored']} stored)",
        ]
        for k, v in rep["per_key_bytes_per_transition"].items():
            lines.append(f"  {k:40s} {v:>10,.0f}  {rep['dtypes'][k]}")
        lines += [
            f"  {'total':40s} {rep['bytes_per_transition']:>10,.0f}",
            f"  {'limit 2*4*84*84 (uint8 obs + next_obs)':40s} {rep['limit_bytes']:>10,}"
            f"  overhead {rep['overhead_bytes']:,.0f} B",
        ]
    lines += [
        "",
        f"load average at end: {results.get('load_average_end')}",
        f"wall time: {results.get('wall_s', 0):.0f} s",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# 4. Interpretability: mask recording overhead and saliency throughput
# --------------------------------------------------------------------------------------------


def bench_explain(
    game: str = "pong",
    extractor: str = "ife",
    *,
    steps: int = 300,
    rounds: int = 3,
    saliency_frames: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluation steps/s without and with ``ife explain``'s recording, and saliency frames/s.

    All variants play the same game from the same seed with the same (randomly initialised)
    network for ``steps`` agent steps, interleaved. "recording" is the ``explain`` observer
    (observation, Q-values, mask, action and the raw frame of every step); "+ objects" adds
    the builtin object boxes of every frame. The target is overhead <= 10 % for recording.
    """
    import torch

    from ife_platform.config import compose
    from ife_platform.envs import AtariEvalEnv, atari_spec
    from ife_platform.evaluation import play
    from ife_platform.interpret.explain import _Recorder
    from ife_platform.interpret.objects import object_source
    from ife_platform.interpret.perturb import saliency_benchmark
    from ife_platform.tasks.rainbow import build_network

    cfg = compose([f"env.game={game}", f"model.extractor={extractor}"])
    torch.manual_seed(seed)
    network = build_network(cfg, atari_spec(game).num_actions).eval()
    env = AtariEvalEnv(game, seed=seed)

    def rate(observer_factory: Callable[[], Any] | None) -> Callable[[], float]:
        def sample() -> float:
            observer = observer_factory() if observer_factory else None
            t0 = time.perf_counter()
            result = play(
                network,
                env,
                episodes=1,
                epsilon=0.0,
                seed=seed,
                max_steps=steps,
                observer=observer,
            )
            return sum(result.lengths) / (time.perf_counter() - t0)

        return sample

    samplers = {
        "evaluation loop": rate(None),
        "+ explain recording": rate(lambda: _Recorder(None, steps)),
        "+ recording and object boxes": rate(lambda: _Recorder(object_source(game), steps)),
    }
    for sample in samplers.values():
        sample()  # warm-up
    results = interleave(samplers, rounds)
    base = _median(results["evaluation loop"])
    out: dict[str, Any] = {
        "game": game,
        "extractor": extractor,
        "steps": steps,
        "rounds": rounds,
        "variants": {
            name: {
                "steps_per_s": _median(v),
                "overhead": base / _median(v) - 1.0,
                "samples": v,
            }
            for name, v in results.items()
        },
        "saliency": {},
    }
    for name in (extractor, "nature_cnn"):
        out["saliency"][name] = saliency_benchmark(name, frames=saliency_frames)
    return out


#: ``ife explain`` analysis cost per agent kind: (label, config overrides).
EXPLAIN_AGENTS: dict[str, list[str]] = {
    "rainbow_der ife": ["agent=rainbow_der", "model.extractor=ife"],
    "a3c_lstm ife": ["agent=a3c_lstm", "model.extractor=ife"],
    "s3ta": ["agent=s3ta"],
}


def bench_explain_agents(
    game: str = "pong",
    *,
    steps: int = 200,
    agents: Sequence[str] = tuple(EXPLAIN_AGENTS),
    seed: int = 0,
) -> dict[str, Any]:
    """Seconds of ``ife explain``'s analysis for Rainbow and recurrent agents, same settings.

    Each (untrained) agent plays one game of ``steps`` agent steps with object boxes, then
    :func:`~ife_platform.interpret.explain.analyse` runs with the default ``explain`` settings
    except the video (32 analysis frames for faithfulness and the sanity check, 4 leakage
    frames). Recurrent agents read every perturbation with the recorded state, one frame at a
    time (``interpret/probe.py``); Q-networks batch frames together.
    """
    import torch

    from ife_platform.config import agent_spec, compose
    from ife_platform.envs import AtariEvalEnv, eval_env_kwargs
    from ife_platform.interpret import explain as E
    from ife_platform.interpret.objects import object_source

    out: dict[str, Any] = {"game": game, "steps": steps, "agents": {}}
    for label in agents:
        cfg = compose([*EXPLAIN_AGENTS[label], f"env.game={game}", "explain.video=false"])
        env = AtariEvalEnv(game, seed=seed, **eval_env_kwargs(cfg))
        torch.manual_seed(seed)
        network = agent_spec(cfg.agent.name).build_network(cfg, env.num_actions).eval()
        t0 = time.perf_counter()
        rec = E.record(
            network,
            env,
            episodes=1,
            max_steps=steps,
            epsilon=0.0,
            seed=seed,
            objects=object_source(game),
            video_max_steps=0,
        )
        t1 = time.perf_counter()
        exp = E.analyse(network, rec, cfg.explain, seed=seed)
        t2 = time.perf_counter()
        out["agents"][label] = {
            "frames": len(rec),
            "record_s": t1 - t0,
            "analyse_s": t2 - t1,
            "leakage_s": exp.summary.get("leakage_seconds"),
            "analysis_frames": int(cfg.explain.analysis_frames),
            "state_bytes_per_step": sum(
                s[0].numel() * s.element_size() for s in (rec.states or ())
            ),
        }
    return out


# --------------------------------------------------------------------------------------------
# 5. Actor-critic: actor processes vs the raw vector env, learner updates/s
# --------------------------------------------------------------------------------------------


def bench_actors(
    game: str = "pong",
    *,
    actors: int = 2,
    envs_per_actor: int = 4,
    batches: int = 12,
    rounds: int = 2,
    extractor: str = "ife",
) -> dict[str, Any]:
    """Agent steps/s of N actor processes (A3C-LSTM policy acting) vs the raw vector env.

    The raw side steps one ale-py vector env with ``actors * envs_per_actor`` games and random
    actions in this process; the platform side is ``ActorCriticTask``'s MultiAsyncCollector
    (one torch thread per actor) with the untrained IFE-LSTM policy choosing actions. Both
    use the same cores. Then the learner: updates/s of the A3C loss + Adam + weight push on
    the collected rollouts (no Lightning loop).
    """
    import numpy as np
    import torch

    from ife_platform.config import compose
    from ife_platform.tasks.a3c import ActorCriticTask

    cfg = compose(
        [
            "agent=a3c_lstm",
            f"env.game={game}",
            f"model.extractor={extractor}",
            f"env.num_envs={envs_per_actor}",
            f"agent.actors={actors}",
        ]
    )
    task = ActorCriticTask(cfg)
    n = actors * envs_per_actor
    rng = np.random.default_rng(0)
    # What one acting step costs an actor process (one torch thread, envs_per_actor frames).
    from ife_platform.evaluation import torch_threads
    from ife_platform.tasks.a3c import build_acting_model

    acting = build_acting_model(cfg, task.num_actions)
    x = torch.randint(0, 256, (envs_per_actor, 1, 84, 84), dtype=torch.uint8)
    state = acting.initial_state(envs_per_actor)
    first = torch.zeros(envs_per_actor, dtype=torch.bool)
    with torch_threads(1), torch.no_grad():
        acting.step(x, state, first)
        t0 = time.perf_counter()
        for _ in range(20):
            acting.step(x, state, first)
        policy_ms = (time.perf_counter() - t0) / 20 * 1000
    steps = batches * cfg.agent.rollout * envs_per_actor  # agent steps per measurement
    vec = make_raw_vector_env(game, n)
    vec.reset(seed=0)

    def raw() -> float:
        t0 = time.perf_counter()
        for _ in range(steps // n):
            vec.step(rng.integers(0, task.num_actions, n))
        return (steps // n) * n / (time.perf_counter() - t0)

    # Not interleaved: a MultiAsyncCollector's actors keep stepping between batches, so the
    # raw env is measured before the actors start (on the same, otherwise idle, cores).
    raw()
    results = {"raw ale-py vector env": [raw() for _ in range(rounds)]}
    vec.close()
    task._collector = task.build_collector()
    kept: list[Any] = []
    try:
        it = iter(task._collector)
        kept.append(next(it))

        def platform() -> float:
            t0 = time.perf_counter()
            frames = 0
            while frames < steps:
                batch = next(it)
                frames += batch.numel()
                if len(kept) < 4:
                    kept.append(batch)
            return frames / (time.perf_counter() - t0)

        platform()
        results["actor processes"] = [platform() for _ in range(rounds)]
        opt = task.configure_optimizers()
        t0 = time.perf_counter()
        for batch in kept:
            terms = task._loss(batch)
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
            task.updates += 1
            task._push_weights()
        learner = len(kept) / (time.perf_counter() - t0)
    finally:
        task.shutdown_collector()
    raw_rate = _median(results["raw ale-py vector env"])
    return {
        "game": game,
        "actors": actors,
        "envs_per_actor": envs_per_actor,
        "extractor": extractor,
        "rounds": rounds,
        "variants": {
            k: {"steps_per_s": _median(v), "ratio": _median(v) / raw_rate, "samples": v}
            for k, v in results.items()
        },
        "learner_updates_per_s": learner,
        "policy_step_ms": policy_ms,
        "rollout_steps_per_update": cfg.agent.rollout * envs_per_actor,
    }


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str]) -> int:
    """``ife bench``: run the selected measurements, print tables, optionally write JSON."""
    parser = argparse.ArgumentParser(
        prog="ife bench",
        description="Platform vs framework-free throughput, measured side by side.",
    )
    parser.add_argument(
        "--sections",
        default="env,learner,replay,explain,actors",
        help="comma list of env, learner, replay, explain, actors (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="small budgets (about a minute)")
    parser.add_argument("--game", default="pong")
    parser.add_argument("--num-envs", default="8,64", help="env section: comma list")
    parser.add_argument("--env-rounds", type=int, default=None)
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        help="env section: agent steps per measurement (all envs together)",
    )
    parser.add_argument("--extractors", default="ife,der_cnn", help="learner section: comma list")
    parser.add_argument(
        "--updates",
        type=int,
        default=None,
        help="learner section: updates per measurement (der_cnn runs 4x more)",
    )
    parser.add_argument("--learner-rounds", type=int, default=None)
    parser.add_argument("--learning-starts", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--profile",
        default=None,
        help="learner: write a cProfile dump of one platform run per extractor "
        "to PATH.<extractor>.prof (not timed)",
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    opts = parser.parse_args(argv)

    sections = {s.strip() for s in opts.sections.split(",") if s.strip()}
    unknown = sections - {"env", "learner", "replay", "explain", "actors"}
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    env_rounds = opts.env_rounds or (3 if opts.quick else 5)
    frames = opts.frames or (1024 if opts.quick else 3072)
    learner_rounds = opts.learner_rounds or (2 if opts.quick else 3)
    updates = opts.updates or (15 if opts.quick else 40)

    import torch

    _quiet_lightning()
    warnings.filterwarnings("ignore", category=FutureWarning)  # torchrl 0.15 notices
    if opts.threads:
        torch.set_num_threads(opts.threads)
    start = time.perf_counter()
    results: dict[str, Any] = {"machine": machine_info(), "argv": list(argv)}
    print(format_report(results).split("\n\nload average at end")[0], flush=True)
    if "env" in sections:
        results["env"] = []
        for n in _ints(opts.num_envs):
            steps = max(16, frames // n)
            results["env"].append(bench_env(opts.game, n, vector_steps=steps, rounds=env_rounds))
            print(f"  env {n} envs done ({time.perf_counter() - start:.0f} s)", flush=True)
    if "learner" in sections:
        results["learner"] = []
        for name in [x for x in opts.extractors.split(",") if x]:
            n_up = updates * (4 if name in ("der_cnn", "nature_cnn") else 1)
            if opts.profile:
                cfg = learner_config(
                    name, game=opts.game, learning_starts=opts.learning_starts, updates=n_up
                )
                platform_learner_rate(cfg, profile=f"{opts.profile}.{name}.prof")
            results["learner"].append(
                bench_learner(
                    name,
                    updates=n_up,
                    rounds=learner_rounds,
                    learning_starts=opts.learning_starts,
                    game=opts.game,
                )
            )
            print(f"  learner {name} done ({time.perf_counter() - start:.0f} s)", flush=True)
    if "replay" in sections:
        results["replay"] = bench_replay(game=opts.game)
    if "explain" in sections:
        results["explain"] = bench_explain(
            opts.game, steps=150 if opts.quick else 400, rounds=3 if opts.quick else 5
        )
        results["explain"]["analysis"] = bench_explain_agents(
            opts.game, steps=60 if opts.quick else 200
        )
        print(f"  explain done ({time.perf_counter() - start:.0f} s)", flush=True)
    if "actors" in sections:
        results["actors"] = bench_actors(
            opts.game, batches=6 if opts.quick else 12, rounds=2 if opts.quick else 3
        )
        print(f"  actors done ({time.perf_counter() - start:.0f} s)", flush=True)
    results["wall_s"] = time.perf_counter() - start
    results["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print()
    print(format_report(results))
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=2, default=str))
        print(f"results written to {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
