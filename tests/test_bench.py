"""``ife bench`` pieces on tiny budgets (real ALE games), and the env's fast collector path.

No timing thresholds here: rates are only checked to be positive and finite.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import assert_same_batches_until_every_episode_end
from tensordict.nn import TensorDictModule
from torchrl.collectors import Collector

from ife_platform import bench
from ife_platform.envs import AtariVecEnv
from ife_platform.rainbow.replay import frame_ring_rows


def _positive(x: float) -> bool:
    return math.isfinite(x) and x > 0


def test_replay_bytes_per_transition_is_the_frame_ring_plus_exact_overhead() -> None:
    """Issue 13: the ring of unique frames takes 1.25 frames per slot (the target), the rest
    is the frame ids, the scalars and the ring's reference serials, from their dtypes."""
    out = bench.bench_replay(transitions=40, capacity=64)
    assert out["capacity"] == 64
    assert 0 < out["stored"] <= 40
    assert out["dtypes"]["frame_ring"] == "uint8" and out["dtypes"]["frames"] == "int64"
    per_key = out["per_key_bytes_per_transition"]
    assert "obs" not in per_key and "next_obs" not in per_key  # no stacks are stored
    rows = frame_ring_rows(64, 1, 3, 4)  # DER profile: 1 env, 3-step (the bench's override)
    assert per_key["frame_ring"] == rows * 84 * 84 / 64
    assert per_key["frame_ring_ref"] == rows * 8 / 64
    assert per_key["frames"] == 3 * 8  # env, first frame of obs, first frame of next_obs
    sizes = {"int64": 8, "float32": 4, "uint8": 1, "bool": 1, "int32": 4}
    scalars = [k for k in per_key if k not in ("frame_ring", "frame_ring_ref", "frames")]
    assert {"action", "reward", "discount"} <= set(scalars)
    overhead = sum(sizes[out["dtypes"][k]] for k in scalars) + 24 + rows * 8 / 64
    assert out["bytes_per_transition"] == per_key["frame_ring"] + overhead
    assert out["overhead_bytes"] == overhead
    assert out["total_bytes"] == out["bytes_per_transition"] * 64
    # at large capacities the ring is exactly 1.25 frames per slot: the target
    assert frame_ring_rows(1 << 20, 64, 3, 4) == 1.25 * (1 << 20)


def test_storage_bytes_counts_every_stored_tensor() -> None:
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage, ReplayBuffer

    rb = ReplayBuffer(storage=LazyTensorStorage(10))
    rb.extend(
        TensorDict(
            obs=torch.zeros(3, 4, 84, 84, dtype=torch.uint8),
            extra=TensorDict(x=torch.zeros(3, 2, dtype=torch.float64), batch_size=[3]),
            batch_size=[3],
        )
    )
    out = bench.storage_bytes(rb)
    assert out["per_key_bytes_per_transition"] == {"obs": 4 * 84 * 84, "extra/x": 16.0}
    assert out["bytes_per_transition"] == 4 * 84 * 84 + 16


def test_env_bench_reports_positive_rates_for_every_variant() -> None:
    out = bench.bench_env("pong", 2, vector_steps=8, rounds=1, big_batch_steps=4)
    variants = out["variants"]
    assert list(variants) == [
        "raw ale-py vector env",
        "platform fpb=2 (training)",
        "platform fpb=8",
        "platform fpb=2, TorchRL rollout",
        "platform fpb=2, TorchRL default collector",
    ]
    assert variants["raw ale-py vector env"]["ratio"] == 1.0
    for v in variants.values():
        assert len(v["samples"]) == 1
        assert _positive(v["steps_per_s"]) and _positive(v["ratio"])
    # the collector's own work, timed against recorded emulator steps, bounds the ratio
    assert len(out["collector_overhead_samples"]) == 1 and _positive(out["collector_overhead_us"])
    raw_us = 2 / variants["raw ale-py vector env"]["steps_per_s"] * 1e6
    assert out["raw_step_us"] == pytest.approx(raw_us)
    expected = raw_us / (raw_us + out["collector_overhead_us"])
    assert out["overhead_ceiling_ratio"] == pytest.approx(expected) and expected < 1


def test_learner_rates_platform_and_bare_loop_are_positive() -> None:
    cfg = bench.learner_config("der_cnn", learning_starts=30, updates=6, capacity=200)
    assert cfg.agent.batch_size == 32 and cfg.env.num_envs == 1
    assert _positive(bench.platform_learner_rate(cfg, warmup=1))
    assert _positive(bench.bare_learner_rate(cfg, warmup=1))


def test_bare_loop_nstep_windows() -> None:
    ns = bench.BareNStep(3, 0.5)
    assert ns.push("s0", 0, 1.0, False, False, "s1") == []
    assert ns.push("s1", 1, 2.0, False, False, "s2") == []
    (t,) = ns.push("s2", 2, 4.0, False, False, "s3")  # full window: G = 1 + 0.5*2 + 0.25*4
    assert t == ("s0", 0, 3.0, 0.125, "s3")
    out = ns.push("s3", 3, 8.0, True, False, "s4")  # terminal: flush, no bootstrap
    assert [(o[0], o[2], o[3]) for o in out] == [
        ("s1", 2.0 + 2.0 + 2.0, 0.0),
        ("s2", 4.0 + 4.0, 0.0),
        ("s3", 8.0, 0.0),
    ]


