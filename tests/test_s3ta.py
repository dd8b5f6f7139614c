"""S3TA agent (Mott et al. 2019): shapes, masks, fixed basis, gradients, resets, geometry."""

from __future__ import annotations

import math

import pytest
import torch

from ife_platform.a3c.s3ta import (
    S3TAAgent,
    axis_geometry,
    build_s3ta,
    cosine_spatial_basis,
    same_padding,
    spatial_attention,
)
from ife_platform.extractors import AttentionExtractor

N_ACTIONS = 18
GRID = (11, 11)  # 84 -> 21 -> 11 with "SAME" padding


@pytest.fixture(scope="module")
def agent() -> S3TAAgent:
    torch.manual_seed(0)
    return build_s3ta(N_ACTIONS)


def _obs(t: int, b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, b, 1, 84, 84), generator=g, dtype=torch.uint8)


def _random_state(agent: S3TAAgent, b: int, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(s.shape, generator=g) * 0.5 for s in agent.initial_state(b))


# ---- pure functions, hand-checked ---------------------------------------------------------


def test_same_padding_hand_checked():
    assert same_padding(84, 8, 4) == (21, 2, 2)  # (21 - 1) * 4 + 8 - 84 = 4
    assert same_padding(21, 4, 2) == (11, 1, 2)  # (11 - 1) * 2 + 4 - 21 = 3: odd pixel after
    assert same_padding(210, 8, 4) == (53, 3, 3)
    assert same_padding(53, 4, 2) == (27, 1, 2)
    assert same_padding(160, 8, 4) == (40, 2, 2)
    assert same_padding(40, 4, 2) == (20, 1, 1)
    assert same_padding(11, 3, 1) == (11, 1, 1)


def test_axis_geometry_hand_checked():
    # 84: offset -2 (conv1) - 1 * 4 (conv2) - 1 * 8 (ConvLSTM) = -14; rf 8 + 3*4 + 2*8 = 36.
    geo = axis_geometry(84, [(8, 4), (4, 2), (3, 1)])
    assert (geo.grid, geo.rf, geo.jump, geo.offset) == (11, 36, 8, -14)
    assert axis_geometry(210, [(8, 4), (4, 2), (3, 1)]).offset == -15
    assert axis_geometry(160, [(8, 4), (4, 2), (3, 1)]).grid == 20


def test_cosine_basis_hand_checked():
    s = cosine_spatial_basis(2, 3, freqs=2)  # channel = 2 u + v
    assert s.shape == (4, 2, 3)
    half = 0.5
    torch.testing.assert_close(s[0], torch.ones(2, 3))  # u = v = 0: constant
    row = torch.tensor([1.0, half, -half])  # cos(pi * j / 3), j = 0, 1, 2
    torch.testing.assert_close(s[1], torch.stack([row, row]))  # u = 0, v = 1
    col = torch.tensor([[1.0], [0.0]])  # cos(pi * i / 2), i = 0, 1
    torch.testing.assert_close(s[2], col.expand(2, 3), atol=1e-7, rtol=0)  # u = 1, v = 0
    torch.testing.assert_close(s[3], col * row, atol=1e-7, rtol=0)
    assert cosine_spatial_basis(*GRID).shape == (64, *GRID)
    assert math.isclose(
        cosine_spatial_basis(11, 11)[8 * 3 + 5, 4, 7].item(),
        math.cos(math.pi * 3 * 4 / 11) * math.cos(math.pi * 5 * 7 / 11),
        rel_tol=1e-6,
    )


def test_spatial_attention_hand_checked():
    # One query, two cells; logits <q, k_l> = (2, 0) -> weights (e^2, 1) / (e^2 + 1).
    q = torch.tensor([[[1.0, 0.0]]])  # [B=1, N_q=1, d_k=2]
    k = torch.tensor([[[2.0, 0.0], [5.0, 5.0]]])  # [1, d_k=2, L=2]
    v = torch.tensor([[[1.0, 3.0]]])  # [1, d_v=1, L=2]
    answers, weights, logits = spatial_attention(q, k, v)
    w0 = math.exp(2) / (math.exp(2) + 1)
    torch.testing.assert_close(logits, torch.tensor([[[2.0, 0.0]]]))
    torch.testing.assert_close(weights, torch.tensor([[[w0, 1 - w0]]]))
    torch.testing.assert_close(answers, torch.tensor([[[w0 * 1 + (1 - w0) * 3]]]))


