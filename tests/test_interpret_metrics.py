"""Alignment / faithfulness metrics against numbers worked out by hand.

Geometry used throughout (210 x 160 screen -> 84 x 84 observation, INTER_AREA, no crop):
observation row i covers screen rows [2.5 i, 2.5 (i + 1)); observation column j covers screen
columns [j * 40/21, (j + 1) * 40/21) (160 / 84 = 40/21 ~ 1.90476); one observation pixel is
2.5 * 40/21 = 100/21 screen pixels^2.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from ife_platform.interpret import metrics as M


def _grid_windows(n: int, rf: int, jump: int, size: int) -> np.ndarray:
    """[n, n, 4] windows (y0, y1, x0, x1): cell i spans [i * jump, min(i * jump + rf, size))."""
    lo = np.arange(n) * jump
    hi = np.minimum(lo + rf, size)
    win = np.zeros((n, n, 4), dtype=np.int64)
    win[..., 0], win[..., 1] = lo[:, None], hi[:, None]
    win[..., 2], win[..., 3] = lo[None, :], hi[None, :]
    return win


# IFE / HUE: 14 x 14 cells, each a disjoint 6 x 6 window (84 / 6 = 14).
IFE_WIN = _grid_windows(14, 6, 6, 84)
# CNN attention (8x8/4 -> 4x4/1 -> 3x3/1): 15 x 15 cells, receptive field 28, jump 4.
CNN_WIN = _grid_windows(15, 28, 4, 84)


# ------------------------------------------------------------------ boxes -> coverage


def test_single_screen_pixel_in_the_corner() -> None:
    # Box = screen pixel (0, 0), area 1, inside observation pixel (0, 0) of area 100/21:
    # coverage = 21/100 = 0.21, zero everywhere else.
    cov = M.boxes_to_obs_coverage([(0, 0, 1, 1)])
    assert cov.shape == (84, 84) and cov.dtype == np.float64
    assert cov[0, 0] == pytest.approx(0.21, abs=1e-12)
    assert np.count_nonzero(cov) == 1


def test_box_partly_off_the_top_left() -> None:
    # (x=-5, y=-3, w=8, h=5) clips to columns [0, 3), rows [0, 2).
    # Rows: obs row 0 = [0, 2.5) -> overlap 2.
    # Cols: obs col 0 = [0, 40/21) -> overlap 40/21; obs col 1 = [40/21, 80/21) -> 3 - 40/21
    # = 23/21. Coverage (0,0) = 2 * 40/21 / (100/21) = 0.8; (0,1) = 2 * 23/21 / (100/21) = 0.46.
    cov = M.boxes_to_obs_coverage([(-5, -3, 8, 5)])
    assert cov[0, 0] == pytest.approx(0.8, abs=1e-12)
    assert cov[0, 1] == pytest.approx(0.46, abs=1e-12)
    assert np.count_nonzero(cov) == 2


def test_box_partly_off_the_bottom_right() -> None:
    # (x=158, y=205, w=10, h=10) clips to columns [158, 160), rows [205, 210).
    # Obs col 83 = [3320/21, 160) = [158 + 2/21, 160): fully covered; obs col 82 ends at
    # 158 + 2/21, so it gets 2/21 of its 40/21 width = 0.05. Obs rows 82 = [205, 207.5) and
    # 83 = [207.5, 210): fully covered.
    cov = M.boxes_to_obs_coverage([(158, 205, 10, 10)])
    assert cov[82, 83] == 1.0 and cov[83, 83] == 1.0
    assert cov[82, 82] == pytest.approx(0.05, abs=1e-12)
    assert cov[83, 82] == pytest.approx(0.05, abs=1e-12)
    assert np.count_nonzero(cov) == 4


def test_off_screen_and_zero_area_boxes_contribute_nothing() -> None:
    boxes = [(200, 0, 5, 5), (10, 10, 0, 5), (10, 10, 5, 0), (-20, 50, 10, 10), (10, 10, -3, 4)]
    assert not M.boxes_to_obs_coverage(boxes).any()
    assert not M.boxes_to_obs_coverage([]).any()
    # A zero-area box next to a real one changes nothing.
    real = M.boxes_to_obs_coverage([(20, 50, 10, 10)])
    np.testing.assert_array_equal(M.boxes_to_obs_coverage([(20, 50, 10, 10), (25, 55, 0, 0)]), real)


def test_box_spanning_several_pixels() -> None:
    # (x=20, y=50, w=10, h=10): rows [50, 60) = obs rows 20..23 exactly (4 x 2.5).
    # Cols [20, 30): obs col 10 = [400/21, 440/21) = [19.048, 20.952) -> overlap
    # 440/21 - 20 = 20/21, i.e. (20/21) / (40/21) = 0.5; cols 11..14 full;
    # obs col 15 = [600/21, 640/21) = [28.571, 30.476) -> overlap 30 - 600/21 = 30/21 -> 0.75.
    cov = M.boxes_to_obs_coverage([(20, 50, 10, 10)])
    expected = np.zeros((84, 84))
    expected[20:24, 10] = 0.5
    expected[20:24, 11:15] = 1.0
    expected[20:24, 15] = 0.75
    np.testing.assert_allclose(cov, expected, atol=1e-12)
    # Covered screen area is conserved: 4 rows * 5.25 pixels * 100/21 = 100 = w * h.
    assert cov.sum() * 100 / 21 == pytest.approx(100.0)


def test_overlapping_boxes_count_as_a_union() -> None:
    # A = cols [0, 4), B = cols [2, 6), both rows [0, 5) -> union cols [0, 6), rows [0, 5) =
    # obs rows 0, 1 fully. Obs cols 0, 1, 2 (edges 0, 1.905, 3.810, 5.714) are full;
    # col 3 = [120/21, 160/21) gets 6 - 120/21 = 6/21 of 40/21 = 0.15. A sum would give 2 on
    # the overlap; the union never exceeds 1.
    cov = M.boxes_to_obs_coverage([(0, 0, 4, 5), (2, 0, 4, 5)])
    expected = np.zeros((84, 84))
    expected[0:2, 0:3] = 1.0
    expected[0:2, 3] = 0.15
    np.testing.assert_allclose(cov, expected, atol=1e-12)
    assert cov.max() == 1.0
    # The same box twice is the box once.
    np.testing.assert_array_equal(
        M.boxes_to_obs_coverage([(20, 50, 10, 10)] * 3), M.boxes_to_obs_coverage([(20, 50, 10, 10)])
    )


def test_float_boxes() -> None:
    # (x=0.5, y=1.25, w=1, h=1): cols [0.5, 1.5) inside obs col 0, rows [1.25, 2.25) inside obs
    # row 0 -> coverage 1 / (100/21) = 0.21.
    cov = M.boxes_to_obs_coverage(np.array([[0.5, 1.25, 1.0, 1.0]]))
    assert cov[0, 0] == pytest.approx(0.21, abs=1e-12)
    assert np.count_nonzero(cov) == 1


def test_coverage_matches_cv2_inter_area() -> None:
    # Independent check of the geometry: rasterise the union on the screen and let OpenCV's
    # INTER_AREA (what AtariEvalEnv._observe uses) average it.
    rng = np.random.default_rng(0)
    boxes = []
    for _ in range(12):
        x, y = int(rng.integers(-10, 160)), int(rng.integers(-10, 210))
        boxes.append((x, y, int(rng.integers(1, 30)), int(rng.integers(1, 30))))
    screen = np.zeros((210, 160), dtype=np.float32)
    for x, y, w, h in boxes:
        screen[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)] = 1.0
    ref = cv2.resize(screen, (84, 84), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(M.boxes_to_obs_coverage(boxes), ref, atol=1e-5)


def test_bad_boxes_raise() -> None:
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        M.boxes_to_obs_coverage([(1, 2, 3)])
    with pytest.raises(ValueError, match="NaN"):
        M.boxes_to_obs_coverage([(1, 2, float("nan"), 3)])


# ------------------------------------------------------------------ coverage -> cells


def test_cell_coverage_on_the_ife_grid() -> None:
    # Box of test_box_spanning_several_pixels: obs rows 20..23, cols 10 (0.5), 11..14 (1),
    # 15 (0.75). IFE cell (3, 1) = rows [18, 24) x cols [6, 12): 4 rows * (0.5 + 1) = 6 -> 6/36.
    # Cell (3, 2) = rows [18, 24) x cols [12, 18): 4 * (1 + 1 + 1 + 0.75) = 15 -> 15/36.
    cells = M.coverage_to_cells(M.boxes_to_obs_coverage([(20, 50, 10, 10)]), IFE_WIN)
    assert cells.shape == (14, 14)
    assert cells[3, 1] == pytest.approx(1 / 6)
    assert cells[3, 2] == pytest.approx(15 / 36)
    assert np.count_nonzero(cells) == 2
    in_box = M.cells_in_box(cells)
    assert in_box.sum() == 2 and in_box[3, 1] and in_box[3, 2]
    # A threshold of 0.2 keeps only the cell covered more than 20 % (15/36 = 0.417).
    assert M.cells_in_box(cells, threshold=0.2).sum() == 1


def test_cell_coverage_on_the_overlapping_cnn_grid() -> None:
    # Window of CNN cell (r, c) = rows [4r, 4r + 28) x cols [4c, 4c + 28), area 784.
    # Cell (0, 0) contains the whole box (sum 4 * 5.25 = 21) -> 21/784; so does (5, 0)
    # (rows [20, 48)). Cell (0, 3) = cols [12, 40): 4 * 3.75 = 15 -> 15/784.
    # Cells touching the box: rows r with 4r <= 23 and 4r + 28 > 20 -> r = 0..5;
    # cols c with 4c <= 15 -> c = 0..3: 6 * 4 = 24 cells out of 225.
    cells = M.coverage_to_cells(M.boxes_to_obs_coverage([(20, 50, 10, 10)]), CNN_WIN)
    assert cells.shape == (15, 15)
    assert cells[0, 0] == pytest.approx(21 / 784)
    assert cells[5, 0] == pytest.approx(21 / 784)
    assert cells[0, 3] == pytest.approx(15 / 784)
    in_box = M.cells_in_box(cells)
    assert in_box.sum() == 24
    assert in_box[:6, :4].all()
    # Uniform mask over cells: lift in cell units is exactly 1 (mass 24/225 / area 24/225).
    uniform = np.full((15, 15), 1 / 225)
    assert M.lift(uniform, in_box) == pytest.approx(1.0)


def test_hard_coded_windows_match_the_extractors() -> None:
    from ife_platform import build_extractor

    ife = build_extractor("ife")
    cnn = build_extractor("cnn_attention")
    np.testing.assert_array_equal(ife.cell_input_windows().numpy(), IFE_WIN)
    np.testing.assert_array_equal(cnn.cell_input_windows().numpy(), CNN_WIN)


def test_bad_windows_raise() -> None:
    cov = np.zeros((84, 84))
    with pytest.raises(ValueError, match="rows, cols, 4"):
        M.coverage_to_cells(cov, np.zeros((14, 14, 3), dtype=int))
    bad = IFE_WIN.copy()
    bad[13, 13, 1] = 90
    with pytest.raises(ValueError, match="outside"):
        M.coverage_to_cells(cov, bad)
    bad = IFE_WIN.copy()
    bad[0, 0, 1] = 0
    with pytest.raises(ValueError, match="non-empty"):
        M.coverage_to_cells(cov, bad)


# ------------------------------------------------------------------ upsampling


def test_upsample_tiling_grid() -> None:
    # 2 x 2 cells of 2 x 2 pixels on a 4 x 4 observation: pixel = cell value / 4.
    mask = np.array([[0.4, 0.1], [0.2, 0.3]])
    px = M.upsample_mask(mask, _grid_windows(2, 2, 2, 4), obs_hw=(4, 4))
    expected = np.array(
        [
            [0.1, 0.1, 0.025, 0.025],
            [0.1, 0.1, 0.025, 0.025],
            [0.05, 0.05, 0.075, 0.075],
            [0.05, 0.05, 0.075, 0.075],
        ]
    )
    np.testing.assert_allclose(px, expected, atol=1e-15)
    assert px.sum() == pytest.approx(1.0)


def test_upsample_overlapping_grid() -> None:
    # 2 x 2 cells with 3 x 3 windows, jump 1, on 4 x 4: cell (0,0) = rows/cols [0, 3), cell
    # (1,1) = [1, 4). Pixel (0,0) is only in cell (0,0): 0.4/9; (0,3) only in (0,1): 0.1/9;
    # (1,0) in (0,0) and (1,0): 0.6/9; (1,1) in all four: 1/9; (3,3) only in (1,1): 0.3/9.
    mask = np.array([[0.4, 0.1], [0.2, 0.3]])
    px = M.upsample_mask(mask, _grid_windows(2, 3, 1, 4), obs_hw=(4, 4))
    assert px[0, 0] == pytest.approx(0.4 / 9)
    assert px[0, 3] == pytest.approx(0.1 / 9)
    assert px[1, 0] == pytest.approx(0.6 / 9)
    assert px[1, 1] == pytest.approx(1 / 9)
    assert px[3, 3] == pytest.approx(0.3 / 9)
    assert px.sum() == pytest.approx(1.0)


def test_upsample_cnn_grid_uniform_mask() -> None:
    # Uniform 1/225 over the 15 x 15 CNN grid. Pixel (0, 0) is in window (0, 0) only:
    # 1/225/784. Pixel (40, 40): rows r with 4r <= 40 < 4r + 28 -> r = 4..10 (7 rows), same for
    # cols: 49 windows -> 49/225/784. Total mass stays 1.
    px = M.upsample_mask(np.full((15, 15), 1 / 225), CNN_WIN)
    assert px[0, 0] == pytest.approx(1 / 225 / 784)
    assert px[40, 40] == pytest.approx(49 / 225 / 784)
    assert px.sum() == pytest.approx(1.0)


def test_upsample_ife_grid_gives_exact_ties_and_checks_inputs() -> None:
    mask = np.full((14, 14), 0.5 / 195)
    mask[1, 4] = 0.5
    px = M.upsample_mask(mask, IFE_WIN)
    assert px[6:12, 24:30].min() == px[6:12, 24:30].max() == 0.5 / 36
    assert np.unique(px).size == 2
    with pytest.raises(ValueError, match="sum to 1"):
        M.upsample_mask(mask * 2, IFE_WIN)
    with pytest.raises(ValueError, match="does not match"):
        M.upsample_mask(np.full((15, 15), 1 / 225), IFE_WIN)


# ------------------------------------------------------------------ pointing game


def test_pointing_game_with_tolerance() -> None:
    # Argmax at (0, 0), B = {(2, 2)}: Chebyshev distance 2 -> miss at tolerance 0 and 1,
    # hit at tolerance 2.
    mask = np.array([[0.5, 0.1, 0.1], [0.1, 0.05, 0.05], [0.05, 0.03, 0.02]])
    in_box = np.zeros((3, 3), dtype=bool)
    in_box[2, 2] = True
    assert M.pointing_game(mask, in_box) == 0.0
    assert M.pointing_game(mask, in_box, tolerance=1) == 0.0
    assert M.pointing_game(mask, in_box, tolerance=2) == 1.0
    # Argmax (0, 0) inside B -> hit.
    assert M.pointing_game(mask, np.eye(3, dtype=bool)) == 1.0
    # Chance: 1 of 9 cells hits at tolerance 0; (2,2) dilated by 1 covers 4 of 9 cells.
    assert M.chance_pointing(in_box) == pytest.approx(1 / 9)
    assert M.chance_pointing(in_box, 1) == pytest.approx(4 / 9)


def test_pointing_game_ties() -> None:
    # Maximum 0.4 shared by (0, 0) and (1, 1); B = {(1, 1)}. "expected": 1 of the 2 tied cells
    # hits -> 0.5; "any" -> 1.0. A uniform mask scores the chance level |B| / n = 1/4.
    mask = np.array([[0.4, 0.1], [0.1, 0.4]])
    in_box = np.array([[False, False], [False, True]])
    assert M.pointing_game(mask, in_box) == 0.5
    assert M.pointing_game(mask, in_box, ties="any") == 1.0
    assert M.pointing_game(np.full((2, 2), 0.25), in_box) == 0.25
    with pytest.raises(ValueError, match="empty box set"):
        M.pointing_game(mask, np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="ties"):
        M.pointing_game(mask, in_box, ties="first")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        M.pointing_game(mask, np.ones((3, 3), dtype=bool))


# ------------------------------------------------------------------ mass, lift


def test_mass_in_box_and_lift() -> None:
    # B = {(0, 0)}: mass 0.4, area 1/4 -> lift 1.6.
    mask = np.array([[0.4, 0.1], [0.2, 0.3]])
    in_box = np.array([[True, False], [False, False]])
    assert M.mass_in_box(mask, in_box) == pytest.approx(0.4)
    assert M.lift(mask, in_box) == pytest.approx(1.6)
    # Soft weights: 0.4 * 1 + 0.1 * 0.5 = 0.45; area (1 + 0.5) / 4 = 0.375 -> lift 1.2.
    weights = np.array([[1.0, 0.5], [0.0, 0.0]])
    assert M.mass_in_box(mask, weights) == pytest.approx(0.45)
    assert M.lift(mask, weights) == pytest.approx(1.2)
    # A uniform mask has lift exactly 1 for any non-empty B.
    uniform = np.full((14, 14), 1 / 196)
    b = np.zeros((14, 14), dtype=bool)
    b[3:7, 2:9] = True
    assert M.lift(uniform, b) == pytest.approx(1.0)
    # Empty B: mass 0, lift undefined.
    empty = np.zeros((2, 2), dtype=bool)
    assert M.mass_in_box(mask, empty) == 0.0
    assert math.isnan(M.lift(mask, empty))


def test_mask_validation() -> None:
    in_box = np.array([[True, False], [False, False]])
    with pytest.raises(ValueError, match="sum to 1"):
        M.mass_in_box(np.full((2, 2), 0.5), in_box)
    with pytest.raises(ValueError, match="negative"):
        M.mass_in_box(np.array([[1.2, -0.2], [0.0, 0.0]]), in_box)
    with pytest.raises(ValueError, match="2-D"):
        M.mass_in_box(np.full(4, 0.25), in_box)
    with pytest.raises(ValueError, match="shape"):
        M.lift(np.full((2, 2), 0.25), np.ones((3, 3), dtype=bool))


# ------------------------------------------------------------------ AUROC, ranks


def test_auroc_hand_values() -> None:
    # Positives {0.35, 0.8}, negatives {0.1, 0.4}: pairs won 0.35>0.1, 0.8>0.1, 0.8>0.4;
    # lost 0.35<0.4 -> 3/4.
    assert M.pixel_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # Ties: positives {1, 2}, negatives {1, 0}: (1 vs 1) = 0.5, the other three pairs won
    # -> 3.5 / 4 = 0.875.
    assert M.pixel_auroc([1, 1, 2, 0], [True, False, True, False]) == pytest.approx(0.875)
    # Perfect / inverse / all tied.
    assert M.pixel_auroc([[3, 4], [1, 2]], [[True, True], [False, False]]) == 1.0
    assert M.pixel_auroc([[1, 2], [3, 4]], [[True, True], [False, False]]) == 0.0
    assert M.pixel_auroc(np.ones((2, 2)), [[True, False], [False, False]]) == 0.5
    # Undefined without positives or without negatives.
    assert math.isnan(M.pixel_auroc([1, 2, 3], [False, False, False]))
    assert math.isnan(M.pixel_auroc([1, 2, 3], [True, True, True]))


def test_average_ranks_and_spearman() -> None:
    np.testing.assert_array_equal(M.average_ranks([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    # a = [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4], b ranks [1, 2, 3, 4], both mean 2.5.
    # Deviations a: [-1.5, 0, 0, 1.5], b: [-1.5, -0.5, 0.5, 1.5]; cov = 4.5, var_a = 4.5,
    # var_b = 5 -> rho = 4.5 / sqrt(22.5) = sqrt(0.9).
    assert M.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))
    assert M.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert M.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert M.spearman(np.array([[1, 5], [2, 9]]), [1, 100, 2, 1000]) == pytest.approx(1.0)
    assert math.isnan(M.spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="elements"):
        M.spearman([1, 2], [1, 2, 3])


# ------------------------------------------------------------------ per-category


def test_category_recall_and_mass() -> None:
    # Mask (2 x 3, distinct values); top 2 cells = (0, 0) and (0, 1).
    mask = np.array([[0.3, 0.25, 0.2], [0.15, 0.07, 0.03]])
    player = np.array([[True, False, False], [True, False, False]])  # (0,0) in top, (1,0) not
    ball = np.array([[False, False, False], [False, True, False]])  # not in top
    absent = np.zeros((2, 3), dtype=bool)
    cats = {"player": player, "ball": ball, "enemy": absent}
    rec = M.category_recall(mask, cats, top_k=2)
    assert rec["player"] == pytest.approx(0.5)
    assert rec["ball"] == 0.0
    assert math.isnan(rec["enemy"])
    mass = M.category_mass(mask, cats)
    assert mass["player"] == pytest.approx(0.45)
    assert mass["ball"] == pytest.approx(0.07)
    assert math.isnan(mass["enemy"])
    # Ties share the top slots: uniform 2 x 2, k = 1 -> every cell weight 1/4, so a 2-cell
    # category has recall (1/4 + 1/4) / 2 = 1/4 = k / n (chance).
    uni = M.category_recall(np.full((2, 2), 0.25), {"p": np.eye(2, dtype=bool)}, top_k=1)
    assert uni["p"] == pytest.approx(0.25)
    # Partial tie at the boundary: values [0.4, 0.2, 0.2, 0.2], k = 2 -> weights
    # [1, 1/3, 1/3, 1/3] (sum 2).
    np.testing.assert_allclose(M.top_k_weights([0.4, 0.2, 0.2, 0.2], 2), [1, 1 / 3, 1 / 3, 1 / 3])
    with pytest.raises(ValueError, match="top_k"):
        M.category_recall(mask, cats, top_k=7)


# ------------------------------------------------------------------ one frame, all metrics


def _peaked_ife_mask() -> np.ndarray:
    mask = np.full((14, 14), 0.5 / 195)
    mask[1, 4] = 0.5
    return mask


def test_alignment_metrics_ife_frame_by_hand() -> None:
    # Player box (x=40, y=15, w=40, h=15) maps exactly onto obs rows [6, 12), cols [21, 42)
    # (15 / 2.5 = 6, 30 / 2.5 = 12; 40 / (40/21) = 21, 80 / (40/21) = 42): 126 pixels.
    # IFE cells: row 1 ([6, 12)); cols [21, 42) = half of cell 3 ([18, 24)), cells 4, 5, 6 full.
    # Ball box (x=120, y=150, w=40, h=15) -> obs rows [60, 66), cols [63, 84): 126 pixels in
    # cells (10, 10) (half), (10, 11..13). The ball is not "relevant": it is not part of B.
    # Mask: 0.5 on cell (1, 4), 0.5/195 on every other cell; pixel values 0.5/36 on the 36
    # pixels of cell (1, 4), lo = 0.5/195/36 on the other 7020 pixels.
    boxes = [
        SimpleNamespace(category="player", x=40, y=15, w=40, h=15),
        ("ball", 120, 150, 40, 15),
    ]
    out = M.alignment_metrics(
        _peaked_ife_mask(), IFE_WIN, boxes, ["player", "ball", "enemy"], relevant={"player"}
    )
    assert out["n_boxes"] == 1.0
    # Cell level: argmax (1, 4) in B = 4 cells of 196.
    assert out["pointing"] == 1.0
    assert out["chance_pointing"] == pytest.approx(4 / 196)
    # Pixel level: the 36 tied maximal pixels all lie in B -> 1.0; chance 126/7056 = 1/56.
    assert out["pointing_px"] == 1.0
    assert out["chance_pointing_px"] == pytest.approx(1 / 56)
    # Pixel mass on B: cell (1,4) 0.5 + cells (1,5), (1,6) 2 * 0.5/195 + half of (1,3)
    # 0.5 * 0.5/195 = 0.5 + 1.25/195; lift = mass / (1/56).
    mass_px = 0.5 + 1.25 / 195
    assert out["mass_in_box"] == pytest.approx(mass_px)
    assert out["chance_mass"] == pytest.approx(1 / 56)
    assert out["lift"] == pytest.approx(mass_px * 56)
    # Cell mass on the 4 cells: 0.5 + 3 * 0.5/195; chance 4/196; lift = mass * 49.
    mass_cells = 0.5 + 1.5 / 195
    assert out["mass_in_box_cells"] == pytest.approx(mass_cells)
    assert out["chance_mass_cells"] == pytest.approx(4 / 196)
    assert out["lift_cells"] == pytest.approx(mass_cells * 49)
    # Pixel AUROC: 36 positives above all 6930 negatives, 90 positives tied with them:
    # (36 * 6930 + 90 * 6930 / 2) / (126 * 6930) = 81/126 = 9/14.
    assert out["auroc"] == pytest.approx(9 / 14)
    # Cell AUROC: 1 positive above 192 negatives, 3 tied: (192 + 3 * 96) / (4 * 192) = 0.625.
    assert out["auroc_cells"] == pytest.approx(0.625)
    # Recall: k = round(0.1 * 7056) = 706 top pixels = the 36 high ones + 670 slots shared by
    # the 7020 tied low pixels (weight 670/7020 each).
    w_lo = 670 / 7020
    assert out["recall/player"] == pytest.approx((36 + 90 * w_lo) / 126)
    assert out["recall/ball"] == pytest.approx(w_lo)
    assert math.isnan(out["recall/enemy"])
    # Category mass: player = mass_px; ball = 126 low pixels = 3.5 cells * 0.5/195.
    assert out["mass/player"] == pytest.approx(mass_px)
    assert out["mass/ball"] == pytest.approx(1.75 / 195)
    assert out["lift/ball"] == pytest.approx(1.75 / 195 * 56)
    assert math.isnan(out["mass/enemy"]) and math.isnan(out["lift/enemy"])


def test_alignment_metrics_uniform_mask_is_at_chance() -> None:
    # Uniform mask on the tiling grid: uniform on pixels too, so every measure equals its
    # chance level: lift 1, pointing = chance, AUROC 0.5 (all scores tied).
    boxes = [("player", 40, 15, 40, 15), ("ball", 20, 50, 10, 10)]
    out = M.alignment_metrics(np.full((14, 14), 1 / 196), IFE_WIN, boxes)
    assert out["n_boxes"] == 2.0
    assert out["lift"] == pytest.approx(1.0)
    assert out["lift_cells"] == pytest.approx(1.0)
    assert out["pointing"] == pytest.approx(out["chance_pointing"])
    assert out["pointing_px"] == pytest.approx(out["chance_pointing_px"])
    # B in pixels: player 126 + ball 4 * 6 = 24 (cols 10..15 touched) = 150 of 7056.
    assert out["chance_mass"] == pytest.approx(150 / 7056)
    # B in cells: 4 (player) + 2 (ball: (3, 1), (3, 2)) = 6 of 196.
    assert out["chance_pointing"] == pytest.approx(6 / 196)
    assert out["auroc"] == 0.5 and out["auroc_cells"] == 0.5
    assert out["recall/player"] == pytest.approx(706 / 7056)
    assert sorted(k for k in out if "/" in k) == [
        "lift/ball",
        "lift/player",
        "mass/ball",
        "mass/player",
        "recall/ball",
        "recall/player",
    ]


def test_alignment_metrics_cnn_grid_with_tolerance() -> None:
    # Mask peaked on CNN cell (14, 14) (window rows/cols [56, 84)); ball at obs rows 20..23,
    # cols 10..15 touches cells r = 0..5, c = 0..3 (24 cells). Chebyshev distance from
    # (14, 14) to the nearest B cell (5, 3) is max(9, 11) = 11: miss at tolerance 10, hit at 11.
    mask = np.full((15, 15), 0.5 / 224)
    mask[14, 14] = 0.5
    boxes = [("ball", 20, 50, 10, 10)]
    out10 = M.alignment_metrics(mask, CNN_WIN, boxes, tolerance_cells=10)
    out11 = M.alignment_metrics(mask, CNN_WIN, boxes, tolerance_cells=11)
    assert out10["pointing"] == 0.0 and out11["pointing"] == 1.0
    # Chance: B rows 0..5 / cols 0..3 dilated by 10 -> rows 0..14 (15), cols 0..13 (14) = 210
    # of 225 cells; by 11 -> the whole grid.
    assert out10["chance_pointing"] == pytest.approx(210 / 225)
    assert out11["chance_pointing"] == 1.0
    # At tolerance 0 the B cells are 24 of 225; the cell-level mass is 24 * 0.5/224.
    out0 = M.alignment_metrics(mask, CNN_WIN, boxes)
    assert out0["chance_pointing"] == pytest.approx(24 / 225)
    assert out0["mass_in_box_cells"] == pytest.approx(24 * 0.5 / 224)
    # Pixel map: B = 24 pixels; every one lies in windows of 6 * 4 = 24 low cells only (the
    # peaked cell's window starts at 56), e.g. pixel (20, 10) is in rows r = 0..5 and
    # cols c = 0..2 (4c <= 10): 18 windows. Total mass over B is checked against upsample_mask.
    px = M.upsample_mask(mask, CNN_WIN)
    assert px[20, 10] == pytest.approx(18 * 0.5 / 224 / 784)
    b_px = M.boxes_to_obs_coverage([(20, 50, 10, 10)]) > 0
    assert b_px.sum() == 24
    assert out0["mass_in_box"] == pytest.approx(px[b_px].sum())
    assert out0["chance_mass"] == pytest.approx(24 / 7056)


def test_alignment_metrics_without_objects_is_nan() -> None:
    out = M.alignment_metrics(
        _peaked_ife_mask(), IFE_WIN, [("ball", 300, 0, 4, 4)], categories=["ball"]
    )
    assert out["n_boxes"] == 0.0
    for key in (
        "pointing",
        "pointing_px",
        "mass_in_box",
        "lift",
        "auroc",
        "chance_mass",
        "lift_cells",
        "recall/ball",
        "mass/ball",
    ):
        assert math.isnan(out[key]), key
    empty = M.alignment_metrics(_peaked_ife_mask(), IFE_WIN, [])
    assert math.isnan(empty["lift"]) and not any("/" in k for k in empty)
    with pytest.raises(ValueError, match="category"):
        M.alignment_metrics(_peaked_ife_mask(), IFE_WIN, [(1, 2, 3, 4)])


# ------------------------------------------------------------------ faithfulness


def test_curve_auc() -> None:
    # [0, 0.5, 1] x [1, 0.5, 0]: 0.5 * 1.5/2 + 0.5 * 0.5/2 = 0.5.
    assert M.curve_auc([0, 0.5, 1], [1, 0.5, 0]) == pytest.approx(0.5)
    # [0, 0.25, 1] x [1, 1, 0]: 0.25 * 1 + 0.75 * 0.5 = 0.625.
    assert M.curve_auc([0, 0.25, 1], [1, 1, 0]) == pytest.approx(0.625)
    with pytest.raises(ValueError, match="non-decreasing"):
        M.curve_auc([0, 1, 0.5], [1, 1, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.curve_auc([0, 2], [1, 1])


def test_deletion_insertion_summary() -> None:
    # Fractions default to [0, 0.5, 1].
    # deletion [1, 0.2, 0]: 0.5 * 1.2/2 + 0.5 * 0.2/2 = 0.35.
    # insertion [0, 0.8, 1]: 0.5 * 0.8/2 + 0.5 * 1.8/2 = 0.65.
    # random deletion repeats [1, 0.6, 0] -> 0.55 and [1, 0.4, 0] -> 0.45: mean 0.5.
    # random insertion [0, 0.5, 1] -> 0.125 + 0.375 = 0.5.
    out = M.deletion_insertion_summary(
        [1, 0.2, 0], [0, 0.8, 1], [[1, 0.6, 0], [1, 0.4, 0]], [0, 0.5, 1]
    )
    assert out["deletion_auc"] == pytest.approx(0.35)
    assert out["insertion_auc"] == pytest.approx(0.65)
    assert out["random_deletion_auc"] == pytest.approx(0.5)
    assert out["random_insertion_auc"] == pytest.approx(0.5)
    assert out["deletion_gain"] == pytest.approx(0.15)
    assert out["insertion_gain"] == pytest.approx(0.15)
    assert out["insertion_minus_deletion"] == pytest.approx(0.3)


def test_randomisation_sanity() -> None:
    trained = np.array([[[0.4, 0.3], [0.2, 0.1]]])
    # Same masks: rho 1; top_fraction 0.5 -> k = 2, both top sets {(0,0), (0,1)}: IoU 1.
    same = M.randomisation_sanity(trained, trained, top_fraction=0.5)
    assert same["spearman"] == pytest.approx(1.0) and same["top_k_iou"] == 1.0
    assert same["differs"] is False
    # Reversed: rho -1, top sets disjoint: IoU 0 -> differs.
    rev = M.randomisation_sanity(trained, trained[:, ::-1, ::-1], top_fraction=0.5)
    assert rev["spearman"] == pytest.approx(-1.0) and rev["top_k_iou"] == 0.0
    assert rev["differs"] is True
    # Frame 1 identical (rho 1, IoU 1), frame 2 random mask constant: rho undefined -> 0, top
    # set = all 4 cells (ties included) -> IoU 2/4. Means: rho 0.5 (not < 0.5), IoU 0.75.
    two = M.randomisation_sanity(
        np.concatenate([trained, trained]),
        np.concatenate([trained, np.full((1, 2, 2), 0.25)]),
        top_fraction=0.5,
    )
    assert two["spearman"] == pytest.approx(0.5)
    assert two["top_k_iou"] == pytest.approx(0.75)
    assert two["n_constant"] == 1 and two["n_frames"] == 2
    assert two["differs"] is False
    assert (
        M.randomisation_sanity(
            np.concatenate([trained, trained]),
            np.concatenate([trained, np.full((1, 2, 2), 0.25)]),
            top_fraction=0.5,
            threshold=0.6,
        )["differs"]
        is True
    )
    with pytest.raises(ValueError, match="shape"):
        M.randomisation_sanity(trained, np.zeros((2, 2, 2)))
