"""Extractor tests: contract over every registered extractor, IFE's exact cell-to-window map,
parameter counts against hand-worked numbers, and the cell geometry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from ife_platform.extractors import (
    EXTRACTORS,
    AttentionExtractor,
    FeatureExtractor,
    build_extractor,
)

NAMES = sorted(EXTRACTORS)
EXPECTED_DIM = {
    "a3c_cnn": 1024,  # 84 -> pool 42 -> 40 -> 20 -> 19 -> 9 -> 9 -> 4: 64 x 4 x 4
    "cnn_attention": 4096,
    "der_cnn": 576,
    "ife": 4096,
    "impala": 4096,
    "nature_cnn": 3136,
}
EXPECTED_GRID = {"cnn_attention": (15, 15), "ife": (14, 14)}


def _build(name: str, seed: int = 0, **kwargs) -> FeatureExtractor:
    torch.manual_seed(seed)
    return build_extractor(name, **kwargs)


def _uint8_obs(batch: int = 3, size: int = 84, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 4, size, size), dtype=torch.uint8, generator=gen)


# ---------------------------------------------------------------- registry and contract


def test_registry_names():
    assert NAMES == ["a3c_cnn", "cnn_attention", "der_cnn", "ife", "impala", "nature_cnn"]
    for name, cls in EXTRACTORS.items():
        assert issubclass(cls, FeatureExtractor), name


def test_unknown_name_suggests_closest_and_lists_valid():
    with pytest.raises(ValueError) as err:
        build_extractor("ifee")
    msg = str(err.value)
    assert "unknown extractor 'ifee'" in msg
    assert "did you mean 'ife'?" in msg
    assert "valid: a3c_cnn, cnn_attention, der_cnn, ife, impala, nature_cnn" in msg


def test_unknown_kwarg_raises_type_error():
    with pytest.raises(TypeError):
        build_extractor("nature_cnn", hue_window=6)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_mask(name):
    model = _build(name).eval()
    obs = _uint8_obs()
    with torch.no_grad():
        out_u8 = model(obs)
        mask_u8 = model.attention_mask if model.has_attention else None
        out_f = model(obs.float() / 255.0)
    assert model.features_dim == EXPECTED_DIM[name]
    assert out_u8.shape == (3, model.features_dim)
    assert out_u8.dtype == torch.float32
    assert torch.isfinite(out_u8).all()
    torch.testing.assert_close(out_u8, out_f, rtol=1e-5, atol=1e-6)
    assert model.has_attention == isinstance(model, AttentionExtractor)
    assert model.has_attention == (name in EXPECTED_GRID)
    if model.has_attention:
        assert model.cell_grid == EXPECTED_GRID[name]
        mask, logits = model.attention_mask, model.attention_logits
        assert mask.shape == logits.shape == (3, *EXPECTED_GRID[name])
        assert (mask >= 0).all()
        torch.testing.assert_close(mask.sum(dim=(1, 2)), torch.ones(3))
        torch.testing.assert_close(mask, torch.softmax(logits.flatten(1), -1).view_as(mask))
        torch.testing.assert_close(mask_u8, mask)
        # Different inputs give different masks (the mask is not a constant).
        assert not torch.allclose(mask[0], mask[1])


@pytest.mark.parametrize(("hue_window", "grid"), [(6, 14), (12, 7), (7, 12), (4, 21)])
def test_ife_grid_follows_hue_window(hue_window, grid):
    model = _build("ife", width=1, hue_window=hue_window).eval()
    with torch.no_grad():
        out = model(_uint8_obs(batch=2))
    assert model.cell_grid == (grid, grid)
    assert model.attention_mask.shape == (2, grid, grid)
    assert out.shape == (2, 32 * 64) == (2, model.features_dim)


@pytest.mark.parametrize(("hue_window", "input_size"), [(5, 84), (8, 84), (6, 80), (0, 84)])
def test_ife_window_that_does_not_tile_raises(hue_window, input_size):
    with pytest.raises(ValueError, match="does not tile"):
        build_extractor("ife", hue_window=hue_window, input_size=input_size)


def test_ife_error_lists_divisors():
    with pytest.raises(
        ValueError, match=r"84 % 5 = 4\); choose a divisor of 84: 1, 2, 3, 4, 6, 7, 12"
    ):
        build_extractor("ife", hue_window=5)


def test_wrong_input_size_raises():
    model = _build("ife", width=1)
    with pytest.raises(ValueError, match="84x84"):
        model(_uint8_obs(batch=1, size=96))


def test_non_default_channels_and_size():
    obs = torch.rand(2, 1, 96, 96)
    for name, kwargs in [
        ("ife", {"width": 1, "input_size": 96, "hue_window": 8}),
        ("cnn_attention", {"width": 1, "input_size": 96}),
        ("impala", {"width": 1}),
        ("der_cnn", {"input_size": 96}),
        ("nature_cnn", {"input_size": 96}),
    ]:
        model = _build(name, in_channels=1, **kwargs).eval()
        with torch.no_grad():
            assert model(obs).shape == (2, model.features_dim), name
    assert _build("ife", width=1, input_size=96, hue_window=8).cell_grid == (12, 12)
    # cnn_attention at 96: (96 - 8) / 4 + 1 = 23 -> 20 -> 18.
    assert _build("cnn_attention", width=1, input_size=96).cell_grid == (18, 18)
    # nature at 96: 23 -> 10 -> 8; der at 96: 19 -> 3.
    assert _build("nature_cnn", input_size=96).features_dim == 64 * 8 * 8
    assert _build("der_cnn", input_size=96).features_dim == 64 * 3 * 3


# ---------------------------------------------------------------- HUE spatial preservation


def _logit_changes(model: AttentionExtractor, windows, seed: int = 0) -> torch.Tensor:
    """|Δ logits| [N, rows, cols] when input window n (all channels) is replaced by new noise.

    The unperturbed input is element 0 of the same batch as the N perturbed copies.
    """
    gen = torch.Generator().manual_seed(seed)
    size = model.input_size
    base = torch.rand(1, 4, size, size, generator=gen, dtype=torch.float64)
    batch = base.repeat(len(windows) + 1, 1, 1, 1)
    for i, (y0, y1, x0, x1) in enumerate(windows, start=1):
        noise = torch.rand(4, y1 - y0, x1 - x0, generator=gen, dtype=torch.float64)
        batch[i, :, y0:y1, x0:x1] = noise
    with torch.no_grad():
        model(batch)
    logits = model.attention_logits
    return (logits[1:] - logits[:1]).abs()


def _leakage(delta: torch.Tensor, cells) -> torch.Tensor:
    """Fraction of |Δ logit| mass outside the perturbed cell, per perturbation [N]."""
    own = torch.stack([delta[i, r, c] for i, (r, c) in enumerate(cells)])
    total = delta.flatten(1).sum(1)
    return (total - own) / total


@pytest.mark.parametrize(
    ("width", "hue_window"), [(1, 6), (2, 6), (1, 12), (1, 7)], ids=["w1", "w2", "w1-k12", "w1-k7"]
)
def test_hue_preserves_space_exactly(width, hue_window):
    """Perturbing cell (r, c)'s window changes the attention logit of (r, c) and no other."""
    model = _build("ife", width=width, hue_window=hue_window).double().eval()
    rows, cols = model.cell_grid
    k = hue_window
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    # Windows from first principles (not from the model): cell (r, c) <-> [k r, k r + k)^2.
    windows = [(k * r, k * r + k, k * c, k * c + k) for r, c in cells]
    delta = _logit_changes(model, windows)  # [rows * cols, rows, cols]
    for i, (r, c) in enumerate(cells):
        assert delta[i, r, c] > 1e-6, f"perturbing cell {(r, c)} left its own logit unchanged"
        others = delta[i].clone()
        others[r, c] = 0.0
        assert others.max() <= 1e-12, (
            f"cell {(r, c)} leaked into {divmod(int(others.argmax()), cols)}"
        )
    assert _leakage(delta, cells).max() <= 1e-10


