"""Mixed precision and memory layout of the Rainbow learner (issue 13, item 1)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_ife, tracking_args
from mlflow.tracking import MlflowClient

from ife_platform.a3c.losses import actor_critic_loss
from ife_platform.a3c.s3ta import spatial_attention
from ife_platform.bench.learner import learner_config
from ife_platform.bench.precision import collect_snapshot, compare_runs, run_updates
from ife_platform.extractors import build_extractor
from ife_platform.precision import (
    autocast,
    autocast_dtype,
    cpu_bf16_supported,
    resolve_precision,
)
from ife_platform.rainbow.agent import Actor, build_q_network

needs_bf16 = pytest.mark.skipif(not cpu_bf16_supported(), reason="no bfloat16 units on this CPU")


def test_a_cpu_gets_bf16_only_with_bf16_units(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_precision("bf16-mixed", "cpu", bf16_units=True) == "bf16-mixed"
    with caplog.at_level(logging.WARNING, logger="ife_platform.precision"):
        assert resolve_precision("bf16-mixed", "cpu", bf16_units=False) == "32-true"
        assert resolve_precision("16-mixed", "cpu", bf16_units=True) == "32-true"
    assert "no bfloat16 units" in caplog.text and "GPU precision" in caplog.text
    # GPUs and the non-mixed precisions are taken as configured
    for precision in ("16-mixed", "bf16-mixed", "32-true"):
        assert resolve_precision(precision, "gpu", bf16_units=False) == precision
    assert resolve_precision("32-true", "cpu", bf16_units=False) == "32-true"
    assert resolve_precision("bf16-true", "cpu", bf16_units=False) == "bf16-true"


def test_autocast_dtype_of_each_precision() -> None:
    assert autocast_dtype("bf16-mixed") is torch.bfloat16
    assert autocast_dtype("16-mixed") is torch.float16
    for precision in ("32-true", "64-true", "bf16-true", "16-true"):
        assert autocast_dtype(precision) is None


@needs_bf16
def test_actor_acts_under_the_learners_autocast() -> None:
    torch.manual_seed(0)
    net = build_q_network("der_cnn", 4, num_atoms=51, noisy=False)
    seen: list[torch.dtype] = []
    net.head.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0].dtype))
    pixels = torch.randint(0, 255, (2, 4, 84, 84), dtype=torch.uint8)
    Actor(net)(pixels)
    Actor(net, autocast_dtype=torch.bfloat16)(pixels)
    assert seen == [torch.float32, torch.bfloat16]
    with autocast("cpu", None):  # no dtype: a no-op context
        assert not torch.is_autocast_enabled("cpu")


def test_log_probabilities_and_the_mask_stay_fp32_under_cpu_autocast() -> None:
    """CPU autocast keeps softmax / log_softmax in bf16 (CUDA autocast runs them in fp32).

    A bf16 log-probability has 8 significant bits: exp of the C51 head's log-probabilities
    then sums to 1 only within about 1e-2, and the HUE mask likewise. The head and the mask
    compute them in fp32 whatever the autocast, so both sum to 1 within fp32 rounding.
    """
    torch.manual_seed(0)
    net = build_q_network("ife", 9, num_atoms=51, noisy=True)
    pixels = torch.randint(0, 255, (4, 4, 84, 84), dtype=torch.uint8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # the trap: a bf16 input (a linear layer's output under autocast) stays bf16
        assert torch.log_softmax(torch.randn(2, 51).bfloat16(), -1).dtype is torch.bfloat16
        log_p = net(pixels)
    mask = net.extractor.attention_mask
    assert log_p.dtype is torch.float32 and log_p.shape == (4, 9, 51)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(4, 9), rtol=0, atol=1e-5)
    assert mask is not None and mask.dtype is torch.float32
    torch.testing.assert_close(mask.sum((1, 2)), torch.ones(4), rtol=0, atol=1e-5)
    # and the bf16 forward agrees with the fp32 forward of the same network to bf16 rounding
    ref = net(pixels)
    assert (ref.exp() - log_p.exp()).abs().max() < 0.02


def test_a3c_and_s3ta_normalise_in_fp32_given_bf16_inputs() -> None:
    """The same rule for the actor-critic agents: policy log-probs and S3TA's spatial softmax."""
    torch.manual_seed(0)
    logits = (torch.randn(5, 2, 6) * 4).bfloat16()
    zeros = torch.zeros(5, 2)
    out = actor_critic_loss(logits, zeros, torch.zeros(5, 2, dtype=torch.long), zeros, zeros)
    # entropy of a softmax of the bf16 logits, computed in fp32 by hand
    p = torch.softmax(logits.float(), -1)
    by_hand = -(p * p.log()).sum(-1).mean()
    assert out["entropy"].dtype is torch.float32
    torch.testing.assert_close(out["entropy"], by_hand, rtol=1e-6, atol=1e-6)
    q, k, v = (
        torch.randn(2, 3, 8).bfloat16(),
        torch.randn(2, 8, 49).bfloat16(),
        torch.randn(2, 4, 49).bfloat16(),
    )
    _, weights, _ = spatial_attention(q, k, v)
    assert weights.dtype is torch.float32
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["ife", "cnn_attention"])
def test_attention_extractors_run_channels_last_and_compute_what_nchw_computes(name: str) -> None:
    torch.manual_seed(0)
    ife = build_extractor(name, in_channels=4).eval()  # eval: no power iteration per forward
    assert ife.channels_last
    # parameters keep the standard layout (external init code views them), activations do not
    assert all(p.is_contiguous() for p in ife.parameters())
    layouts: list[bool] = []
    ife.afe.stage[0].register_forward_hook(
        lambda _m, inputs, _out: layouts.append(
            inputs[0].is_contiguous(memory_format=torch.channels_last)
        )
    )
    obs = torch.randint(0, 255, (3, 4, 84, 84), dtype=torch.uint8)
    out = ife(obs)
    ife.channels_last = False
    ref = ife(obs)
    assert layouts == [True, False]  # the AFE's max-pool saw NHWC, then NCHW
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # what SB3 does to a fresh extractor's weights (orthogonal init views them)
    fresh = build_extractor(name, in_channels=4)
    torch.nn.init.orthogonal_(
        next(m for m in fresh.modules() if isinstance(m, torch.nn.Conv2d)).weight
    )


