"""Transfer modes at task switches, checked with real optimiser steps on a small IFE Q-network."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ife_platform.config import ConfigError
from ife_platform.continual.transfer import (
    MODES,
    MODULE_GROUPS,
    TransferSpec,
    apply_task_switch,
    freeze_groups,
    group_digests,
    group_parameter_names,
    make_heads,
    module_groups,
    parameter_digest,
    parse_head,
    parse_mode,
    swap_head,
    trainable_parameters,
    valid_modes,
)
from ife_platform.extractors import EXTRACTORS
from ife_platform.rainbow.agent import QNetwork, build_q_network
from ife_platform.rainbow.losses import categorical_double_q_loss

ACTIONS = 18
EXTRACTOR_KWARGS = {
    "ife": {"width": 1, "spectral_norm": True},
    "impala": {"width": 1, "spectral_norm": True},
    "cnn_attention": {"width": 1, "spectral_norm": True},
}


def build(extractor: str = "ife", seed: int = 0) -> QNetwork:
    torch.manual_seed(seed)
    return build_q_network(
        extractor,
        ACTIONS,
        extractor_kwargs=EXTRACTOR_KWARGS.get(extractor, {}),
        hidden=32,
        noisy=True,
        num_atoms=11,
    )


def pair(extractor: str = "ife", seed: int = 0) -> tuple[QNetwork, QNetwork]:
    online = build(extractor, seed)
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return online, target


def batch(seed: int, n: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randint(0, 256, (n, 4, 84, 84), generator=g, dtype=torch.uint8),
        "next_obs": torch.randint(0, 256, (n, 4, 84, 84), generator=g, dtype=torch.uint8),
        "action": torch.randint(0, ACTIONS, (n,), generator=g),
        "reward": torch.randn(n, generator=g),
    }


def train(online: QNetwork, target: QNetwork, steps: int = 2, seed: int = 0) -> None:
    """RainbowTask's update: noisy C51 double-Q loss, Adam over the trainable parameters.

    Both networks stay in train mode (as under Lightning), so spectral norms iterate and
    noisy layers sample. Gradients of the last step are kept for inspection.
    """
    online.train()
    target.train()
    opt = torch.optim.Adam(trainable_parameters(online), lr=1e-3)
    for i in range(steps):
        b = batch(seed * 100 + i)
        online.reset_noise()
        out = online(b["obs"])
        with torch.no_grad():
            target.reset_noise()
            online_next, target_next = online(b["next_obs"]), target(b["next_obs"])
        n = b["obs"].shape[0]
        terms = categorical_double_q_loss(
            out,
            b["action"],
            online_next,
            target_next,
            b["reward"],
            torch.full((n,), 0.99),
            online.support,
            torch.ones(n),
        )
        opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt.step()


def frozen_outputs(net: QNetwork, spec: TransferSpec, x: torch.Tensor) -> list[torch.Tensor]:
    """Train-mode outputs of the frozen parts: HUE's masked features, the whole extractor."""
    net.train()
    out = []
    with torch.no_grad():
        if "hue" in spec.freeze:
            out.append(net.extractor.attention(net.extractor.hue(x.float() / 255))[0])
        if "afe" in spec.freeze:
            out.append(net.extractor(x))
    return out


# ---------------------------------------------------------------------------------------------
# Groups and modes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extractor", sorted(EXTRACTORS))
def test_groups_partition_every_parameter(extractor: str) -> None:
    net = build(extractor)
    names = group_parameter_names(net)
    assert list(names) == list(MODULE_GROUPS[extractor])
    flat = [n for group in names.values() for n in group]
    assert sorted(flat) == sorted(n for n, _ in net.named_parameters())  # each exactly once
    groups = module_groups(net)
    for g, modules in groups.items():
        assert sum(p.numel() for m in modules for p in m.parameters()) == sum(
            dict(net.named_parameters())[n].numel() for n in names[g]
        )
    if extractor == "ife":
        assert groups["hue"] == [net.extractor.hue, net.extractor.attention]
        assert groups["afe"] == [net.extractor.afe]
    else:
        assert set(groups) == {"extractor", "head"}


def test_parse_mode_valid_and_canonical() -> None:
    a = parse_mode("reset_afe + freeze_hue", "ife")
    b = parse_mode(["freeze_hue", "reset_afe"], "ife")
    assert a == b and a.name == "freeze_hue+reset_afe"
    assert a.freeze == {"hue"} and a.reset == {"afe"} and a.trainable == {"afe", "head"}
    assert parse_mode("freeze_ife", "ife").freeze == {"hue", "afe"}
    assert parse_mode("freeze_extractor", "ife").freeze == {"hue", "afe"}
    assert parse_mode("scratch", "ife").reset == {"hue", "afe", "head"}
    assert parse_mode("scratch", "nature_cnn").reset == {"extractor", "head"}
    assert parse_mode("finetune", "impala").freeze == frozenset()
    assert parse_mode("freeze_extractor+reset_head", "der_cnn").reset == {"head"}
    assert valid_modes("nature_cnn") == ["finetune", "freeze_extractor", "reset_head", "scratch"]
    assert set(valid_modes("ife")) == set(MODES)
    assert parse_head("per_game") == "per_game"