# ---- shapes and masks ---------------------------------------------------------------------


def test_shapes_at_84_single_gray_frame(agent):
    assert agent.cell_grid == GRID and agent.extractor.cell_grid == GRID
    assert agent.num_actions == N_ACTIONS and agent.has_attention
    state = agent.initial_state(3)
    assert [tuple(s.shape) for s in state] == [(3, 128, *GRID)] * 2 + [(3, 256)] * 2
    obs = _obs(1, 3)[0]
    logits, value, new_state = agent.step(obs, state, torch.zeros(3, dtype=torch.bool))
    assert logits.shape == (3, N_ACTIONS) and value.shape == (3,)
    assert [s.shape for s in new_state] == [s.shape for s in state]
    assert agent.attention_masks.shape == (3, 4, *GRID)
    assert agent.attention_mask.shape == (3, *GRID)
    logits, values, _ = agent(_obs(4, 3), state, torch.zeros(4, 3, dtype=torch.bool))
    assert logits.shape == (4, 3, N_ACTIONS) and values.shape == (4, 3)
    assert agent.attention_masks.shape == (12, 4, *GRID)
    assert agent.attention_logits.shape == (12, 4, *GRID)


def test_parameter_count_at_84_with_18_actions(agent):
    assert sum(p.numel() for p in agent.parameters()) == 2_181_523


def test_published_rgb_setting_gives_27_by_20():
    model = build_s3ta(6, in_channels=3, input_hw=(210, 160))
    assert model.cell_grid == (27, 20)
    obs = torch.randint(0, 256, (2, 3, 210, 160), dtype=torch.uint8)
    logits, value, _ = model.step(obs, model.initial_state(2), torch.ones(2, dtype=torch.bool))
    assert logits.shape == (2, 6) and model.attention_masks.shape == (2, 4, 27, 20)
    rects = model.cell_screen_rects()
    torch.testing.assert_close(rects, model.cell_input_windows().double())  # input == screen


def test_wrong_shapes_raise(agent):
    state = agent.initial_state(2)
    with pytest.raises(ValueError, match="expects"):
        agent.step(torch.zeros(2, 4, 84, 84, dtype=torch.uint8), state, torch.zeros(2).bool())
    with pytest.raises(ValueError, match="first"):
        agent(_obs(3, 2), state, torch.zeros(2, 3, dtype=torch.bool))


def test_every_mask_sums_to_one(agent):
    state = _random_state(agent, 2)
    first = torch.zeros(3, 2, dtype=torch.bool)
    first[1, 0] = True
    with torch.no_grad():
        agent(_obs(3, 2), state, first)
    masks = agent.attention_masks  # [6, 4, 11, 11]
    assert (masks >= 0).all()
    torch.testing.assert_close(masks.sum((-2, -1)), torch.ones(6, 4))  # per frame, per head
    torch.testing.assert_close(agent.attention_mask.sum((-2, -1)), torch.ones(6))
    torch.testing.assert_close(agent.attention_mask, masks.mean(1))
    torch.testing.assert_close(masks.flatten(2), agent.attention_logits.flatten(2).softmax(-1))
    with torch.no_grad():
        agent.step(_obs(1, 5)[0], agent.initial_state(5), torch.ones(5, dtype=torch.bool))
    torch.testing.assert_close(agent.attention_masks.sum((-2, -1)), torch.ones(5, 4))


# ---- fixed spatial basis and gradients ----------------------------------------------------