def test_main_writes_json(tmp_path) -> None:
    path = tmp_path / "bench.json"
    assert bench.main(["--sections", "replay", "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["machine"]["torch_threads"] >= 1
    assert data["replay"]["bytes_per_transition"] >= bench.DEDUP_FRAME_BYTES_PER_TRANSITION
    assert data["replay"]["within_limit"] is True  # 1,000 slots: 1.25 frames per slot


class _SeededRandomActor:
    def __init__(self, num_actions: int) -> None:
        self.n, self.g = num_actions, torch.Generator().manual_seed(3)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.randint(self.n, (pixels.shape[0],), generator=self.g)


def test_fast_step_and_reset_matches_torchrl_generic_path() -> None:
    """The env's single-pass collector path yields bit-identical batches to TorchRL's own.

    Breakout with a short frame cap: life losses, game overs and truncations all happen.
    """

    def collector(fast: bool) -> Collector:
        env = AtariVecEnv("breakout", 3, seed=5, max_episode_frames=800, noop_max=5)
        env.fast_step_and_reset = fast
        policy = TensorDictModule(
            _SeededRandomActor(env.num_actions), in_keys=["pixels"], out_keys=["action"]
        )
        return Collector(env, policy, frames_per_batch=3 * 5, total_frames=-1, trust_policy=True)

    fast, generic = collector(True), collector(False)
    assert_same_batches_until_every_episode_end(fast, generic, limit=300)


def test_explain_bench_reports_overheads_and_saliency_rates() -> None:
    out = bench.bench_explain("pong", "ife", steps=12, rounds=1, saliency_frames=1)
    variants = out["variants"]
    assert list(variants) == [
        "evaluation loop",
        "+ explain recording",
        "+ recording and object boxes",
    ]
    assert variants["evaluation loop"]["overhead"] == 0.0
    for v in variants.values():
        assert _positive(v["steps_per_s"]) and len(v["samples"]) == 1
    assert set(out["saliency"]) == {"ife", "nature_cnn"}
    assert all(_positive(v["frames_per_s"]) for v in out["saliency"].values())
    out["analysis"] = bench.bench_explain_agents("pong", steps=8, agents=("a3c_lstm ife", "s3ta"))
    agents = out["analysis"]["agents"]
    assert all(v["frames"] == 8 and _positive(v["analyse_s"]) for v in agents.values())
    # the recorded state per step: LSTM (h, c) of 512 floats each; S3TA adds its ConvLSTM
    assert agents["a3c_lstm ife"]["state_bytes_per_step"] == 2 * 512 * 4
    assert agents["s3ta"]["state_bytes_per_step"] == (2 * 128 * 11 * 11 + 2 * 256) * 4
    report = bench.format_report({"machine": bench.machine_info(), "explain": out})
    assert "recording overhead" in report and "s3ta" in report


def test_actor_bench_reports_rates_and_restores_threads() -> None:
    import torch

    threads = torch.get_num_threads()
    out = bench.bench_actors("pong", actors=2, envs_per_actor=2, batches=1, rounds=1)
    assert list(out["variants"]) == ["raw ale-py vector env", "actor processes"]
    assert all(_positive(v["steps_per_s"]) for v in out["variants"].values())
    assert _positive(out["learner_updates_per_s"]) and _positive(out["policy_step_ms"])
    assert torch.get_num_threads() == threads


def test_learner_section_runs_each_precision_side_by_side() -> None:
    out = bench.bench_learner(
        "der_cnn", updates=5, rounds=1, learning_starts=30, warmup=1, precisions=["bf16-mixed"]
    )
    assert _positive(out["ratio"]) and set(out["precisions"]) == {"bf16-mixed"}
    bf16 = out["precisions"]["bf16-mixed"]
    assert bf16["resolved"] in ("bf16-mixed", "32-true")  # what this CPU gives
    assert _positive(bf16["speedup"])
    assert len(out["samples"]) == 3  # fp32 platform, bf16 platform, bare loop


def test_precision_section_reports_floor_and_candidate(tmp_path, capsys) -> None:
    path = tmp_path / "parity.json"
    args = ["--sections", "precision", "--extractors", "der_cnn", "--quick"]
    variants = ["--parity-variants", "bf16-mixed,32-true+compile"]
    assert bench.main([*args, *variants, "--parity-updates", "6", "--json", str(path)]) == 0
    (pr,) = json.loads(path.read_text())["precision"]
    roles = [run["role"] for run in pr["runs"]]
    assert roles[0].startswith("fp32, the other") and roles[1].startswith("floor")
    assert roles[3] == "candidate: 32-true+compile"
    assert [run["precision"] for run in pr["runs"]] == ["32-true"] * 2 + ["bf16-mixed", "32-true"]
    assert [run.get("compile") for run in pr["runs"]] == [None, None, False, True]
    # compiling changes the operator order, not the function: fp32 rounding, far below 1 %
    assert pr["runs"][3]["max_loss_rel"] < 1e-3
    assert all(math.isfinite(run["max_loss_rel"]) for run in pr["runs"])
    assert "precision parity, der_cnn" in capsys.readouterr().out


def test_learner_variants_name_their_overrides_and_refuse_unknown_flags() -> None:
    from ife_platform.bench.common import variant_overrides

    assert variant_overrides("bf16-mixed") == ["trainer.precision=bf16-mixed"]
    assert variant_overrides("32-true+compile") == [
        "trainer.precision=32-true",
        "trainer.compile=true",
    ]
    with pytest.raises(ValueError, match="unknown learner variant flag.*'fast'.*compile"):
        variant_overrides("bf16-mixed+fast")
    # the precision section refuses it before collecting its snapshot
    with pytest.raises(ValueError, match="unknown learner variant"):
        bench.bench_precision("der_cnn", steps=10**9, variants=("32-true+fast",))