@pytest.mark.parametrize(
    ("mode", "extractor", "needles"),
    [
        ("freeze_hue", "nature_cnn", ["freeze_hue", "hue", "nature_cnn", "finetune, freeze_ext"]),
        ("frezee_hue", "ife", ["frezee_hue", "Did you mean 'freeze_hue'?", "Valid:"]),
        ("freeze_hue+reset_hue", "ife", ["'freeze_hue' and 'reset_hue'", "group 'hue'"]),
        ("freeze_ife+reset_afe", "ife", ["'freeze_ife' and 'reset_afe'", "group 'afe'"]),
        ("freeze_hue+freeze_ife", "ife", ["overlap", "group 'hue'"]),
        ("scratch+freeze_hue", "ife", ["'scratch' cannot be combined with 'freeze_hue'"]),
        ("finetune+reset_afe", "ife", ["'finetune' cannot be combined"]),
        ("reset_afe+reset_afe", "ife", ["given twice"]),
        ("freeze_hue+", "ife", ["empty transfer mode"]),
        ("finetune", "ifee", ["unknown extractor 'ifee'", "Did you mean 'ife'?"]),
    ],
)
def test_parse_mode_errors(mode: str, extractor: str, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse_mode(mode, extractor)
    assert isinstance(err.value, ValueError)
    for needle in needles:
        assert needle in str(err.value), str(err.value)
    if "+" in mode and "given twice" not in needles[0]:
        assert "Valid modes for extractor" in str(err.value)


def test_parse_head_typo() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'per_game'"):
        parse_head("pergame")


def test_spec_must_match_network() -> None:
    with pytest.raises(ValueError, match="validated for extractor 'ife'"):
        apply_task_switch(build("nature_cnn"), parse_mode("finetune", "ife"), 1, 0)


# ---------------------------------------------------------------------------------------------
# Task switches with real training
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode",
    ["finetune", "freeze_hue", "freeze_ife", "freeze_hue+reset_afe", "reset_hue", "scratch"],
)
def test_task_switch_semantics_under_training(mode: str) -> None:
    spec = parse_mode(mode, "ife")
    online, target = pair()
    report0 = apply_task_switch(online, spec, 0, seed=7, target=target)
    assert report0["reset"] == [] and report0["frozen"] == []  # task 0: everything trains
    start = group_digests(online)
    train(online, target, seed=0)  # task 0
    end0 = group_digests(online)
    assert all(end0[g] != start[g] for g in start)  # every group learned on task 0

    report = apply_task_switch(online, spec, 1, seed=7, target=target)
    switched = group_digests(online)
    assert report["group_digests"] == switched
    assert parameter_digest(target) == parameter_digest(online)  # target synced
    for g in spec.groups:
        assert (switched[g] != end0[g]) == (g in spec.reset), g  # only reset groups change
    names = group_parameter_names(online)
    assert report["reset"] == [n for g in sorted(spec.reset) for n in names[g]]
    assert sorted(report["frozen"]) == sorted(n for g in spec.freeze for n in names[g])
    assert report["num_trainable"] == sum(p.numel() for p in trainable_parameters(online))
    params = dict(online.named_parameters())
    assert all(params[n].grad is None for n in report["reset"])  # no stale task-0 gradients

    x = batch(99)["obs"]
    frozen_before = frozen_outputs(online, spec, x)

    train(online, target, steps=2, seed=1)  # task 1, train mode throughout
    after = group_digests(online)
    for g in spec.groups:
        if g in spec.freeze:
            assert after[g] == switched[g] == end0[g], g  # bit-identical, buffers included
            assert all(params[n].grad is None for n in names[g]), g
            assert not any(params[n].requires_grad for n in names[g]), g
        else:
            assert after[g] != switched[g], g  # trainable groups move
            assert all(params[n].grad is not None for n in names[g]), g
    target_now = group_digests(target)
    for g in spec.freeze:  # untouched by the target's own train-mode forwards (SN, noise)
        assert target_now[g] == after[g], g
    for before, now in zip(frozen_before, frozen_outputs(online, spec, x), strict=True):
        assert torch.equal(before, now)  # same effective computation, in train mode


