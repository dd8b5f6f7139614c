"""The GPU check (issue 13, item 5): one short script, one table, one JSON file.

``python scripts/gpu_check.py --json gpu.json`` on a machine with a GPU measures, in at most
about five minutes:

1. **Fast-Rainbow learner, bare**: updates/s of the Fast profile's network (IFE width 2,
   dueling, scalar Q, Huber double-Q loss, Adam, gradient clipping) on random uint8 batches
   already on the device, batch 512, in fp32 and in bf16 autocast: the device's ceiling.
2. **Fast-Rainbow learner, platform**: updates/s of the real training loop (``RainbowTask``
   under a Lightning ``Trainer``: 64 envs collected per vector step, n-step, prioritized
   replay, one update of batch 512 per vector step) in bf16, against the bare rate.
3. **Replay on the device**: prioritized ``sample()`` of a batch of 512 from the task's
   replay, plus the copy to the device, in ms.
4. **Env steps/s** at 64 envs: the raw ale-py vector env and the platform's collector.
5. **DDP smoke run**, only with two or more devices: ``ife train`` on two devices with
   ``trainer.strategy=ddp`` and a tiny budget; its exit code, wall time and whether the ranks
   ended with bitwise-identical weights.

Without a GPU it runs the same code on the CPU at small sizes (``small=True``: batch 32,
4 envs), so the test suite keeps it working.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ife_platform.bench.common import interleave, machine_info, median


def fast_config(accelerator: str, *, num_envs: int, batch: int, updates: int, capacity: int):
    """The Fast-Rainbow profile at a size the check can afford (few updates, small replay)."""
    from ife_platform.config import compose

    learning_starts = max(batch, 4 * num_envs)
    total = learning_starts + (updates + 4) * num_envs
    return compose(
        [
            "agent=rainbow_fast",
            "model.extractor=ife",
            "model.width=2",
            f"env.num_envs={num_envs}",
            f"agent.batch_size={batch}",
            f"agent.updates_per_step={1 / num_envs}",  # one update per vector step, as Fast
            f"agent.learning_starts={learning_starts}",
            f"replay.capacity={capacity}",
            f"train.total_steps={total}",
            f"trainer.steps_per_epoch={total}",
            f"trainer.accelerator={accelerator}",
            "trainer.devices=1",
            "trainer.strategy=auto",
            "trainer.precision=bf16-mixed",
            "trainer.progress_bar=false",
            "tracking.eval_episodes=0",
        ]
    )


def bare_update_rate(
    cfg: Any, device: torch.device, *, updates: int, dtype: torch.dtype | None, warmup: int = 3
) -> float:
    """Updates/s of the profile's network and loss on random batches resident on ``device``."""
    from ife_platform.optim import make_adam
    from ife_platform.precision import autocast
    from ife_platform.rainbow.losses import huber_double_q_loss
    from ife_platform.tasks.rainbow import build_network

    batch, actions = int(cfg.agent.batch_size), 6
    torch.manual_seed(0)
    online = build_network(cfg, actions).to(device)
    target = build_network(cfg, actions).to(device)
    target.load_state_dict(online.state_dict())
    target.requires_grad_(False)
    opt = make_adam(online.parameters(), cfg.optim)
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (batch, int(cfg.env.frame_stack), 84, 84)
    obs = torch.randint(0, 255, shape, dtype=torch.uint8, device=device, generator=gen)
    nxt = torch.randint(0, 255, shape, dtype=torch.uint8, device=device, generator=gen)
    action = torch.randint(0, actions, (batch,), device=device, generator=gen)
    reward = torch.randn(batch, device=device, generator=gen).sign()
    discount = torch.full((batch,), 0.99**3, device=device)
    weights = torch.ones(batch, device=device)
    clip = cfg.optim.grad_clip

    def update() -> None:
        with autocast(device, dtype):
            out = online(obs)
            with torch.no_grad():
                online_next, target_next = online(nxt), target(nxt)
        terms = huber_double_q_loss(
            out.float(),
            action,
            online_next.float(),
            target_next.float(),
            reward,
            discount,
            weights,
        )
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(online.parameters(), clip)
        opt.step()

    for _ in range(warmup):
        update()
    _sync(device)
    start = time.perf_counter()
    for _ in range(updates):
        update()
    _sync(device)
    return updates / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def replay_sample_ms(
    cfg: Any, device: torch.device, *, ring_device: str = "cpu", samples: int = 20
) -> float:
    """Milliseconds per prioritized ``sample()`` of one batch, with its stacks on ``device``.

    The replay is built as the task builds it, with its frame ring on ``ring_device``, and
    filled with random frames through the task's n-step accumulator to ``replay.capacity``
    transitions; a sample is then moved to ``device`` (a no-op for what is already there).
    """
    from ife_platform.rainbow.dedup import FrameNStepAccumulator
    from ife_platform.tasks.rainbow import RainbowTask

    replay = RainbowTask(cfg).build_replay(frame_device=ring_device)
    n_env = int(cfg.env.num_envs)
    acc = FrameNStepAccumulator(
        n_env, int(cfg.agent.n_step), float(cfg.agent.gamma), replay.storage
    )
    gen = torch.Generator().manual_seed(0)
    stack = int(cfg.env.frame_stack)
    obs = torch.zeros((n_env, 1, stack, 84, 84), dtype=torch.uint8)
    steps = max(1, int(cfg.replay.capacity) // n_env) + int(cfg.agent.n_step)
    for _ in range(steps):
        # the next stack is this one shifted by a new random frame, as the env makes them
        frame = torch.randint(0, 255, (n_env, 1, 1, 84, 84), dtype=torch.uint8, generator=gen)
        nxt = torch.cat([obs[:, :, 1:], frame], dim=2)
        ready = acc.push(
            obs,
            torch.zeros(n_env, 1, dtype=torch.int64),
            torch.zeros(n_env, 1),
            torch.zeros(n_env, 1, dtype=torch.bool),
            torch.zeros(n_env, 1, dtype=torch.bool),
            nxt,
        )
        if ready.batch_size[0]:
            replay.extend(ready)
        obs = nxt
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        batch = replay.sample().to(device, non_blocking=True)
        _sync(device)
        times.append(time.perf_counter() - start)
        del batch
    return 1000.0 * median(times)


def ddp_smoke(devices: int, accelerator: str) -> dict[str, Any]:
    """A tiny ``ife train`` on ``devices`` devices with DDP: exit code, seconds, weights check."""
    from mlflow.tracking import MlflowClient

    script = Path(sys.executable).with_name("ife")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ife_platform.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "train",
            "agent=rainbow_der",
            "env.game=pong",
            "model.extractor=ife",
            "train.total_steps=160",
            "agent.learning_starts=80",
            "trainer.steps_per_epoch=80",
            "replay.capacity=1000",
            "agent.batch_size=32",
            f"trainer.accelerator={accelerator}",
            f"trainer.devices={devices}",
            "trainer.strategy=ddp",
            "trainer.progress_bar=false",
            "tracking.eval_episodes=0",
            "tracking.video=false",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.output_dir={tmp}/out",
        ]
        start = time.perf_counter()
        proc = subprocess.run(
            [*command, *args], cwd=tmp, capture_output=True, text=True, timeout=600
        )
        seconds = time.perf_counter() - start
        identical = None
        if proc.returncode == 0:
            client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
            (run,) = client.search_runs([client.get_experiment_by_name("ife").experiment_id])
            identical = run.data.tags.get("ddp.weights_identical")
    return {
        "devices": devices,
        "returncode": proc.returncode,
        "seconds": seconds,
        "weights_identical": identical,
        "stderr_tail": proc.stderr[-1500:] if proc.returncode else "",
    }


