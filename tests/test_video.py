import numpy as np
import pytest

from ife_platform import video

ROWS = COLS = 14
W_CELL = 160 / 14  # 11.428...: cell c spans [c * 11.43, (c + 1) * 11.43) raw columns


@pytest.fixture(scope="module")
def rects14():
    return video.grid_cell_rects(ROWS, COLS)  # cell height 15 rows, width 160/14


def test_grid_cell_rects_values(rects14):
    assert rects14.shape == (14, 14, 4)
    np.testing.assert_allclose(rects14[0, 0], [0, 15, 0, W_CELL])
    np.testing.assert_allclose(rects14[13, 13], [195, 210, 13 * W_CELL, 160])
    np.testing.assert_allclose(rects14[2, 3], [30, 45, 3 * W_CELL, 4 * W_CELL])


@pytest.mark.parametrize(
    ("y", "x", "cell"),
    [
        (0, 0, (0, 0)),
        (14, 0, (0, 0)),  # last raw row of cell row 0 (rows 0..14)
        (15, 0, (1, 0)),  # first row of cell row 1
        (0, 10, (0, 0)),  # centre 10.5 < 11.43
        (0, 11, (0, 1)),  # centre 11.5 >= 11.43
        (0, 22, (0, 1)),  # centre 22.5 < 22.86
        (0, 23, (0, 2)),  # centre 23.5 >= 22.86
        (105, 80, (7, 7)),  # 105 // 15 = 7; 80.5 / 11.43 = 7.04
        (209, 148, (13, 12)),  # centre 148.5 < 148.57 = 13 * 11.43
        (209, 149, (13, 13)),
        (209, 159, (13, 13)),  # bottom-right corner
    ],
)
def test_cell_index_map_hand_checked(rects14, y, x, cell):
    idx = video.cell_index_map(rects14, (210, 160))
    assert idx.shape == (210, 160)
    assert idx[y, x] == cell[0] * COLS + cell[1]


def test_cell_index_map_tiles_every_pixel_once(rects14):
    idx = video.cell_index_map(rects14)
    counts = np.bincount(idx.ravel(), minlength=196)
    assert idx.min() == 0 and idx.max() == 195
    # every cell row is 15 pixels high; every cell column 11 or 12 pixels wide
    per_cell = counts.reshape(14, 14)
    col_widths = per_cell[0] // 15
    assert set(col_widths.tolist()) <= {11, 12} and col_widths.sum() == 160
    assert (per_cell == per_cell[0]).all()


def test_cell_index_map_cached_and_read_only(rects14):
    a = video.cell_index_map(rects14)
    b = video.cell_index_map(rects14.copy())
    assert a is b
    with pytest.raises(ValueError):
        a[0, 0] = 5


def test_cell_index_map_uncovered_and_overlap():
    # Two overlapping rectangles over the top half only.
    rects = np.array([[[0, 105, 0, 100], [0, 105, 60, 160]]], dtype=float)  # [1, 2, 4]
    idx = video.cell_index_map(rects)
    assert (idx[105:] == -1).all()  # bottom half: no cell
    assert idx[0, 59] == 0 and idx[0, 100] == 1  # covered by one rect only
    assert idx[0, 70] == 0  # centre 70.5: both contain it, nearer to centre 50 than 110
    assert idx[0, 85] == 1  # centre 85.5: nearer to 110


def _peaked_mask(r, c, rng):
    mask = rng.uniform(0.0, 0.5, size=(ROWS, COLS))
    mask[0, 0] = 0.0  # min -> 0 after normalisation
    mask[r, c] = 1.0  # max -> 1; every other cell <= 0.5
    return mask / mask.sum()


def test_overlay_max_brightness_exactly_on_argmax_cell(rects14):
    rng = np.random.default_rng(0)
    frame = np.full((210, 160, 3), 40, np.uint8)
    mask = _peaked_mask(3, 5, rng)
    out = video.overlay_mask(frame, mask, rects14, scale="minmax")
    assert out.shape == (210, 160, 3) and out.dtype == np.uint8
    idx = video.cell_index_map(rects14)
    in_cell = idx == 3 * COLS + 5
    red = out[..., 0]
    assert (red[in_cell] == 255).all()  # 0.6 * 40 + 255 saturates
    assert (red[~in_cell] < 255).all()
    assert red.max() == 255 and np.array_equal(red == red.max(), in_cell)
    # other channels: only the dimmed frame, 0.6 * 40 = 24
    assert (out[..., 1] == 24).all() and (out[..., 2] == 24).all()
    # formula at a pixel of cell (0, 0): min of the mask -> 0 -> 24
    assert red[0, 0] == 24