def test_cnn_attention_cells_leak():
    """The same probe on overlapping conv features: one patch moves many cells' logits."""
    model = _build("cnn_attention").double().eval()
    rows, cols = model.cell_grid
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    # A 4 x 4 patch at the centre of each cell's 28 x 28 receptive field [4r, 4r + 28).
    windows = [(4 * r + 12, 4 * r + 16, 4 * c + 12, 4 * c + 16) for r, c in cells]
    delta = _logit_changes(model, windows)  # [225, 15, 15]
    leak = _leakage(delta, cells)
    changed = delta > 1e-12
    assert (leak > 0.0).all()
    assert leak.mean() > 0.5  # most of the change lands outside the "own" cell
    assert changed.flatten(1).sum(1).min() > 1
    # Every changed cell's receptive field (cell_input_window) overlaps the patch.
    rf = model.cell_input_windows()  # [15, 15, 4]
    for i, (y0, y1, x0, x1) in enumerate(windows):
        overlaps = (rf[..., 0] < y1) & (rf[..., 1] > y0) & (rf[..., 2] < x1) & (rf[..., 3] > x0)
        assert not (changed[i] & ~overlaps).any()
        assert changed[i, cells[i][0], cells[i][1]]


# ---------------------------------------------------------------- parameter counts

# Hand-worked (weights + biases) at the defaults, 4 input channels, width 2:
#   ife: conv1 4*32*9+32 = 1184; conv2 32*64*4+64 = 8256; conv3 64*64+64 = 4160;
#        attention 64*512+512 + 512+1 = 33793; AFE 4 convs * (64*64*9+64) = 147712 -> 195105
#   cnn_attention: 4*32*64+32 = 8224; 32*64*16+64 = 32832; 64*64*9+64 = 36928;
#        attention 33793; AFE 147712 -> 259489
#   impala: 4*32*9+32 = 1184; 4*(32*32*9+32) = 36992; 32*64*9+64 = 18496; 147712;
#        64*64*9+64 = 36928; 147712 -> 389024
#   nature_cnn: 8224 + 32*64*16+64 = 32832 + 36928 -> 77984
#   der_cnn: 4*32*25+32 = 3232; 32*64*25+64 = 51264 -> 54496
EXPECTED_PARAMS = {
    # a3c_cnn (4 frames): 4*32*25+32 = 3232; 32*32*25+32 = 25632; 32*64*16+64 = 32832;
    #   64*64*9+64 = 36928 -> 98624
    "a3c_cnn": 98624,
    "cnn_attention": 259489,
    "der_cnn": 54496,
    "ife": 195105,
    "impala": 389024,
    "nature_cnn": 77984,
}


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count(name):
    assert _n_params(build_extractor(name)) == EXPECTED_PARAMS[name]


