"""Seeds of any size reach every library in the range it accepts (issue 12, item 8)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ife_platform.config import ConfigError, compose
from ife_platform.envs import AtariEvalEnv, AtariVecEnv, make_vector_env
from ife_platform.registry import agent_names, get_agent
from ife_platform.seeding import (
    ALE_SEED_BITS,
    NUMPY_SEED_BITS,
    TORCH_SEED_BITS,
    ale_env_seeds,
    fold_seed,
)

LARGE_SEEDS = [2, 2**31 - 1, 2**31, 2**31 + 5, 2**32, 2**40, 2**63, 2**64 + 3, 10**30]


def test_fold_seed_by_hand() -> None:
    # In range: unchanged, whatever the width.
    assert fold_seed(0) == 0
    assert fold_seed(2) == 2
    assert fold_seed(2**31 - 1) == 2**31 - 1
    assert fold_seed(2**31, bits=32) == 2**31
    assert fold_seed(2**64 - 1, bits=64) == 2**64 - 1
    # Out of range: the top `bits` bits of the first 8 bytes of sha256(str(seed)).
    # sha256(b"2147483648") = 39f8d581 87887b48 ..., so with 31 bits: 0x39f8d581 >> 1
    # = 972608897 >> 1 = 486304448, and with 1 bit: the top bit of 0x39 = 0b0011_1001, 0.
    assert fold_seed(2**31) == 0x39F8D581 >> 1 == 486304448
    assert fold_seed(2**31, bits=1) == 0
    # sha256(b"1099511627776") (2**40) starts 2aae49a9 ...: 32 bits 0x2aae49a9 = 716065193.
    assert fold_seed(2**40, bits=32) == 0x2AAE49A9 == 716065193
    assert fold_seed(2**40) == 716065193 >> 1 == 358032596
    # Not a modulo: a large seed does not land on the small seed it is congruent to.
    assert fold_seed(2**31 + 5) != 5
    assert fold_seed(True) == 1  # integer-like values are accepted


@pytest.mark.parametrize("bits", [1, ALE_SEED_BITS, NUMPY_SEED_BITS, TORCH_SEED_BITS])
def test_fold_seed_range_and_determinism(bits: int) -> None:
    seeds = [*LARGE_SEEDS, *range(max(2**bits - 3, 0), 2**bits + 3)]
    folded = [fold_seed(s, bits) for s in seeds]
    assert all(0 <= f < 2**bits for f in folded)
    assert folded == [fold_seed(s, bits) for s in seeds]
    # 1000 consecutive large seeds stay distinct in 31 bits (no systematic collisions)
    if bits == ALE_SEED_BITS:
        assert len({fold_seed(2**40 + k) for k in range(1000)}) == 1000


def test_fold_seed_refuses_negative_seeds_and_bad_widths() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        fold_seed(-1)
    with pytest.raises(ValueError, match="bits"):
        fold_seed(1, bits=65)
    with pytest.raises(ConfigError, match="seed must be >= 0"):
        compose(["seed=-1"])


def test_ale_env_seeds_match_ale_py_for_small_seeds() -> None:
    assert ale_env_seeds(7, 3).tolist() == np.arange(7, 10).tolist()
    edge = ale_env_seeds(2**31 - 2, 3).tolist()
    assert edge[:2] == [2**31 - 2, 2**31 - 1] and edge[2] == fold_seed(2**31)


def test_the_ranges_are_the_libraries_ranges() -> None:
    """What each constant claims: the top of the range works, one more is refused."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2**TORCH_SEED_BITS - 1)
        with pytest.raises(ValueError):
            torch.manual_seed(2**TORCH_SEED_BITS)
    state = np.random.get_state()
    try:
        np.random.seed(2**NUMPY_SEED_BITS - 1)
        with pytest.raises(ValueError):
            np.random.seed(2**NUMPY_SEED_BITS)
    finally:
        np.random.set_state(state)
    random.Random(2**200)  # python's random takes any int: nothing to fold
    vec = make_vector_env("pong", 1, num_threads=1)
    try:
        vec.reset(seed=2**ALE_SEED_BITS - 1)
        with pytest.raises(TypeError):
            vec.reset(seed=2**ALE_SEED_BITS)
    finally:
        vec.close()


@pytest.mark.parametrize("seed", [2**31 - 1, 2**40])
def test_envs_take_any_seed(seed: int) -> None:
    env = AtariVecEnv("pong", 2, seed=seed, num_threads=1)
    try:
        first = env.reset()["pixels"]
        env.set_seed(seed)  # the same seeds again: the same first observations
        assert torch.equal(env.reset()["pixels"], first)
        env.set_seed(2**63)  # as TorchRL's collectors call it
        env.reset()
    finally:
        env.close()
    obs, _ = AtariEvalEnv("pong", seed=seed + 12345).reset()
    assert obs.shape == (4, 84, 84)


@pytest.mark.parametrize("agent", agent_names())
@pytest.mark.parametrize("seed", [2**31 + 5, 2**63, 2**64 + 3])
def test_every_agent_seeds_every_library_with_large_seeds(
    agent: str, seed: int, roomy_host: None
) -> None:
    # (roomy_host: the Fast preset's replay is sized for big machines; only built, not filled)
    cfg = compose([f"agent={agent}", f"seed={seed}"])
    task = get_agent(agent).task_class()(cfg)
    assert task.seed_everything() == seed
    assert 0 <= task.env_seed() < 2**ALE_SEED_BITS


def test_small_seeds_are_unchanged() -> None:
    """Every seed that worked before keeps its exact streams (nothing is folded)."""
    cfg = compose(["agent=rainbow_der", "seed=3"])
    task = get_agent("rainbow_der").task_class()(cfg)
    assert task.env_seed() == 3 * 1_000_003
    task.seed_everything()
    expected = torch.Generator().manual_seed(3)
    assert torch.equal(
        torch.rand(4, generator=task.actor.generator), torch.rand(4, generator=expected)
    )
    assert np.random.get_state()[1][0] == np.random.RandomState(3).get_state()[1][0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("agent", "game", "seed"),
    [
        ("a3c_lstm", "kung_fu_master", 2),  # the report: a TorchRL worker seed >= 2**31
        ("a3c_lstm", "pong", 2**40),
        ("s3ta", "boxing", 2**31 + 5),
        ("rainbow_der", "pong", 2**63),
        ("rainbow_fast", "pong", 2**64 + 3),
    ],
)
def test_tiny_runs_with_large_seeds_finish(workdir: Path, agent: str, game: str, seed: int) -> None:
    from conftest import TINY, TINY_ACTOR_CRITIC, run_ife, tracking_args

    if get_agent(agent).off_policy:
        budget = TINY
    else:
        budget = [*TINY_ACTOR_CRITIC, "train.total_steps=480"]
        budget += ["model.width=1"] if agent == "a3c_lstm" else []
    # run_ife fails the test after its timeout instead of hanging
    run_ife(
        workdir,
        [
            "train",
            f"agent={agent}",
            f"env.game={game}",
            f"seed={seed}",
            *budget,
            *tracking_args(workdir),
        ],
        timeout=300,
    )
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ife").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["seed"] == str(seed)
    assert run.data.metrics["train/env_steps"] > 0  # it trained, not only started