def test_overlay_formula_and_constant_mask(rects14):
    frame = np.random.default_rng(1).integers(0, 256, (210, 160, 3), dtype=np.uint8)
    out = video.overlay_mask(frame, np.full((14, 14), 1 / 196), rects14)
    np.testing.assert_array_equal(out, np.rint(0.6 * frame.astype(np.float32)).astype(np.uint8))
    # mid value 0.5 in cell (1, 1): red = rint(0.6 * f + 127.5)
    mask = np.zeros((14, 14))
    mask[1, 1], mask[2, 2] = 0.5, 1.0
    out = video.overlay_mask(frame, mask, rects14, alpha=0.6, scale="minmax")
    y, x = 20, 15  # inside cell (1, 1)
    expected = min(255, int(np.rint(np.float32(0.6) * np.float32(frame[y, x, 0]) + 127.5)))
    assert abs(int(out[y, x, 0]) - expected) <= 1


def test_overlay_heat_grid_and_torch_input(rects14):
    torch = pytest.importorskip("torch")
    frame = np.zeros((210, 160, 3), np.uint8)
    mask = torch.zeros(14, 14)
    mask[4, 4] = 1.0
    heat = video.overlay_mask(frame, mask, rects14, color="heat")
    y, x = 4 * 15 + 7, int(4.5 * W_CELL)
    assert tuple(heat[y, x]) == (255, 255, 255)  # hot ramp tops out at white
    assert tuple(heat[0, 0]) == (0, 0, 0)
    gridded = video.overlay_mask(frame, mask.numpy(), rects14, grid=True)
    assert tuple(gridded[14, 5]) == (128, 128, 128)  # last row of cell row 0 is a border row
    assert tuple(gridded[5, 5]) == (0, 0, 0)
    with pytest.raises(ValueError, match="valid: red"):
        video.overlay_mask(frame, mask, rects14, color="purple")
    with pytest.raises(ValueError, match="does not match"):
        video.overlay_mask(frame, np.zeros((15, 15)), rects14)


def test_side_by_side_and_resize_nearest():
    a = np.full((210, 160, 3), 7, np.uint8)
    b = np.full((84, 84), 200, np.uint8)  # gray, shorter: padded at the bottom
    out = video.side_by_side(a, b)
    assert out.shape == (210, 244, 3)
    assert (out[:84, 160:] == 200).all() and (out[84:, 160:] == 0).all()
    up = video.resize_nearest(np.arange(4).reshape(2, 2), (4, 6))
    np.testing.assert_array_equal(up[:, :3], [[0] * 3, [0] * 3, [2] * 3, [2] * 3])
    assert video.resize_nearest(b, (210, 160)).shape == (210, 160)


def _cell_means(frame_channel, idx):
    return np.bincount(idx.ravel(), weights=frame_channel.ravel().astype(float)) / np.bincount(
        idx.ravel()
    )


def test_write_mp4_roundtrip_bright_block_at_argmax(tmp_path, rects14):
    rng = np.random.default_rng(2)
    frame = np.full((210, 160, 3), 40, np.uint8)
    peaks = [(t % 14, (3 * t) % 14) for t in range(10)]
    frames = [
        video.overlay_mask(frame, _peaked_mask(r, c, rng), rects14, scale="minmax")
        for r, c in peaks
    ]
    path = video.write_mp4(tmp_path / "sub" / "mask.mp4", iter(frames), fps=15)
    assert path.exists() and path.stat().st_size > 0
    decoded = video.read_mp4(path)
    assert decoded.shape == (10, 210, 160, 3)  # 210 x 160 is even: written unpadded
    idx = video.cell_index_map(rects14)
    for t, (r, c) in enumerate(peaks):
        means = _cell_means(decoded[t, ..., 0], idx)
        assert means.argmax() == r * COLS + c
        # yuv420p halves chroma resolution, so red bleeds at cell edges: mean ~239, not 255.
        second = np.sort(means)[-2]
        assert means[r * COLS + c] > 220 and means[r * COLS + c] - second > 60
        assert np.abs(decoded[t].astype(int) - frames[t]).mean() < 4


def test_write_mp4_pads_odd_sizes_to_even(tmp_path):
    frames = [np.full((21, 15, 3), v, np.uint8) for v in (0, 128, 255)]
    decoded = video.read_mp4(video.write_mp4(tmp_path / "odd.mp4", frames))
    assert decoded.shape == (3, 22, 16, 3)  # one black row/column added at the bottom/right
    assert abs(int(decoded[2, 10, 7, 0]) - 255) < 8