def test_ife_width1_parameter_count():
    # 4*16*9+16 = 592; 16*32*4+32 = 2080; 32*32+32 = 1056; 32*512+512+513 = 17409;
    # 4*(32*32*9+32) = 36992 -> 58129
    assert _n_params(build_extractor("ife", width=1)) == 58129


@pytest.mark.parametrize("n_actions", [4, 18])
def test_ife_q_network_matches_published_size(n_actions):
    """IFE (width 2) + dueling head ~ 2.29 M + 257 |A| parameters (the published network)."""
    extractor = build_extractor("ife")
    value = nn.Sequential(nn.Linear(extractor.features_dim, 256), nn.ReLU(), nn.Linear(256, 1))
    advantage = nn.Sequential(
        nn.Linear(extractor.features_dim, 256), nn.ReLU(), nn.Linear(256, n_actions)
    )
    with torch.no_grad():
        feats = extractor(_uint8_obs(batch=2))
        q = value(feats) + advantage(feats) - advantage(feats).mean(-1, keepdim=True)
    assert q.shape == (2, n_actions)
    total = _n_params(extractor) + _n_params(value) + _n_params(advantage)
    assert total == 195105 + 2 * (4096 * 256 + 256) + 257 + 257 * n_actions
    published = 2.29e6 + 257 * n_actions
    assert abs(total - published) / published < 0.01


