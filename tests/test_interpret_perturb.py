"""Perturbation interpretability: spatial leakage, Greydanus saliency, deletion/insertion,
parameter randomisation (ife_platform.interpret.perturb)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ife_platform.extractors import build_extractor
from ife_platform.interpret.perturb import (
    cells_to_pixels,
    curve_auc,
    deletion_insertion,
    eval_mode,
    gaussian_blur,
    greydanus_masks,
    normalise_saliency,
    not_reinitialised,
    perturbation_saliency,
    rainbow_action_score,
    rainbow_outputs,
    randomised_copy,
    saliency_grid,
    spatial_leakage,
    upsample_saliency,
)
from ife_platform.rainbow.agent import build_q_network

# A small bright square on a dark screen: its blur is darker everywhere inside it.
REGION = (slice(40, 44), slice(60, 64))


def random_obs(b: int = 1, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 4, 84, 84), generator=gen, dtype=torch.uint8)


def square_obs(b: int = 1) -> Tensor:
    obs = torch.zeros(b, 4, 84, 84, dtype=torch.uint8)
    obs[:, :, REGION[0], REGION[1]] = 255
    return obs


def region_sum(x: Tensor) -> Tensor:
    return x[:, :, REGION[0], REGION[1]].sum(dim=(1, 2, 3))


# ------------------------------------------------------------------------------------------
# Spatial leakage
# ------------------------------------------------------------------------------------------


def test_hue_leakage_is_exactly_zero_for_every_cell() -> None:
    torch.manual_seed(0)
    ife = build_extractor("ife", width=1, attention_hidden=64)
    r = spatial_leakage(ife, random_obs(1), batch_size=196)
    assert r.leakage.shape == (14, 14) and r.cells.shape == (196, 2)
    assert torch.equal(r.leakage, torch.zeros(14, 14, dtype=torch.float64))
    assert r.mean == 0.0 and r.max == 0.0
    assert torch.equal(r.outside, torch.zeros_like(r.outside))
    assert (r.total > 0).all()  # every perturbation did change its own logit
    # Only the perturbed cell's own logit moved.
    own = r.delta_sum.view(196, 196)
    assert torch.equal(own, torch.diag(own.diagonal()))


def test_hue_leakage_zero_published_width_and_other_perturbations() -> None:
    torch.manual_seed(1)
    ife = build_extractor("ife")  # width 2, window 6, as published
    cells = [(0, 0), (5, 9), (13, 13)]
    gen = torch.Generator().manual_seed(0)
    for value in ("invert", "noise", 0):
        r = spatial_leakage(ife, random_obs(1, seed=3), value=value, cells=cells, generator=gen)
        assert r.mean == 0.0 and r.max == 0.0, value
    r = spatial_leakage(ife, random_obs(1).float() / 255, value=1.0, cells=cells)
    assert r.max == 0.0
    assert torch.isnan(r.leakage).sum() == 196 - len(cells)


def test_cnn_attention_leaks_and_geometry_is_right() -> None:
    torch.manual_seed(0)
    cnn = build_extractor("cnn_attention", width=1, attention_hidden=64)
    cells = [(0, 0), (7, 7), (14, 3)]
    r = spatial_leakage(cnn, random_obs(1), cells=cells)
    assert r.leakage.shape == (15, 15)
    for row, col in cells:
        assert r.leakage[row, col] > 0.0
    assert r.mean > 0.0 and r.max <= 1.0
    # Cells that cannot see the perturbed window do not move at all.
    assert torch.equal(r.outside_receptive, torch.zeros_like(r.outside_receptive))
    # Receptive field 28, jump 4: the centre cell's window reaches the cells within 6 steps.
    centre = r.delta_sum[1]
    assert centre[1:14, 1:14].sum() == centre.sum()


def test_leakage_accepts_a_q_network() -> None:
    torch.manual_seed(0)
    net = build_q_network("ife", 3, extractor_kwargs={"width": 1, "attention_hidden": 32})
    net.train()
    r = spatial_leakage(net, random_obs(1), cells=[(2, 2)])
    assert r.max == 0.0
    assert net.training and net.extractor.training  # mode restored


# ------------------------------------------------------------------------------------------
# Greydanus saliency
# ------------------------------------------------------------------------------------------


def toy_outputs(x: Tensor) -> dict[str, Tensor]:
    patch = x[:, :, REGION[0], REGION[1]]
    return {"policy": patch.flatten(1), "value": patch.sum(dim=(1, 2, 3))}


def test_saliency_peaks_at_the_grid_point_nearest_the_region() -> None:
    maps = perturbation_saliency(toy_outputs, square_obs(2), batch_size=50)
    assert set(maps) == {"policy", "value"}
    for m in maps.values():
        assert m.shape == (2, 17, 17) and (m >= 0).all()
        flat = int(m[0].argmax())
        # Region centre (41.5, 61.5): nearest grid point is pixel (40, 60) = grid (8, 12).
        assert divmod(flat, 17) == (8, 12)
        assert m[0, 0, 0] < 1e-9 * m[0].max()  # far away: nothing
        assert m[0, 16, 0] < 1e-9 * m[0].max()
        assert torch.equal(m[0], m[1])


def test_saliency_batching_does_not_change_the_maps() -> None:
    obs = random_obs(2)
    a = perturbation_saliency(toy_outputs, obs, stride=10, batch_size=7)
    b = perturbation_saliency(toy_outputs, obs, stride=10, batch_size=200)
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_saliency_of_a_constant_network_is_zero() -> None:
    def const(x: Tensor) -> dict[str, Tensor]:
        return {"policy": torch.ones(x.shape[0], 6), "value": torch.full((x.shape[0],), 3.0)}

    maps = perturbation_saliency(const, random_obs(1), stride=7)
    for m in maps.values():
        assert m.shape == (1, 12, 12)
        assert torch.equal(m, torch.zeros_like(m))


def test_saliency_of_a_q_network() -> None:
    torch.manual_seed(0)
    net = build_q_network("ife", 4, extractor_kwargs={"width": 1, "attention_hidden": 32})
    net.train()
    fn = rainbow_outputs(net)
    out = fn(random_obs(3))
    q = net.eval().q_values(random_obs(3))
    net.train()
    torch.testing.assert_close(out["value"], q.amax(-1))
    torch.testing.assert_close(out["policy"], q - q.mean(-1, keepdim=True))
    maps = perturbation_saliency(fn, random_obs(1), stride=21)
    assert maps["policy"].shape == (1, 4, 4) and maps["value"].shape == (1, 4, 4)
    assert maps["policy"].sum() > 0
    assert net.training  # restored
    probs = rainbow_outputs(net, policy="softmax")(random_obs(2))["policy"]
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))


def test_gaussian_blur_matches_scipy() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    img = torch.rand(2, 3, 84, 84, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = gaussian_blur(img, 3.0)
    ref = torch.stack(
        [
            torch.stack([torch.from_numpy(ndimage.gaussian_filter(c.numpy(), 3.0)) for c in f])
            for f in img
        ]
    )
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)


def test_masks_grid_and_upsampling() -> None:
    assert saliency_grid(84, 5).tolist() == list(range(0, 84, 5))
    masks = greydanus_masks((84, 84))
    assert masks.shape == (17, 17, 84, 84)
    assert masks[3, 4, 15, 20] == 1.0
    assert math.isclose(float(masks[3, 4, 20, 20]), math.exp(-25 / 50), rel_tol=1e-6)
    maps = torch.rand(2, 17, 17)
    for mode in ("bilinear", "nearest"):
        up = upsample_saliency(maps, (84, 84), 5, mode=mode)
        assert up.shape == (2, 84, 84)
        torch.testing.assert_close(up[:, ::5, ::5], maps)  # grid points land on their pixels
    up = upsample_saliency(maps, (84, 84), 5)
    torch.testing.assert_close(up[:, 2, 0], 0.6 * maps[:, 0, 0] + 0.4 * maps[:, 1, 0])
    torch.testing.assert_close(up[:, 83, 83], maps[:, 16, 16])


def test_normalise_saliency() -> None:
    maps = torch.stack([torch.arange(9.0).view(3, 3), torch.full((3, 3), 2.0)])
    mm = normalise_saliency(maps)
    assert mm[0].min() == 0 and mm[0].max() == 1
    assert torch.equal(mm[1], torch.zeros(3, 3))
    torch.testing.assert_close(normalise_saliency(maps, "sum").sum((1, 2)), torch.ones(2))
    assert normalise_saliency(maps, "max")[1].max() == 1


# ------------------------------------------------------------------------------------------
# Deletion / insertion
# ------------------------------------------------------------------------------------------


def region_importance(b: int) -> Tensor:
    imp = torch.rand(b, 84, 84, generator=torch.Generator().manual_seed(1))
    imp[:, REGION[0], REGION[1]] += 2.0
    return imp


def test_deletion_falls_monotonically_to_the_baseline() -> None:
    obs = square_obs(2)
    x = obs.float() / 255
    imp = region_importance(2)
    curve = deletion_insertion(region_sum, obs, imp, steps=10, baseline="zero", batch_size=8)
    assert curve.shape == (2, 11)
    torch.testing.assert_close(curve[:, 0], region_sum(x))
    assert (curve[:, 1:] <= curve[:, :-1]).all()
    assert (curve[:, 1:] == 0).all()  # the 16 region pixels go first
    rand = deletion_insertion(
        region_sum,
        obs,
        imp,
        steps=10,
        baseline="zero",
        random_order=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert (rand[:, 1:] <= rand[:, :-1]).all()
    torch.testing.assert_close(rand[:, 0], curve[:, 0])
    torch.testing.assert_close(rand[:, -1], curve[:, -1])
    assert (curve_auc(curve) < curve_auc(rand)).all()


def test_blur_baseline_and_insertion_endpoints() -> None:
    obs = square_obs(1)
    x = obs.float() / 255
    imp = region_importance(1)
    blurred = region_sum(gaussian_blur(x, 5.0))
    dele = deletion_insertion(region_sum, obs, imp, steps=5)
    assert (dele[:, 1:] <= dele[:, :-1]).all()
    torch.testing.assert_close(dele[:, -1], blurred)
    ins = deletion_insertion(region_sum, obs, imp, steps=5, mode="insertion")
    torch.testing.assert_close(ins[:, 0], blurred)
    torch.testing.assert_close(ins[:, 1:], region_sum(x).expand(1, 5))


def test_deletion_with_cells_and_per_action_scores() -> None:
    obs = square_obs(1)
    ife = build_extractor("ife", width=1, attention_hidden=16)
    cell_imp = torch.zeros(1, 14, 14)
    cell_imp[0, 40 // 6, 60 // 6] = 1.0  # the cell holding pixels (36..41, 60..65)
    cell_imp[0, 42 // 6, 60 // 6] = 0.5  # (42..47, 60..65)
    pix = cells_to_pixels(cell_imp, ife.cell_input_windows())
    assert pix[0, 36:42, 60:66].eq(1 / 36).all() and pix.sum() == pytest.approx(1.5)

    def two(x: Tensor) -> Tensor:  # [N, 2]; the argmax action is column 0
        s = region_sum(x)
        return torch.stack([s, -s], dim=1)

    curve = deletion_insertion(
        two, obs, cell_imp, steps=84 * 84 // 36, windows=ife.cell_input_windows(), baseline="zero"
    )
    assert curve[0, 0] == 16 * 4
    assert curve[0, 1] == 8 * 4  # the first 36 pixels are exactly the best cell's window
    assert curve[0, 2] == 0


def test_rainbow_action_score_tracks_the_greedy_action() -> None:
    torch.manual_seed(0)
    net = build_q_network("nature_cnn", 3)
    obs = random_obs(2)
    q = net.q_values(obs).detach()
    curve = deletion_insertion(
        rainbow_action_score(net), obs, torch.rand(2, 84, 84), steps=2, baseline="zero"
    )
    torch.testing.assert_close(curve[:, 0], q.amax(-1))
    zero_q = net.q_values(torch.zeros(1, 4, 84, 84)).detach()[0]
    torch.testing.assert_close(curve[:, 2], zero_q[q.argmax(-1)])


# ------------------------------------------------------------------------------------------
# Parameter randomisation
# ------------------------------------------------------------------------------------------


def small_network() -> nn.Module:
    torch.manual_seed(0)
    net = build_q_network(
        "ife", 4, extractor_kwargs={"width": 1, "attention_hidden": 32}, noisy=True
    )
    with torch.no_grad():  # stand-in for training: move every parameter off its init
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return net


def test_randomised_copy_changes_every_parameter_and_not_the_original() -> None:
    net = small_network()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.random.get_rng_state()
    obs = random_obs(2)
    with eval_mode(net), torch.no_grad():
        q_before = net.q_values(obs)
    assert not_reinitialised(net) == []
    rand = randomised_copy(net, seed=1)
    assert torch.equal(torch.random.get_rng_state(), rng)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    new = dict(rand.named_parameters())
    assert new.keys() == dict(net.named_parameters()).keys()
    for name, p in net.named_parameters():
        assert not torch.equal(p, new[name]), name
    with eval_mode(net), torch.no_grad():
        assert torch.equal(net.q_values(obs), q_before)  # the original still works, unchanged
        assert not torch.allclose(rand.q_values(obs), q_before)
    # Deterministic by seed.
    again = dict(randomised_copy(net, seed=1).named_parameters())
    other = dict(randomised_copy(net, seed=2).named_parameters())
    for name in new:
        assert torch.equal(new[name], again[name]), name
        if "sigma" not in name:  # NoisyLinear's sigma init is a constant, sigma0 / sqrt(p)
            assert not torch.equal(new[name], other[name]), name
    # Spectral norm is still attached and normalises the fresh weight.
    conv = rand.extractor.afe.stage[1].conv0
    assert parametrize.is_parametrized(conv, "weight")
    with eval_mode(rand), torch.no_grad():
        sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.1
        assert torch.isfinite(rand.q_values(random_obs(2))).all()


def test_randomised_copy_only_a_prefix() -> None:
    net = small_network()
    rand = randomised_copy(net, seed=0, only=["head"])
    new = dict(rand.named_parameters())
    for name, p in net.named_parameters():
        assert torch.equal(p, new[name]) != name.startswith("head."), name
