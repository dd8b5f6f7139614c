"""What every benchmark section shares.

Machine facts, interleaved timing, the raw ale-py env and the platform collector, and the
targets the ratios are read against.
"""

from __future__ import annotations

import os
import platform
import statistics
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ife_platform.seeding import TORCH_SEED_BITS, ale_env_seeds, fold_seed

#: uint8 obs + next_obs of one transition, [4, 84, 84] each: what the replay took per slot
#: before frame deduplication (issue 13), kept as the reference the savings are read against.
PIXEL_BYTES_PER_TRANSITION = 2 * 4 * 84 * 84

#: The frame-deduplicated replay's target (issue 13): at most 1.25 84x84 frames per transition,
#: plus the scalars.
DEDUP_FRAME_BYTES_PER_TRANSITION = 1.25 * 84 * 84

ENV_RATIO_TARGET = 0.8
LEARNER_RATIO_TARGET = 0.9


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


#: Learner variants: ``PRECISION[+compile]``, e.g. ``bf16-mixed+compile``.
VARIANT_FLAGS = {"compile": "trainer.compile=true"}


def variant_overrides(variant: str) -> list[str]:
    """Config overrides of a learner variant ``PRECISION[+FLAG...]`` (flags: ``compile``).

    Raises:
        ValueError: an unknown flag.
    """
    precision, *flags = variant.split("+")
    unknown = [f for f in flags if f not in VARIANT_FLAGS]
    if unknown:
        raise ValueError(
            f"unknown learner variant flag(s) {unknown} in {variant!r}; known: "
            f"{', '.join(VARIANT_FLAGS)} (e.g. bf16-mixed+compile)"
        )
    return [f"trainer.precision={precision}", *(VARIANT_FLAGS[f] for f in flags)]


def median(values: Sequence[float]) -> float:
    """Median of the samples (NaN for none)."""
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
    vec.reset(seed=ale_env_seeds(seed, num_envs))
    return vec


class RandomActor:
    """A stand-in for the task's :class:`~ife_platform.rainbow.agent.Actor`: pixels -> actions.

    Same call signature (uint8 ``pixels [N, ...]`` in, int64 ``action [N]`` out), uniform
    random actions from its own generator, no network.
    """

    def __init__(self, num_actions: int, seed: int = 0) -> None:
        import torch

        self.num_actions = num_actions
        self.generator = torch.Generator().manual_seed(fold_seed(seed, TORCH_SEED_BITS))

    def __call__(self, pixels):
        """Random actions ``[N]`` for ``pixels [N, C, H, W]``."""
        import torch

        return torch.randint(self.num_actions, (pixels.shape[0],), generator=self.generator)


def make_platform_collector(
    env,
    frames_per_batch: int,
    *,
    torchrl_defaults: bool = False,
    torchrl_rollout: bool = False,
    seed: int = 0,
):
    """A ``Collector`` over ``env`` built like ``RainbowTask.build_stream`` (random policy).

    ``torchrl_rollout=True`` uses TorchRL's own ``Collector`` (same options) instead of the
    task's :class:`~ife_platform.collector.VectorStepCollector`; ``torchrl_defaults=True``
    also leaves out the task's :data:`tasks.rainbow.COLLECTOR_KWARGS` (CPU device, no
    trajectory ids, reused output buffer). Both measure what the task's choices save.
    """
    from tensordict.nn import TensorDictModule
    from torchrl.collectors import Collector

    from ife_platform.collector import VectorStepCollector
    from ife_platform.tasks.rainbow import COLLECTOR_KWARGS

    policy = TensorDictModule(
        RandomActor(env.num_actions, seed), in_keys=["pixels"], out_keys=["action"]
    )
    cls = Collector if torchrl_defaults or torchrl_rollout else VectorStepCollector
    return cls(
        env,
        policy,
        frames_per_batch=frames_per_batch,
        total_frames=-1,
        trust_policy=True,
        auto_register_policy_transforms=False,
        **({} if torchrl_defaults else COLLECTOR_KWARGS),
    )


def quiet_lightning() -> None:
    """Silence Lightning's banners and tips in benchmark output."""
    import logging

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