# ---------------------------------------------------------------- init and spectral norm


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def test_spectral_norm_only_on_residual_convs():
    for name in ("ife", "cnn_attention", "impala"):
        on = _build(name)
        off = _build(name, spectral_norm=False)
        sn_on = [parametrize.is_parametrized(c, "weight") for c in _convs(on)]
        assert not any(parametrize.is_parametrized(c, "weight") for c in _convs(off)), name
        n_res = 4 if name != "impala" else 12  # 2 blocks x 2 convs per residual stage
        assert sum(sn_on) == n_res, name
        assert _n_params(on) == _n_params(off) == EXPECTED_PARAMS[name]
    # HUE's convs are never normalised.
    assert not any(parametrize.is_parametrized(c, "weight") for c in _convs(_build("ife").hue))


def test_spectral_norm_bounds_residual_weights():
    model = _build("ife").train()
    for _ in range(5):  # power iterations run in train-mode forwards
        model(_uint8_obs(batch=1))
    for conv in _convs(model.afe):
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.05


def test_ife_conv_init_uses_relu_gain_and_zero_bias():
    model = _build("ife", spectral_norm=False)
    for conv in _convs(model):
        fan_in = conv.weight[0].numel()
        bound = 1.0 / math.sqrt(fan_in)  # PyTorch default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert torch.count_nonzero(conv.bias) == 0
        w = conv.weight.detach().abs().max()
        assert w <= math.sqrt(2.0) * bound + 1e-7
        assert w > 1.1 * bound  # scaled by the ReLU gain sqrt(2), not left at the default


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    model = _build(name).train()
    model(_uint8_obs(batch=2)).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        if pname == "attention.score.2.bias":
            # softmax(e + b) == softmax(e): the score's output bias gets exactly no gradient.
            assert p.grad.abs().max() < 1e-6
        else:
            assert p.grad.abs().sum() > 0, pname


# ---------------------------------------------------------------- cell geometry


def test_ife_cell_input_windows_hand_checked():
    model = build_extractor("ife", width=1)
    assert model.cell_input_window(0, 0) == (0, 6, 0, 6)
    assert model.cell_input_window(13, 13) == (78, 84, 78, 84)
    assert model.cell_input_window(2, 5) == (12, 18, 30, 36)
    wins = model.cell_input_windows()
    assert wins.shape == (14, 14, 4)
    assert tuple(wins[2, 5].tolist()) == (12, 18, 30, 36)
    with pytest.raises(IndexError):
        model.cell_input_window(14, 0)
    assert build_extractor("ife", width=1, hue_window=12).cell_input_window(6, 1) == (
        72,
        84,
        12,
        24,
    )


def test_ife_cell_screen_rect_hand_checked():
    model = build_extractor("ife", width=1)
    y0, y1, x0, x1 = model.cell_screen_rect(13, 13)
    assert (y0, y1, x1) == (195.0, 210.0, 160.0)
    assert x0 == pytest.approx(78 * 160 / 84) == pytest.approx(148.5714286)
    assert model.cell_screen_rect(0, 0) == pytest.approx((0.0, 15.0, 0.0, 6 * 160 / 84))
    # A different screen size rescales accordingly.
    assert model.cell_screen_rect(1, 1, screen_hw=(84, 84)) == (6.0, 12.0, 6.0, 12.0)
    rects = model.cell_screen_rects()
    assert rects.shape == (14, 14, 4)
    for r, c in [(0, 0), (3, 7), (13, 13)]:
        assert tuple(rects[r, c].tolist()) == model.cell_screen_rect(r, c)