def test_spatial_basis_is_a_fixed_buffer():
    torch.manual_seed(0)
    model = build_s3ta(N_ACTIONS)
    basis = model.spatial_basis
    assert not basis.requires_grad
    assert all(p is not basis for p in model.parameters())
    assert "spatial_basis" in dict(model.named_buffers())
    assert "spatial_basis" not in model.state_dict()  # non-persistent: recomputed per grid
    torch.testing.assert_close(basis, cosine_spatial_basis(*GRID))
    before = basis.clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.1)
    logits, values, _ = model(_obs(3, 2), model.initial_state(2), torch.zeros(3, 2).bool())
    (logits.logsumexp(-1).sum() + values.pow(2).sum()).backward()
    assert basis.grad is None
    opt.step()
    assert torch.equal(model.spatial_basis, before)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = build_s3ta(N_ACTIONS)
    # T = 3 from a zero state: the ConvLSTM's hidden conv and the query layer (fed by the
    # previous policy state) only get gradient from the second step on.
    logits, values, _ = model(_obs(3, 2), model.initial_state(2), torch.zeros(3, 2).bool())
    (logits.log_softmax(-1)[..., 0].sum() + values.sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    groups = {n.split(".")[0] + "." + n.split(".")[1] for n, _ in model.named_parameters()}
    assert {"extractor.convs", "extractor.convlstm", "query.0", "lstm.weight_hh"} <= groups


# ---- recurrent state: reset exactly at `first`, carried across calls -----------------------


def test_forward_equals_step_loop(agent):
    obs, state = _obs(4, 2), _random_state(agent, 2)
    first = torch.tensor([[False, True], [False, False], [True, False], [False, False]])
    with torch.no_grad():
        logits, values, final = agent(obs, state, first)
        s = state
        for t in range(4):
            lg, v, s = agent.step(obs[t], s, first[t])
            torch.testing.assert_close(lg, logits[t], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(v, values[t], atol=1e-5, rtol=1e-4)
    for a, b in zip(s, final, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_reset_exactly_at_first(agent):
    obs, state = _obs(5, 2, seed=3), _random_state(agent, 2)
    first = torch.zeros(5, 2, dtype=torch.bool)
    first[2, 0] = True  # env 0 starts a new episode at t = 2; env 1 runs on
    with torch.no_grad():
        logits, values, _ = agent(obs, state, first)
        masks = agent.attention_masks.view(5, 2, 4, *GRID)
        # Env 0 from t = 2 equals a fresh run from the zero state on obs[2:].
        fresh_l, fresh_v, _ = agent(obs[2:, :1], agent.initial_state(1), first[2:, :1])
        fresh_m = agent.attention_masks.view(3, 1, 4, *GRID)
        # Env 0 before t = 2 and env 1 throughout equal runs without any reset.
        cont_l, cont_v, _ = agent(obs, state, torch.zeros(5, 2, dtype=torch.bool))
    torch.testing.assert_close(logits[2:, 0], fresh_l[:, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(values[2:, 0], fresh_v[:, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(masks[2:, 0], fresh_m[:, 0], atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(logits[:2, 0], cont_l[:2, 0])
    torch.testing.assert_close(logits[:, 1], cont_l[:, 1])
    torch.testing.assert_close(values[:, 1], cont_v[:, 1])
    # The reset matters: without it env 0 at t = 2 differs.
    assert not torch.allclose(values[2, 0], cont_v[2, 0], atol=1e-3)


def test_first_zeroes_every_state_row_even_nan(agent):
    state = tuple(torch.full_like(s, float("nan")) for s in agent.initial_state(2))
    obs = _obs(1, 2)[0]
    with torch.no_grad():
        lg, v, _ = agent.step(obs, state, torch.ones(2, dtype=torch.bool))
        ref_l, ref_v, _ = agent.step(obs, agent.initial_state(2), torch.zeros(2).bool())
    torch.testing.assert_close(lg, ref_l)
    torch.testing.assert_close(v, ref_v)


def test_state_carried_across_calls(agent):
    obs, state = _obs(6, 2, seed=5), _random_state(agent, 2)
    first = torch.zeros(6, 2, dtype=torch.bool)
    first[4, 1] = True
    with torch.no_grad():
        logits, values, final = agent(obs, state, first)
        l1, v1, mid = agent(obs[:3], state, first[:3])
        l2, v2, end = agent(obs[3:], mid, first[3:])
        # A different carried state changes the next call's output.
        _, v_other, _ = agent(obs[3:], agent.initial_state(2), first[3:])
    torch.testing.assert_close(torch.cat([l1, l2]), logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.cat([v1, v2]), values, atol=1e-5, rtol=1e-4)
    for a, b in zip(end, final, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(v_other[0], v2[0], atol=1e-3)


# ---- cell geometry --------------------------------------------------------------------------


def test_vision_is_an_attention_extractor_with_geometry(agent):
    vision = agent.extractor
    assert isinstance(vision, AttentionExtractor) and vision.has_attention
    assert vision.features_dim == 128 * 11 * 11
    assert vision(_obs(1, 2)[0]).shape == (2, vision.features_dim)
    assert vision.attention_mask is None  # masks live on the agent, never stale here


def test_cell_input_windows_hand_checked(agent):
    win = agent.extractor.cell_input_windows()
    assert win.dtype == torch.int64 and win.shape == (*GRID, 4)
    # Cell i sees [8 i - 14, 8 i + 22) clipped to [0, 84): rf 36, jump 8.
    assert win[0, 0].tolist() == [0, 22, 0, 22]
    assert win[1, 2].tolist() == [0, 30, 2, 38]
    assert win[5, 5].tolist() == [26, 62, 26, 62]
    assert win[10, 10].tolist() == [66, 84, 66, 84]
    assert agent.extractor.cell_input_window(3, 7) == tuple(win[3, 7].tolist())
    torch.testing.assert_close(agent.cell_input_windows(), win)


def test_windows_overlap_as_expected(agent):
    win = agent.extractor.cell_input_windows()
    y0, y1 = win[:, 0, 0], win[:, 0, 1]
    # Interior neighbours share rf - jump = 36 - 8 = 28 input rows; windows cover the input.
    overlap = y1[:-1] - y0[1:]
    assert overlap[2:-2].tolist() == [28] * 6
    assert (overlap > 0).all()
    assert y0[0] == 0 and y1[-1] == 84 and ((y1 - y0) <= 36).all()
    torch.testing.assert_close(win[..., :2].transpose(0, 1), win[..., 2:])  # square input


def test_windows_are_the_one_step_receptive_field():
    torch.manual_seed(0)
    vision = build_s3ta(N_ACTIONS).extractor.double()
    x = torch.rand(1, 1, 84, 84, dtype=torch.float64, requires_grad=True)
    out = vision.encode(x).view(1, 128, *GRID)
    win = vision.cell_input_windows()
    for r, c in [(0, 0), (5, 5), (2, 9), (10, 10)]:
        (grad,) = torch.autograd.grad(out[0, :, r, c].sum(), x, retain_graph=True)
        ys, xs = torch.nonzero(grad[0, 0], as_tuple=True)
        bbox = [ys.min().item(), ys.max().item() + 1, xs.min().item(), xs.max().item() + 1]
        assert bbox == win[r, c].tolist(), (r, c)


def test_cell_screen_rects_inside_the_screen(agent):
    rects = agent.extractor.cell_screen_rects()
    assert rects.dtype == torch.float64 and rects.shape == (*GRID, 4)
    assert (rects[..., 0] >= 0).all() and (rects[..., 1] <= 210).all()
    assert (rects[..., 2] >= 0).all() and (rects[..., 3] <= 160).all()
    assert (rects[..., 1] > rects[..., 0]).all() and (rects[..., 3] > rects[..., 2]).all()
    # (y0, y1, x0, x1) = window * (210 / 84, 210 / 84, 160 / 84, 160 / 84).
    assert rects[5, 5].tolist() == pytest.approx([65.0, 155.0, 26 * 160 / 84, 62 * 160 / 84])
    assert rects[10, 10, 1].item() == 210.0 and rects[10, 10, 3].item() == 160.0
    assert agent.extractor.cell_screen_rect(5, 5) == pytest.approx(tuple(rects[5, 5].tolist()))
    torch.testing.assert_close(agent.cell_screen_rects(), rects)