def test_frozen_stays_frozen_over_later_tasks() -> None:
    spec = parse_mode("freeze_ife+reset_head", "ife")
    online, target = pair()
    apply_task_switch(online, spec, 0, 3, target=target)
    train(online, target, steps=2)
    end0 = group_digests(online)
    heads = []
    for k in (1, 2):
        report = apply_task_switch(online, spec, k, 3, target=target)
        heads.append(report["group_digests"]["head"])
        train(online, target, steps=2, seed=k)
        now = group_digests(online)
        assert now["hue"] == end0["hue"] and now["afe"] == end0["afe"]
    assert heads[0] != heads[1]  # each switch draws a new head (seed depends on the task)


def test_requires_grad_alone_lets_spectral_norm_drift() -> None:
    """The finding: a frozen SN conv still changes its u vector in train-mode forwards."""
    net = build()
    afe = net.extractor.afe
    conv = afe.stage[1].conv0
    assert hasattr(conv, "parametrizations")  # IFE's AFE uses spectral norm
    x = torch.rand(2, afe.features_dim // 64, 14, 14)
    afe.requires_grad_(False)
    afe.train()
    u0 = conv.parametrizations.weight[0]._u.clone()
    out0 = afe(x)
    out1 = afe(x)
    assert not torch.equal(conv.parametrizations.weight[0]._u, u0)
    assert not torch.equal(out0, out1)  # effective weight changed without any optimiser step

    freeze_groups(net, parse_mode("freeze_ife", "ife"))
    before = parameter_digest(afe)
    outs = [afe(x) for _ in range(3)]
    assert parameter_digest(afe) == before
    assert all(torch.equal(o, outs[0]) for o in outs)
    afe.eval()
    assert torch.equal(afe(x), outs[0])  # train-mode forward == eval-mode forward


# ---------------------------------------------------------------------------------------------
# Re-initialisation
# ---------------------------------------------------------------------------------------------


def test_resets_are_seeded_and_group_wise() -> None:
    def reset(mode: str, seed: int, task: int = 1) -> dict[str, str]:
        net = build(seed=0)
        apply_task_switch(net, parse_mode(mode, "ife"), task, seed)
        return group_digests(net)

    a, b = reset("reset_afe", 5), reset("reset_afe", 5)
    assert a == b  # same seed, same weights (buffers too)
    assert reset("reset_afe", 6)["afe"] != a["afe"]
    assert reset("reset_afe", 5, task=2)["afe"] != a["afe"]
    both = reset("reset_hue+reset_afe", 5)
    assert both["afe"] == a["afe"]  # a group's new weights do not depend on the other resets
    rng = torch.get_rng_state()
    reset("scratch", 1)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left alone


@pytest.mark.parametrize("extractor", ["ife", "impala", "nature_cnn"])
def test_reset_matches_build_init(extractor: str) -> None:
    fresh = build(extractor, seed=1)
    net = build(extractor, seed=0)
    apply_task_switch(net, parse_mode("scratch", extractor), 1, 11)
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    fresh_convs = dict(fresh.named_modules())
    relu_gain = extractor != "nature_cnn"
    for name, conv in convs:
        ref = fresh_convs[name]
        # Build-time signature: make_conv zeroes conv biases, PyTorch's default does not.
        assert bool((ref.bias == 0).all()) == relu_gain, name
        assert bool((conv.bias == 0).all()) == relu_gain, name
        w = conv.parametrizations.weight.original if hasattr(conv, "parametrizations") else None
        w_ref = ref.parametrizations.weight.original if w is not None else ref.weight
        w = conv.weight if w is None else w
        ratio = (w.std() / w_ref.std()).item()
        assert 0.8 < ratio < 1.25, (name, ratio)  # same init distribution
        if w is not conv.weight:  # SN: fresh u is a unit vector and sigma is the spectral norm
            sn = conv.parametrizations.weight[0]
            sigma = torch.linalg.matrix_norm(w.detach().flatten(1), ord=2)
            est = torch.dot(sn._u, sn._reshape_weight_to_matrix(w.detach()) @ sn._v)
            assert torch.isclose(est, sigma, rtol=0.05)


# ---------------------------------------------------------------------------------------------
# Per-game heads
# ---------------------------------------------------------------------------------------------


def test_per_game_heads_stay_separate() -> None:
    spec = parse_mode("freeze_hue", "ife")
    online, target = pair()
    games = ["pong", "breakout", "pong"]
    heads = make_heads(online, games, seed=2)
    assert list(heads) == ["pong", "breakout"] and heads["pong"] is online.head
    assert parameter_digest(heads["breakout"]) == parameter_digest(
        make_heads(build(seed=0), games, seed=2)["breakout"]
    )  # seeded

    digests: dict[str, str] = {}
    for k, game in enumerate(games):
        swap_head(online, heads, game, target=target)
        assert online.head is heads[game] and target.head is not heads[game]
        apply_task_switch(online, spec, k, 0, target=target)
        if game in digests:
            assert parameter_digest(heads[game]) == digests[game]  # resumed where it stopped
        others = {g: parameter_digest(h) for g, h in heads.items() if g != game}
        train(online, target, steps=2, seed=k)
        assert all(parameter_digest(heads[g]) == d for g, d in others.items())  # untouched
        assert parameter_digest(heads[game]) != digests.get(game)
        digests[game] = parameter_digest(heads[game])
    assert not any(p.requires_grad for p in target.parameters())


def test_per_game_action_counts_and_mode() -> None:
    online, target = pair()
    heads = make_heads(online, ["pong", "breakout"], num_actions={"pong": 6, "breakout": 4})
    assert heads["pong"] is not online.head  # 6 != 18: a new head
    online.eval()
    swap_head(online, heads, "breakout", target=target)
    assert online.num_actions == 4 and target.num_actions == 4
    assert not online.head.training  # takes the network's mode (noise off in eval)
    assert online.q_values(batch(0)["obs"]).shape == (4, 4)
    with pytest.raises(KeyError, match="Did you mean 'pong'"):
        swap_head(online, heads, "pongg")


# ---------------------------------------------------------------------------------------------
# Recurrent actor-critics (A3C-LSTM, S3TA)
# ---------------------------------------------------------------------------------------------


def _s3ta(seed: int = 0) -> nn.Module:
    from ife_platform.a3c.s3ta import build_s3ta

    torch.manual_seed(seed)
    return build_s3ta(ACTIONS, conv_channels=(8, 16), answer_hidden=(32, 16), hidden_size=16)


def test_recurrent_layouts_partition_every_parameter() -> None:
    from ife_platform.a3c.model import build_actor_critic
    from ife_platform.continual.transfer import extractor_name

    a3c = build_actor_critic("ife", ACTIONS, extractor_kwargs={"width": 1}, hidden=16)
    s3ta = _s3ta()
    assert extractor_name(s3ta) == "s3ta"
    expected = {
        "a3c": {"hue": ["extractor.hue", "extractor.attention"], "afe": ["extractor.afe"]},
        "s3ta": {"extractor": ["extractor", "query", "answer_mlp"]},
    }
    expected["a3c"]["head"] = ["lstm", "actor", "critic"]
    expected["s3ta"]["head"] = ["lstm", "policy", "value"]
    for key, net in (("a3c", a3c), ("s3ta", s3ta)):
        names = group_parameter_names(net)
        flat = [n for group in names.values() for n in group]
        assert sorted(flat) == sorted(n for n, _ in net.named_parameters())  # each exactly once
        groups = module_groups(net)
        assert {g: [net.get_submodule(p) for p in ps] for g, ps in expected[key].items()} == groups
    assert valid_modes("s3ta") == ["finetune", "freeze_extractor", "reset_head", "scratch"]
    with pytest.raises(ConfigError, match="hue"):
        parse_mode("freeze_hue", "s3ta")


def test_s3ta_reset_matches_build_init_and_freeze_keeps_the_attention() -> None:
    fresh, net = _s3ta(seed=1), _s3ta(seed=0)
    apply_task_switch(net, parse_mode("scratch", "s3ta"), 1, 11)
    ref = dict(fresh.named_modules())
    for name, conv in net.named_modules():
        if not isinstance(conv, nn.Conv2d) or conv.bias is None:
            continue
        # vision convs: make_conv (zero bias); ConvLSTM input conv: PyTorch default (not zero)
        vision = name.startswith("extractor.convs")
        assert bool((ref[name].bias == 0).all()) == vision, name
        assert bool((conv.bias == 0).all()) == vision, name
        ratio = (conv.weight.std() / ref[name].weight.std()).item()
        assert 0.8 < ratio < 1.25, (name, ratio)

    # freeze_extractor: a real optimiser step moves the head group only
    net = _s3ta(seed=2)
    apply_task_switch(net, parse_mode("freeze_extractor", "s3ta"), 1, 0)
    before = group_digests(net)
    opt = torch.optim.Adam(trainable_parameters(net), lr=1e-2)
    obs = torch.randint(0, 256, (3, 2, 1, 84, 84), dtype=torch.uint8)
    first = torch.zeros(3, 2, dtype=torch.bool)
    logits, values, _ = net.train()(obs, net.initial_state(2), first)
    (logits.logsumexp(-1).mean() + values.pow(2).mean()).backward()
    opt.step()
    after = group_digests(net)
    assert after["extractor"] == before["extractor"] and after["head"] != before["head"]