def test_compare_runs_by_hand() -> None:
    ref = {
        "loss": torch.tensor([2.0, 4.0, 1.0]),
        "q_mean": torch.tensor([0.5, 0.5, 1.0]),
        "priority": torch.tensor([[1.0, 3.0], [2.0, 2.0], [4.0, 4.0]]),
    }
    run = {
        "loss": torch.tensor([3.0, 3.0, 1.5]),
        "q_mean": torch.tensor([0.4, 0.8, 1.0]),
        "priority": torch.tensor([[2.0, 3.0], [2.0, 1.0], [4.0, 6.0]]),
    }
    out = compare_runs(run, ref, window=2)
    # window 1 (updates 0-1): loss 3 vs 3; Q 0.6 vs 0.5; priorities mean 2 vs 2; L1 1/4, 1/4
    # window 2 (update 2): loss 1.5 vs 1 -> 0.5; Q 0; priorities 5 vs 4 -> 0.25; L1 2/8
    assert out["loss_rel"] == pytest.approx([0.0, 0.5])
    assert out["q_abs"] == pytest.approx([0.1, 0.0])
    assert out["priority_rel"] == pytest.approx([0.0, 0.25])
    assert out["priority_l1"] == pytest.approx([0.25, 0.25])
    assert out["max_loss_rel"] == pytest.approx(0.5) and out["max_q_abs"] == pytest.approx(0.1)


def test_parity_runs_are_deterministic_and_bf16_stays_close() -> None:
    """The parity check means something only if two fp32 runs on the same batches are equal."""
    cfg = learner_config("der_cnn", game="pong", learning_starts=0, updates=12)
    snapshot = collect_snapshot(cfg, 80, seed=1)
    assert snapshot["obs"].dtype == torch.uint8 and snapshot["obs"].shape[1:] == (4, 84, 84)
    gen = torch.Generator().manual_seed(0)
    indices = torch.randint(snapshot["action"].shape[0], (12, 32), generator=gen)
    a = run_updates(cfg, snapshot, indices)
    b = run_updates(cfg, snapshot, indices)
    for key in ("loss", "q_mean", "priority"):
        assert torch.equal(a[key], b[key]), key
    assert torch.isfinite(a["loss"]).all() and a["loss"][0] > 0
    floor = run_updates(cfg, snapshot, indices, perturb=2.0**-24)
    assert not torch.equal(floor["priority"], a["priority"])  # the perturbation is real
    if cpu_bf16_supported():
        half = run_updates(cfg, snapshot, indices, precision="bf16-mixed")
        cmp = compare_runs(half, a, window=6)
        assert 0 < cmp["max_loss_rel"] < 0.05  # rounds differently, learns the same
        assert cmp["max_priority_l1"] < 0.1


@needs_bf16
def test_bf16_training_run_on_cpu(workdir: Path) -> None:
    """A real run with trainer.precision=bf16-mixed trains in bf16 and says so."""
    args = [
        "train",
        "agent=rainbow_der",
        "env.game=pong",
        "model.extractor=der_cnn",
        "trainer.precision=bf16-mixed",
        *TINY,
        *tracking_args(workdir),
    ]
    run_ife(workdir, args)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ife").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.precision"] == "bf16-mixed"
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