def test_ife_screen_rects_tile_the_screen():
    model = build_extractor("ife", width=1)
    rects = model.cell_screen_rects().view(-1, 4)  # [196, 4]
    # Every raw pixel centre lies in exactly one cell rectangle.
    ys = torch.arange(210, dtype=torch.float64) + 0.5
    xs = torch.arange(160, dtype=torch.float64) + 0.5
    in_y = (ys[None, :] >= rects[:, 0:1]) & (ys[None, :] < rects[:, 1:2])  # [196, 210]
    in_x = (xs[None, :] >= rects[:, 2:3]) & (xs[None, :] < rects[:, 3:4])  # [196, 160]
    count = (in_y[:, :, None] & in_x[:, None, :]).sum(0)  # [210, 160]
    assert (count == 1).all()
    # Neighbours share edges exactly, the outer edges are the screen's, areas add up.
    grid = model.cell_screen_rects()
    assert torch.equal(grid[:-1, :, 1], grid[1:, :, 0])
    assert torch.equal(grid[:, :-1, 3], grid[:, 1:, 2])
    assert grid[..., 0].min() == 0.0 and grid[..., 1].max() == 210.0
    assert grid[..., 2].min() == 0.0 and grid[..., 3].max() == 160.0
    area = ((rects[:, 1] - rects[:, 0]) * (rects[:, 3] - rects[:, 2])).sum()
    assert float(area) == pytest.approx(210 * 160)


def test_cnn_attention_receptive_fields_hand_checked():
    model = build_extractor("cnn_attention", width=1)
    # Receptive field 8 + 3*4 + 2*4 = 28, jump 4.
    assert model.cell_input_window(0, 0) == (0, 28, 0, 28)
    assert model.cell_input_window(7, 3) == (28, 56, 12, 40)
    assert model.cell_input_window(14, 14) == (56, 84, 56, 84)
    assert model.cell_screen_rect(0, 0) == pytest.approx((0.0, 70.0, 0.0, 28 * 160 / 84))
    rects = model.cell_screen_rects()
    # Overlapping: neighbouring rectangles overlap by 24 input pixels (60 screen rows).
    assert float(rects[0, 0, 1] - rects[1, 0, 0]) == pytest.approx(24 * 210 / 84)


@pytest.mark.parametrize("name", sorted(EXPECTED_GRID))
def test_vectorised_geometry_matches_per_cell(name):
    model = build_extractor(name, width=1)
    rows, cols = model.cell_grid
    wins, rects = model.cell_input_windows(), model.cell_screen_rects((250, 160))
    assert wins.shape == rects.shape == (rows, cols, 4)
    for r in range(rows):
        for c in range(cols):
            assert tuple(wins[r, c].tolist()) == model.cell_input_window(r, c)
            assert tuple(rects[r, c].tolist()) == model.cell_screen_rect(r, c, (250, 160))


def test_mask_entropy_by_hand() -> None:
    from ife_platform.extractors.base import mask_entropy

    uniform = torch.full((2, 14, 14), 1 / 196)
    onehot = torch.zeros(1, 2, 2)
    onehot[0, 1, 0] = 1.0
    half = torch.tensor([[[0.5, 0.5], [0.0, 0.0]]])  # H = ln 2
    assert float(mask_entropy(uniform)) == pytest.approx(math.log(196), rel=1e-5)
    assert float(mask_entropy(onehot)) == pytest.approx(0.0, abs=1e-9)
    assert float(mask_entropy(half)) == pytest.approx(math.log(2), rel=1e-6)
    # the batch mean: (ln 196 + 0) / 2 for one uniform and one one-hot 14x14 mask
    mixed = torch.stack(
        [uniform[0], torch.nn.functional.one_hot(torch.tensor(5), 196).view(14, 14).float()]
    )
    assert float(mask_entropy(mixed)) == pytest.approx(math.log(196) / 2, rel=1e-5)