def device_check(
    *, small: bool | None = None, game: str = "pong", ddp: bool = True
) -> dict[str, Any]:
    """Run every measurement of the module docstring on this machine's best device.

    Args:
        small: CPU-sized budgets (batch 32, 4 envs); by default when there is no GPU.
        game: the game of the env and platform measurements.
        ddp: run the DDP smoke run when there are two or more GPUs.
    """
    from ife_platform.bench.env import bench_env
    from ife_platform.bench.learner import platform_learner_rate
    from ife_platform.precision import cpu_bf16_supported

    cuda = torch.cuda.is_available()
    small = not cuda if small is None else small
    device = torch.device("cuda" if cuda else "cpu")
    accelerator = "gpu" if cuda else "cpu"
    batch, num_envs = (32, 4) if small else (512, 64)
    updates = 5 if small else 100
    platform_updates = 4 if small else 60
    capacity = 500 if small else 100_000
    cfg = fast_config(
        accelerator, num_envs=num_envs, batch=batch, updates=platform_updates, capacity=capacity
    )
    results: dict[str, Any] = {
        "machine": machine_info(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "device_count": torch.cuda.device_count() if cuda else 0,
        "bf16_supported": (torch.cuda.is_bf16_supported() if cuda else cpu_bf16_supported()),
        "batch_size": batch,
        "num_envs": num_envs,
        "game": game,
    }
    start = time.perf_counter()
    bare = interleave(
        {
            "fp32": lambda: bare_update_rate(cfg, device, updates=updates, dtype=None),
            "bf16": lambda: bare_update_rate(cfg, device, updates=updates, dtype=torch.bfloat16),
        },
        1 if small else 2,
    )
    results["bare_updates_per_s"] = {k: median(v) for k, v in bare.items()}
    platform = platform_learner_rate(cfg, warmup=2)
    results["platform_updates_per_s"] = platform
    results["platform_vs_bare_bf16"] = platform / results["bare_updates_per_s"]["bf16"]
    replay_cfg = fast_config(
        accelerator, num_envs=num_envs, batch=batch, updates=1, capacity=capacity
    )
    results["replay_sample_ms"] = replay_sample_ms(replay_cfg, device)
    try:  # the frame ring on the device itself (the stacks are gathered there)
        results["replay_sample_ms_ring_on_device"] = replay_sample_ms(
            replay_cfg, device, ring_device=str(device)
        )
    except Exception as err:  # noqa: BLE001 - a check reports, it does not stop
        results["replay_sample_ms_ring_on_device"] = f"failed: {err!r}"
    env = bench_env(game, num_envs, vector_steps=32 if small else 256, rounds=1 if small else 3)
    results["env"] = {
        name: {"steps_per_s": v["steps_per_s"], "ratio": v["ratio"]}
        for name, v in env["variants"].items()
    }
    count = results["device_count"]
    results["ddp"] = ddp_smoke(2, accelerator) if ddp and count >= 2 else None
    results["wall_s"] = time.perf_counter() - start
    results["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return results


def _ms(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def format_device_report(results: dict[str, Any]) -> str:
    """The one table the check prints."""
    b = results["bare_updates_per_s"]
    rows = [
        ("device", f"{results['device']} (x{results['device_count'] or 1})"),
        ("bf16 supported", str(results["bf16_supported"])),
        (
            f"bare updates/s, batch {results['batch_size']}, fp32",
            f"{b['fp32']:.1f}",
        ),
        (f"bare updates/s, batch {results['batch_size']}, bf16", f"{b['bf16']:.1f}"),
        (
            f"platform updates/s, bf16, {results['num_envs']} envs",
            f"{results['platform_updates_per_s']:.1f} "
            f"({results['platform_vs_bare_bf16']:.2f}x bare bf16)",
        ),
        (
            f"replay sample {results['batch_size']} + copy, ms",
            f"{results['replay_sample_ms']:.2f}",
        ),
        (
            f"replay sample {results['batch_size']}, frame ring on the device, ms",
            _ms(results["replay_sample_ms_ring_on_device"]),
        ),
    ]
    for name, v in results["env"].items():
        rows.append(
            (
                f"env steps/s, {results['num_envs']} envs, {name}",
                f"{v['steps_per_s']:,.0f} ({v['ratio']:.2f})",
            )
        )
    d = results.get("ddp")
    if d is None:
        rows.append(("DDP smoke run", "skipped (fewer than 2 devices)"))
    else:
        rows.append(
            (
                f"DDP smoke run, {d['devices']} devices",
                f"exit {d['returncode']}, {d['seconds']:.0f} s, "
                f"weights identical: {d['weights_identical']}",
            )
        )
    rows.append(("wall time, s", f"{results['wall_s']:.0f}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:{width}s}  {v}" for k, v in rows)