def test_write_mp4_rejects_empty_and_mixed_sizes(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        video.write_mp4(tmp_path / "empty.mp4", [])
    frames = [np.zeros((10, 10, 3), np.uint8), np.zeros((12, 10, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1"):
        video.write_mp4(tmp_path / "mixed.mp4", frames)


def test_mask_video_recorder(tmp_path, rects14):
    rng = np.random.default_rng(3)
    rec = video.MaskVideoRecorder(
        cell_rects=rects14, with_raw=True, max_frames=5, scale="minmax", upscale=1, legend=False
    )
    frame = np.full((210, 160, 3), 40, np.uint8)
    for t in range(7):
        rec.add(frame, _peaked_mask(t, t, rng))
    assert len(rec) == 5 and rec.dropped == 2
    assert len(rec._geometries) == 1  # geometry stored once
    decoded = video.read_mp4(rec.write(tmp_path / "rec.mp4"))
    assert decoded.shape == (5, 210, 320, 3)  # raw | overlay
    idx = video.cell_index_map(rects14)
    for t in range(5):
        assert _cell_means(decoded[t, :, 160:, 0], idx).argmax() == t * COLS + t
    rec.clear()
    assert len(rec) == 0
    with pytest.raises(ValueError, match="no cell_rects"):
        video.MaskVideoRecorder().add(frame, np.zeros((14, 14)))


# -- the scale relative to uniform, and the legend -------------------------------------------


def test_mask_intensity_hand_worked():
    uniform = np.full((14, 14), 1 / 196)
    np.testing.assert_array_equal(video.mask_intensity(uniform), np.zeros((14, 14)))
    one_hot = np.zeros((14, 14))
    one_hot[2, 9] = 1.0
    m = video.mask_intensity(one_hot)
    assert m[2, 9] == 1.0 and m.sum() == 1.0  # top of the scale, every other cell at 0
    # two cells at 98/196 each: ln(98) / ln(196) = 4.5850 / 5.2781 = 0.86868
    two = np.zeros((14, 14))
    two[0, 0] = two[5, 5] = 0.5
    np.testing.assert_allclose(video.mask_intensity(two)[0, 0], 0.86868, atol=1e-5)
    # a cell at twice uniform: ln 2 / ln 196 = 0.13132; sqrt(196) = 14x uniform sits at 0.5
    p = np.full((14, 14), (1 - 2 / 196 - 14 / 196) / 194)
    p[0, 0], p[1, 1] = 2 / 196, 14 / 196
    m = video.mask_intensity(p)
    np.testing.assert_allclose([m[0, 0], m[1, 1]], [0.13132, 0.5], atol=1e-5)
    assert (np.delete(m.ravel(), [0, 15]) == 0).all()  # below uniform: 0
    # the scale divides by the sum first: any positive multiple shows the same
    np.testing.assert_allclose(video.mask_intensity(7.0 * p), m, atol=1e-6)
    # the demo's near-uniform mask (max 0.00523 against 1/196): ln(1.02508)/ln(196) = 0.0047
    near = np.full((14, 14), (1 - 0.00523) / 195)
    near[4, 4] = 0.00523
    assert video.mask_intensity(near).max() == pytest.approx(0.004695, abs=2e-5)
    # min-max stretches the same mask to the full range
    assert video.mask_intensity(near, "minmax").max() == 1.0
    with pytest.raises(ValueError, match="valid: uniform, minmax"):
        video.mask_intensity(near, "linear")


def test_uniform_mask_renders_one_flat_colour_one_hot_one_cell_at_the_top(rects14):
    frame = np.full((210, 160, 3), 50, np.uint8)
    flat = video.overlay_mask(frame, np.full((14, 14), 1 / 196), rects14)
    assert len(np.unique(flat.reshape(-1, 3), axis=0)) == 1  # one colour: 0.6 * 50 = 30
    assert tuple(flat[0, 0]) == (30, 30, 30)
    # the min-max option paints the near-uniform demo mask as a saturated block
    near = np.full((14, 14), (1 - 0.00523) / 195)
    near[4, 4] = 0.00523
    assert video.overlay_mask(frame, near, rects14, scale="minmax")[4 * 15 + 7, 50, 0] == 255
    assert video.overlay_mask(frame, near, rects14)[4 * 15 + 7, 50, 0] == 31  # 30 + 1.2
    one_hot = np.zeros((14, 14))
    one_hot[6, 3] = 1.0
    out = video.overlay_mask(frame, one_hot, rects14)
    colours, counts = np.unique(out.reshape(-1, 3), axis=0, return_counts=True)
    assert {tuple(c) for c in colours} == {(30, 30, 30), (255, 30, 30)}  # 30 + 255 saturates
    idx = video.cell_index_map(rects14)
    np.testing.assert_array_equal(out[..., 0] == 255, idx == 6 * COLS + 3)


def test_mask_stats_and_legend_text_match_the_mask():
    u = video.mask_stats(np.full((14, 14), 1 / 196))
    assert u.cells == 196 and u.max_over_uniform == pytest.approx(1.0)
    assert u.entropy == pytest.approx(np.log(196)) and u.max_entropy == pytest.approx(5.27811)
    assert u.text() == "mask max 1x uniform, entropy 5.278 of ln 196 = 5.278 nats"
    one_hot = np.zeros((14, 14))
    one_hot[0, 0] = 1
    assert video.mask_stats(one_hot).text() == (
        "mask max 196x uniform, entropy 0.000 of ln 196 = 5.278 nats"
    )
    # half / quarter / quarter over 3 of 4 cells: max 0.5 * 4 = 2; H = 1.5 ln 2 = 1.03972
    s = video.mask_stats(np.array([[2.0, 1.0], [1.0, 0.0]]))  # normalised by its sum
    assert s.max_over_uniform == pytest.approx(2.0) and s.entropy == pytest.approx(1.039721)
    assert video.scale_ticks("uniform", 196) == [(0.0, "1x"), (0.5, "14x"), (1.0, "196x uniform")]
    rec = video.MaskVideoRecorder(video.grid_cell_rects(2, 2))
    assert rec.legend_lines(np.array([[2.0, 1.0], [1.0, 0.0]]), "step 3  action FIRE") == [
        "step 3  action FIRE",
        "mask max 2x uniform, entropy 1.040 of ln 4 = 1.386 nats",
        "colour: mask / uniform, log scale, fixed (same in every frame)",
    ]
    minmax = video.MaskVideoRecorder(video.grid_cell_rects(2, 2), scale="minmax")
    assert "per-frame min-max" in minmax.legend_lines(np.ones((2, 2)))[-1]


def test_legend_strip_colour_bar_spans_the_scale():
    strip = video.legend_strip(400, ["step 1", "mask"], scale="uniform", cells=196, font_px=12)
    assert strip.shape[1] == 400 and strip.shape[0] % 2 == 0 and strip.dtype == np.uint8
    # the bar row: red rises from black (1x uniform) to 255 (196x uniform), no green or blue
    inner = strip[:, 10:-10]
    rows = np.flatnonzero((inner[..., 0] > 250).any(axis=1) & (inner[..., 1] == 0).all(axis=1))
    bar = strip[rows[0]]
    red = bar[10:-10, 0].astype(int)
    assert red[0] <= 2 and red[-1] >= 253 and (np.diff(red) >= 0).all()
    assert (strip[: rows[0], :, :] > 100).any()  # the text lines above the bar are drawn
    plain = video.legend_strip(400, ["no attention mask"], scale=None)
    assert plain.shape[0] < strip.shape[0]


def test_recorder_writes_upscaled_frames_with_legend(tmp_path, rects14):
    rec = video.MaskVideoRecorder(rects14, with_raw=True, upscale=2)
    frame = np.full((210, 160, 3), 50, np.uint8)
    one_hot = np.zeros((14, 14))
    one_hot[6, 3] = 1.0
    rec.add(frame, one_hot, caption="step 0  action NOOP  Q(a) 0.5")
    rec.add(frame, np.full((14, 14), 1 / 196), caption="step 1  action NOOP  Q(a) 0.4")
    decoded = video.read_mp4(rec.write(tmp_path / "big.mp4"))
    assert decoded.shape[0] == 2 and decoded.shape[2] == 2 * 320  # upscaled 2x, raw | overlay
    assert decoded.shape[1] > 2 * 210  # the legend strip under the picture
    overlay = decoded[:, : 2 * 210, 2 * 160 :].astype(int)
    idx = np.repeat(np.repeat(video.cell_index_map(rects14), 2, 0), 2, 1)
    inner = idx == 6 * COLS + 3
    # frame 0: the one cell at the top of the scale, the rest the dimmed frame (H.264 error)
    assert overlay[0][inner][:, 0].mean() > 245 and abs(overlay[0][~inner][:, 0].mean() - 30) < 3
    # frame 1: uniform, one flat colour
    assert abs(overlay[1][..., 0].mean() - 30) < 3 and overlay[1][..., 0].std() < 3
    bare = video.MaskVideoRecorder(upscale=3)
    bare.add(frame, None, caption="step 0")  # no attention: the frame alone, with its caption
    (only,) = list(bare.render())
    assert only.shape[1] == 480 and only.shape[0] > 630
