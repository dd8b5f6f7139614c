"""Prioritized replay as DER's references weight it: hand-worked numbers, a real buffer, a run.

Issue 10: TorchRL normalises importance weights by the smallest priority in the whole buffer,
so one near-zero priority shrinks every update. The platform normalises by the sampled batch's
largest weight (Kaixhin/Rainbow, Dopamine) unless ``replay.weight_norm=buffer``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tracking_args
from ife_platform.tasks.rainbow import RainbowTask
from mlflow.tracking import MlflowClient
from tensordict import TensorDict
from torchrl.data import TensorDictPrioritizedReplayBuffer

from ife_platform.config import ConfigError, compose
from ife_platform.experiment import train
from ife_platform.rainbow.replay import (
    GatherTensorStorage,
    importance_weights,
    priority_quantiles,
)

# Raw priorities |TD| (or C51 cross-entropy) 4, 1, 16, 0.01 with alpha = 0.5 and eps = 0 are
# stored as p = 2, 1, 4, 0.1: index 3 is the near-zero priority that drags p_min down.
RAW = torch.tensor([4.0, 1.0, 16.0, 0.01])
STORED = torch.tensor([2.0, 1.0, 4.0, 0.1])


def _buffer(beta: float) -> TensorDictPrioritizedReplayBuffer:
    rb = TensorDictPrioritizedReplayBuffer(
        alpha=0.5,
        beta=beta,
        eps=0.0,
        priority_key="td_error",
        storage=GatherTensorStorage(8),
        batch_size=64,
        generator=torch.Generator().manual_seed(0),
    )
    rb.extend(TensorDict({"x": torch.arange(4.0)}, batch_size=[4]))
    rb.update_priority(torch.arange(4), RAW)
    return rb


def test_weights_by_hand_beta_one() -> None:
    # Batch holds items 0, 1, 2 (not the 0.1 one). Buffer form: (p / 0.1)^-1.
    buffer_w = torch.tensor([0.05, 0.1, 0.025])
    assert torch.allclose(importance_weights(buffer_w, "buffer"), buffer_w)
    # Batch form: (p / min_batch p)^-1 = (p / 1)^-1 = 1/2, 1, 1/4: the largest weight is 1.
    assert torch.allclose(importance_weights(buffer_w, "batch"), torch.tensor([0.5, 1.0, 0.25]))


def test_weights_by_hand_beta_half() -> None:
    # beta = 0.5: buffer (p / 0.1)^-0.5 = sqrt(0.05), sqrt(0.1), sqrt(0.025);
    # batch (p / 1)^-0.5 = 1/sqrt(2), 1, 1/2.
    buffer_w = torch.tensor([0.05, 0.1, 0.025]).sqrt()
    expected = torch.tensor([2**-0.5, 1.0, 0.5])
    assert torch.allclose(importance_weights(buffer_w, "batch"), expected, atol=1e-6)


def test_unknown_norm_is_an_error() -> None:
    with pytest.raises(ValueError, match="batch"):
        importance_weights(torch.ones(2), "global")


@pytest.mark.parametrize("beta", [0.4, 1.0])
def test_real_buffer_weights_match_the_formulas(beta: float) -> None:
    rb = _buffer(beta)
    assert torch.allclose(torch.tensor(priority_quantiles(rb)), torch.tensor([0.1, 1.0, 4.0]))
    for _ in range(5):
        sample = rb.sample()
        p = STORED[sample["index"]]
        buffer_w = importance_weights(sample["priority_weight"], "buffer")
        batch_w = importance_weights(sample["priority_weight"], "batch")
        assert torch.allclose(buffer_w, (p / 0.1) ** -beta, rtol=1e-5)
        assert torch.allclose(batch_w, (p / p.min()) ** -beta, rtol=1e-5)
        assert batch_w.max().item() == pytest.approx(1.0)


def test_one_tiny_priority_no_longer_shrinks_every_update() -> None:
    # Priorities as in issue 10: about 1.3 for a typical transition, one at the 1e-3 floor.
    rb = TensorDictPrioritizedReplayBuffer(
        alpha=0.5,
        beta=1.0,
        eps=1e-6,
        priority_key="td_error",
        storage=GatherTensorStorage(1000),
        batch_size=32,
        generator=torch.Generator().manual_seed(1),
    )
    rb.extend(TensorDict({"x": torch.zeros(1000)}, batch_size=[1000]))
    raw = torch.full((1000,), 1.69)
    raw[0] = 0.0  # a single-atom C51 target the net already predicts: cross-entropy ~0
    rb.update_priority(torch.arange(1000), raw)
    sample = rb.sample()
    assert 0 not in sample["index"].tolist()  # p = 1e-3 against 1.3: almost never drawn
    buffer_mean = importance_weights(sample["priority_weight"], "buffer").mean().item()
    batch_mean = importance_weights(sample["priority_weight"], "batch").mean().item()
    assert buffer_mean == pytest.approx((1e-6) ** 0.5 / (1.69 + 1e-6) ** 0.5, rel=1e-4)
    assert batch_mean == pytest.approx(1.0)


def _task(workdir: Path, extra: list[str]) -> RainbowTask:
    cfg = compose(
        [
            "agent=rainbow_der",
            "env=atari100k",
            "model.extractor=der_cnn",
            "env.game=pong",
            *tracking_args(workdir),
            *extra,
        ]
    )
    return RainbowTask(cfg)


@pytest.mark.parametrize("agent", ["rainbow_der", "rainbow_fast"])
@pytest.mark.parametrize("norm", ["batch", "buffer"])
def test_both_losses_use_the_configured_weights(
    workdir: Path, agent: str, norm: str, roomy_host
) -> None:
    task = _task(workdir, [f"agent={agent}", f"replay.weight_norm={norm}"])
    g = torch.Generator().manual_seed(0)
    batch = TensorDict(
        {
            "obs": torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8, generator=g),
            "next_obs": torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8, generator=g),
            "action": torch.tensor([0, 1, 2]),
            "reward": torch.tensor([1.0, 0.0, -1.0]),
            "discount": torch.tensor([0.9, 0.0, 0.9]),
            "priority_weight": torch.tensor([0.05, 0.1, 0.025]),
        },
        batch_size=[3],
    )
    terms = task.loss(batch)
    w = {"batch": [0.5, 1.0, 0.25], "buffer": [0.05, 0.1, 0.025]}[norm]
    assert terms["is_weight_mean"].item() == pytest.approx(sum(w) / 3)
    per_sample = terms["td_error"]  # C51: the cross-entropy itself; Fast: |delta|
    if agent == "rainbow_fast":  # Huber of |delta|, threshold 1
        per_sample = torch.where(per_sample < 1, 0.5 * per_sample**2, per_sample - 0.5)
    expected = (torch.tensor(w) * per_sample).mean()
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_beta_anneals_from_learning_starts(workdir: Path) -> None:
    # DER: beta 0.4 at the first update (step 1,600) -> 1.0 at 100k, linear in between.
    task = _task(workdir, [])
    task.replay = None
    rb = _buffer(0.4)
    for steps, beta in [(0, 0.4), (1600, 0.4), (1600 + 49_200, 0.7), (100_000, 1.0)]:
        task.env_steps = steps
        assert task.replay_beta(rb) == pytest.approx(beta)
        assert rb.sampler.beta == pytest.approx(beta)


@pytest.mark.parametrize(
    ("extra", "blanks"),
    [
        ([], True),  # the DER profile: Kaixhin's memory blanks (docs/design.md)
        (["replay.blank_before_life_start=false"], False),
        (["agent=rainbow_fast", "env.num_envs=2", "replay.capacity=1000"], False),
    ],
)
def test_der_profile_replay_blanks_frames_before_a_life_start(
    workdir: Path, extra: list[str], blanks: bool
) -> None:
    task = _task(workdir, extra)
    storage = task.build_replay().storage
    assert storage.blank_before_life_start is blanks
    # the read path itself, on a stack whose last frame starts a life (ids 0-3, life at 3)
    storage.add_frames(
        torch.zeros(4, dtype=torch.long),
        torch.full((4, 84, 84), 7, dtype=torch.uint8),
        protect_from=torch.zeros(task.cfg.env.num_envs, dtype=torch.long),
        starts_life=torch.tensor([False, False, False, True]),
    )
    stack = storage.gather_stacks(torch.tensor([0]), torch.tensor([0]))
    assert stack[0, :, 0, 0].tolist() == ([0, 0, 0, 7] if blanks else [7, 7, 7, 7])


def test_bad_weight_norm_fails_at_compose() -> None:
    with pytest.raises(ConfigError, match="replay.weight_norm.*Valid: batch, buffer"):
        compose(["agent=rainbow_der", "replay.weight_norm=global"])


@pytest.mark.slow
def test_short_real_run_learns_with_healthy_weights(workdir: Path) -> None:
    """Regression guard: a change that stalls learning (weights -> 0, no gradient) fails here.

    600 agent steps of DER-CNN on Ms. Pac-Man with gamma 0.5, so the return distribution is
    narrow and the C51 head has something to learn in 500 updates: the cross-entropy falls
    from ln 51 = 3.93 (measured: to about 1.0), while the mean importance weight the optimiser
    sees stays near 0.6-1.0 (it was 0.006 at 100k steps under buffer-wide normalisation).
    """
    cfg = compose(
        [
            "agent=rainbow_der",
            "env=atari100k",
            "model.extractor=der_cnn",
            "env.game=ms_pacman",
            "train.total_steps=600",
            "trainer.steps_per_epoch=600",
            "agent.learning_starts=100",
            "agent.n_step=3",
            "agent.gamma=0.5",
            "agent.target_update_period=100",
            "optim.lr=5e-4",
            "replay.capacity=2000",
            "trainer.log_every_updates=20",
            "tracking.eval_episodes=0",
            "tracking.video=false",
            "trainer.progress_bar=false",
            *tracking_args(workdir),
        ]
    )
    task = train(cfg).task
    assert task.updates == 500
    client = MlflowClient(cfg.tracking.uri)
    run_id = task.run_id
    assert run_id is not None

    def history(key: str) -> list[float]:
        return [m.value for m in client.get_metric_history(run_id, key)]

    weights, ce = history("train/is_weight_mean"), history("train/loss_ce")
    assert len(weights) == len(ce) == 26  # update 1, then every 20 updates
    assert min(weights) > 0.3, weights
    assert sum(weights) / len(weights) > 0.5, weights
    first, last = ce[0], sum(ce[-5:]) / 5
    assert first == pytest.approx(3.93, abs=0.02)  # a fresh C51 head is near uniform
    assert last < 0.6 * first, ce
    for key in ("train/priority_min", "train/priority_median", "train/priority_max"):
        values = history(key)
        assert len(values) == 26 and all(v > 0 for v in values), key
    lows, highs = history("train/priority_min"), history("train/priority_max")
    assert all(lo <= hi for lo, hi in zip(lows, highs, strict=True))
